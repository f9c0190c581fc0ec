"""Storage health: is the data directory writable, and how full is its filesystem.

Owns: the storage check behind readiness (`/readyz`) and behind refusing pushes while storage cannot take
them, and the capacity figures (total, used, free bytes) the metrics and an operator read. Must not: run
on the request path: a check writes and fsyncs a probe file, which on slow or hung storage may take
long, so it runs in a worker thread every `interval` and requests read the last result. Liveness
(`/healthz`) never looks at storage at all: a slow disk is a reason to stop sending traffic, not to
restart the process.

A check that has not finished for 3 intervals counts as failed ("storage check stuck"): hung storage
makes the registry unready even though no check ever returns. Not ready means: storage not writable
(read-only remount, permissions, a full disk that refuses the probe) -> pushes answer 503 with
Retry-After; the filesystem above `max_fill` percent -> pushes answer 507. Either way the push is
refused before a byte is stored, pulls and deletes go on (a delete and a gc run are how space comes
back).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)
PROBE = Path("status") / ".write-probe"  # under the data directory; one per process and thread
DEFAULT_INTERVAL = 10.0
_STUCK_INTERVALS = 3


class Problem(enum.Enum):
    NONE = "none"
    UNCHECKED = "unchecked"  # before the first check: not ready, but pushes are not refused on a guess
    NOT_WRITABLE = "not-writable"
    FULL = "full"  # above the fill threshold, or out of space
    STUCK = "stuck"  # no check finished for a while


@dataclasses.dataclass(frozen=True)
class State:
    problem: Problem
    message: str
    checked: float  # when the check finished (clock), 0 before the first
    total: int | None = None  # bytes of the filesystem
    free: int | None = None  # bytes available to the registry's user

    @property
    def ready(self) -> bool:
        return self.problem is Problem.NONE

    @property
    def refuses_pushes(self) -> bool:
        return self.problem in (Problem.NOT_WRITABLE, Problem.FULL, Problem.STUCK)

    @property
    def used(self) -> int | None:
        return None if self.total is None or self.free is None else self.total - self.free


def check(root: Path, *, max_fill: float) -> State:
    """One check, blocking: statvfs, then write, fsync and remove a probe file."""
    now = time.time()
    try:
        fs = os.statvfs(root)
    except OSError as exc:
        return State(Problem.NOT_WRITABLE, f"cannot stat storage: {exc.strerror or exc}", now)
    total, free = fs.f_blocks * fs.f_frsize, fs.f_bavail * fs.f_frsize
    # Never shared: two checks at once (a refresh racing the periodic one) must not unlink each other's.
    probe = root / f"{PROBE}-{os.getpid()}-{threading.get_ident()}"
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return State(Problem.FULL, "registry storage is full", now, total, free)
        return State(Problem.NOT_WRITABLE, f"storage not writable: {exc.strerror or exc}", now, total, free)
    fill = 100.0 * (total - free) / total if total else 0.0
    if fill > max_fill:
        return State(
            Problem.FULL,
            f"registry storage is {fill:.1f}% full, above the {max_fill:g}% threshold",
            now,
            total,
            free,
        )
    return State(Problem.NONE, "ok", now, total, free)


class StorageMonitor:
    """Checks storage every `interval` seconds in a worker thread; `state` is the latest verdict."""

    def __init__(
        self,
        root: Path,
        *,
        max_fill: float = 100.0,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self.max_fill = max_fill
        self.interval = interval
        self._clock = clock
        self._state = State(Problem.UNCHECKED, "storage not checked yet", 0.0)
        self._started: float | None = None  # when the running check began

    @property
    def state(self) -> State:
        started = self._started
        if started is not None and self._clock() - started > _STUCK_INTERVALS * self.interval:
            waited = self._clock() - started
            return dataclasses.replace(
                self._state, problem=Problem.STUCK, message=f"storage check stuck for {waited:.0f}s"
            )
        return self._state

    def refresh(self) -> State:
        """One check, blocking (call it in a worker thread)."""
        self._started = self._clock()
        try:
            state = check(self.root, max_fill=self.max_fill)
        finally:
            self._started = None
        if state.problem is not self._state.problem:
            level = logging.INFO if state.ready else logging.WARNING
            log.log(level, "storage: %s", state.message)
        self._state = state
        return state

    async def run_forever(self) -> None:
        while True:
            await asyncio.to_thread(self.refresh)
            await asyncio.sleep(self.interval)
