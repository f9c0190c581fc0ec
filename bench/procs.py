"""Child processes of the benchmark: started with a log file, stopped by their own PID, measured from /proc.

Owns: the `Proc` wrapper (SIGTERM, then SIGKILL), CPU seconds of a process and of its direct children
(nginx's workers), resident memory (current and peak), and a sampler thread that records the largest
resident size seen while a workload runs.
Must not: signal any process it did not start, or leave one running when the benchmark ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

STOP_GRACE = 15.0
_TICKS = os.sysconf("SC_CLK_TCK")


class Proc:
    """One server process the benchmark started."""

    def __init__(self, *, name: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None):
        self.name = name
        self.argv = list(argv)
        self.log = log
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise RuntimeError(f"{self.name} exited {self.popen.returncode}:\n{tail(self.log)}")

    def stop(self) -> None:
        if not self.alive():
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=STOP_GRACE)

    def cpu_seconds(self) -> float:
        """User + system CPU of this process and its live direct children (nginx workers)."""
        return sum(_cpu_of(pid) for pid in (self.pid, *children(self.pid)))

    def rss_bytes(self) -> int:
        """Resident memory of this process and its direct children, now."""
        return sum(_status_kib(pid, "VmRSS:") * 1024 for pid in (self.pid, *children(self.pid)))

    def peak_rss_bytes(self) -> int:
        """Peak resident memory of this process alone since it started (VmHWM)."""
        return _status_kib(self.pid, "VmHWM:") * 1024


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def children(pid: int) -> list[int]:
    """PIDs whose parent is `pid` (read from /proc/<pid>/task/*/children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def _cpu_of(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name may contain spaces and parentheses: fields count from after its closing ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Polls a process's resident size on a thread; `peak` is the largest value seen (bytes)."""

    def __init__(self, proc: Proc, *, interval: float = 0.05) -> None:
        self.proc = proc
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _status_kib(self.proc.pid, "VmRSS:") * 1024)
            self._stop.wait(self.interval)

    @contextlib.contextmanager
    def running(self) -> Iterator[RssSampler]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()
