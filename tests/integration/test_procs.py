"""The shared process helpers (tests/support/procs.py): a harness failure is never taken for a product one.

Covers:
- a reserved port is handed to no other `bind(0)` and refused to anyone else's explicit bind, yet the child
  it is reserved for binds and serves on it (SO_REUSEADDR), and stopping the child releases it;
- `wait_http` returns once the child answers 200, and fails at once with the log's tail when the child exits.
"""

from __future__ import annotations

import errno
import socket
import sys
from pathlib import Path

import pytest

from tests.support import procs


def _bind(port: int, *, reuse: bool) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        if reuse:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", port))


def test_a_reserved_port_is_neither_handed_out_nor_bindable_by_anyone_else() -> None:
    port = procs.reserve_port()
    try:
        handed_out = set()
        for _ in range(2000):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as any_port:
                any_port.bind(("127.0.0.1", 0))
                handed_out.add(any_port.getsockname()[1])
        assert port.number not in handed_out
        with pytest.raises(OSError) as refused:
            _bind(port.number, reuse=False)
        assert refused.value.errno == errno.EADDRINUSE
    finally:
        port.release()
    _bind(port.number, reuse=False)  # released


def test_the_child_serves_on_its_reserved_port_and_stopping_it_releases_the_port(tmp_path: Path) -> None:
    port = procs.reserve_port()
    server = procs.Process(
        name="http.server",
        argv=[sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port.number)],
        log=tmp_path / "server.log",
        ports=[port],
    )
    try:
        procs.wait_http(f"http://127.0.0.1:{port.number}/", watch=[server], timeout=30)
        with pytest.raises(OSError) as taken:  # a listening socket excludes every other bind
            _bind(port.number, reuse=True)
        assert taken.value.errno == errno.EADDRINUSE
    finally:
        server.stop()
    _bind(port.number, reuse=True)


def test_waiting_for_a_child_that_exits_fails_at_once_with_its_log(tmp_path: Path) -> None:
    crashing = procs.Process(
        name="crashing",
        argv=[sys.executable, "-c", "import sys; print('no config file'); sys.exit(3)"],
        log=tmp_path / "crashing.log",
    )
    crashing.popen.wait(timeout=30)
    with pytest.raises(procs.ProcessError, match=r"(?s)crashing .* exited with 3.*no config file"):
        procs.wait_http("http://127.0.0.1:9/", watch=[crashing], timeout=600)
