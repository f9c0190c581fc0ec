"""Child processes of the benchmark, measured from /proc: CPU seconds and resident memory.

Starting, stopping, waiting and ports are `tests/support/procs.py`'s, shared with the tests; this module adds
what only the benchmark needs: CPU seconds of a process and of its direct children (nginx's workers),
resident memory (current and peak), and a sampler thread that records the largest resident size seen while a
workload runs.
Must not: signal any process it did not start, or leave one running when the benchmark ends.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from tests.support import procs

_TICKS = os.sysconf("SC_CLK_TCK")
STOP_GRACE = 15.0


class Proc(procs.Process):
    """One server process the benchmark started (on ports reserved for it), with its CPU and memory."""

    def stop(self, *, grace: float = STOP_GRACE) -> int:
        return super().stop(grace=grace)

    def cpu_seconds(self) -> float:
        """User + system CPU of this process and its live direct children (nginx workers)."""
        return sum(_cpu_of(pid) for pid in (self.pid, *children(self.pid)))

    def rss_bytes(self) -> int:
        """Resident memory of this process and its direct children, now."""
        return sum(_status_kib(pid, "VmRSS:") * 1024 for pid in (self.pid, *children(self.pid)))

    def peak_rss_bytes(self) -> int:
        """Peak resident memory of this process alone since it started (VmHWM)."""
        return _status_kib(self.pid, "VmHWM:") * 1024


def children(pid: int) -> list[int]:
    """PIDs whose parent is `pid` (read from /proc/<pid>/task/*/children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def cpu_seconds_of(pid: int) -> float:
    """User + system CPU of one process (0 once it is gone), e.g. one the test support started."""
    return _cpu_of(pid)


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
