"""Child processes of the tests and the benchmark: loopback ports reserved for them, starting, waiting, tails.

One place for what every harness here does (the control plane, the operator, nginx and registries under
test, the benchmark's servers):

- `reserve_port()`: a loopback port that stays ours until released. Picking a "free" port (bind to 0, close,
  hand the number to a child) races every other process on the machine between the close and the child's
  bind; instead the reservation keeps a socket bound to the port (with SO_REUSEADDR, never listening). The
  kernel then hands the port to no other `bind(0)` or outgoing connection, an explicit bind by anyone else
  fails, and the child still binds and listens on it, because every server started here (Go's net package,
  nginx, asyncio and aiohttp) sets SO_REUSEADDR on its listening sockets. Linux allows two SO_REUSEADDR
  sockets on one address as long as at most one of them listens.
- `Process`: one child with its output in a log file, killed with its parent (PR_SET_PDEATHSIG) so nothing
  outlives a killed pytest or benchmark, stopped by its own PID (SIGTERM, then SIGKILL), holding the ports
  reserved for it until it is stopped.
- `wait_http()`: readiness is an HTTP 200 from the child's own endpoint, never a line in its log.
- `tail()`: the end of a log, for failure messages.

Must not: signal a process it did not start, or know what the processes are.
"""

from __future__ import annotations

import collections.abc
import ctypes
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path

STOP_GRACE = 10.0


class ProcessError(RuntimeError):
    """A child exited early or did not become ready; the message carries its log's tail."""


class Port:
    """A TCP port on `host` (IPv4) reserved for a child process until `release()` (or until it is garbage)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind((host, 0))
        self.number = int(held.getsockname()[1])
        # Closed when released, or silently when the reservation is dropped without a release.
        self._release = weakref.finalize(self, held.close)

    def release(self) -> None:
        self._release()

    def __int__(self) -> int:
        return self.number

    def __repr__(self) -> str:
        return f"Port({self.number})"


def reserve_port(*, host: str = "127.0.0.1") -> Port:
    """A port on `host` (loopback by default) no one else gets until released (see the module docstring)."""
    return Port(host)


def tail(path: Path, *, lines: int = 40) -> str:
    """The last lines of a log file ('' when it does not exist yet)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _die_with_parent() -> None:
    # Runs in the child before exec: if the parent is killed (SIGKILL, OOM), the kernel kills the child
    # too, so nothing outlives a session even when its teardown never runs.
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Process:
    """One child process with its output in a log file, stopped by its own PID.

    `ports` are reservations the child binds; they are released when it is stopped.
    """

    def __init__(
        self,
        *,
        name: str,
        argv: collections.abc.Sequence[str],
        log: Path,
        env: collections.abc.Mapping[str, str] | None = None,
        ports: collections.abc.Sequence[Port] = (),
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.ports = list(ports)
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=None if env is None else dict(env),
                # PDEATHSIG follows the spawning *thread*: start children from the main thread.
                preexec_fn=_die_with_parent,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise ProcessError(
                f"{self.name} (pid {self.pid}) exited with {self.popen.returncode}; "
                f"last lines of {self.log}:\n{tail(self.log)}"
            )

    def stop(self, *, grace: float = STOP_GRACE) -> int:
        """SIGTERM, wait up to `grace` seconds, then SIGKILL; releases its ports; returns the exit code."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        for port in self.ports:
            port.release()
        return self.popen.returncode


def wait_http(
    url: str,
    *,
    watch: collections.abc.Sequence[Process],
    timeout: float,
    context: ssl.SSLContext | None = None,
    headers: collections.abc.Mapping[str, str] | None = None,
    interval: float = 0.2,
) -> None:
    """Wait until `url` answers 200; fail at once when a process in `watch` exits, and after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        for process in watch:
            process.check_alive()
        request = urllib.request.Request(url, headers=dict(headers or {}))  # noqa: S310  # our own URLs
        try:
            with urllib.request.urlopen(request, timeout=5, context=context) as response:  # noqa: S310
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            logs = "\n".join(f"last lines of {p.log}:\n{tail(p.log)}" for p in watch)
            raise ProcessError(f"{url} not ready after {timeout:.0f}s ({last}); {logs}")
        time.sleep(interval)
