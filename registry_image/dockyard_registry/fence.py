"""The gc fence: how gc in one process and pushes in others agree through storage alone (issue 14).

Owns: the run markers and per-item tombstones a gc writes into the store (`gc/runs/<run>/...`, see
paths.py), and the check a push makes after its own writes. Must not: know digests, manifests or HTTP;
items are the storage paths of what gc deletes (a blob's directory, a revision link, a tag link).

Why: inside one process `store.GcLock` makes gc's "still old and unreferenced?" re-check and its deletion
one step against every push. Replicas on one bucket share no lock, and the protocol must not need
conditional writes: S3-compatible servers differ there (AWS has If-None-Match/If-Match on PutObject
since 2024, gofakes3 v1.2.0 accepts them, many others do not), and the filesystem driver has none. Nor
would they close the race: a push cannot make its claim conditional on gc not deleting meanwhile. What
every backend does give is read-after-write consistency: a read that starts after a write completed
sees it.

The protocol. A push *writes* before it *reads*, and so does gc:
- A push first writes what makes content recent for gc (a blob's `pushed` claim, a rewritten revision
  link, a tag), then `settle`s: it reads whether a gc run is live and, if one is, whether that run holds
  a tombstone on anything the push relies on. While a tombstone is there, it waits (the run resolves an
  item in a few requests); then it re-reads what it relies on (`settle` returned True) and refuses cleanly
  (MANIFEST_BLOB_UNKNOWN, BLOB_UPLOAD_UNKNOWN) or rewrites its own links if gc removed them meanwhile.
- gc writes its run marker (`lease`), waits `ready_delay` (longer than any replica caches "no gc"), and
  then, per item: writes a tombstone, re-checks that the item is still old and unreferenced, deletes it,
  removes the tombstone.
So for every item either gc's re-check sees the push's write (and keeps it), or the push's read, which
started after its write and so after gc's re-check, which came after the tombstone, finds the tombstone
or what gc left once done; it never relies on something about to vanish.

The bound (what makes it cheap): a replica caches "no run is live" for `cache` seconds, measured from
before its read started, and uses it only for an operation that began after that read; gc waits longer
than that before its first tombstone. A cached answer older than `cache` at the end of an operation is
re-read. Timing enters in two places only, each on one process's monotonic clock: that wait, and a
tombstone's lease (`item_lease`): gc deletes an item only if less than half the lease passed since it
started writing the tombstone, and a push waits at most the lease for a tombstone to go (a gc that died
mid-item leaves it behind). A gc process paused for longer than half the lease between that check and
its DELETE reaching storage is the one case this cannot cover.

Several runs may overlap (replicas with the same schedule): tombstones are per run and a push checks
every live run. A run skips itself when another fresh run is live (only to save work). A run's marker is
rewritten every `heartbeat` seconds; a marker not rewritten for `stale` seconds (compared on storage's
own clock, the marker times) belongs to a dead run, and the next run removes it with its tombstones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator

from dockyard_registry import paths
from dockyard_registry.storage import base

DEFAULT_CACHE = 2.0  # seconds a replica trusts "no gc run is live"
DEFAULT_ITEM_LEASE = 30.0  # seconds a tombstone holds a push back at most
HEARTBEAT = 60.0
STALE = 600.0
_POLL = 0.05


@dataclasses.dataclass(frozen=True)
class View:
    """The live runs as read at `read_at` (monotonic, taken before the read started)."""

    runs: tuple[str, ...]
    read_at: float


class GcFence:
    """One process's side of the protocol over one store's driver (see the module docstring)."""

    def __init__(
        self,
        driver: base.Driver,
        *,
        cache: float | None = None,
        item_lease: float = DEFAULT_ITEM_LEASE,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.driver = driver
        self.cache = DEFAULT_CACHE if cache is None else cache
        self.item_lease = item_lease
        self.clock = clock
        self.sleep = sleep
        self._view: View | None = None
        self._lock = threading.Lock()
        # Test hook: called with the tombstone's path whenever a push starts waiting on one.
        self.on_wait: Callable[[str], None] = lambda _path: None

    @property
    def ready_delay(self) -> float:
        """How long a run waits after writing its marker before its first tombstone (the replicas' cache,
        with room for their clocks running at another rate and the read in flight)."""
        return self.cache * 1.25 + 0.5 if self.cache > 0 else 0.0

    # ------------------------------------------------------------------------------------- push side
    def view(self) -> View:
        """The live runs, from a read at most `cache` old (re-read when older). Call it when an
        operation starts, before its first read of what it relies on."""
        with self._lock:
            cached = self._view
        if cached is not None and self.clock() - cached.read_at <= self.cache:
            return cached
        return self._refresh()

    def _refresh(self) -> View:
        started = self.clock()
        fresh = View(runs=tuple(self.driver.list(paths.GC_RUNS)), read_at=started)
        with self._lock:
            if self._view is None or self._view.read_at <= started:
                self._view = fresh
        return fresh

    def settle(self, view: View, items: Iterable[str]) -> bool:
        """After the operation's writes: wait out any live run's tombstone on `items`. False: no run
        can have touched them (nothing to re-check); True: the caller re-reads what it relies on."""
        if not view.runs and self.clock() - view.read_at <= self.cache:
            return False
        runs = self._refresh().runs
        wanted = list(items)
        for run in runs:
            for item in wanted:
                self._wait_out(paths.gc_tombstone(run, item))
        return True

    def _wait_out(self, tombstone: str) -> None:
        if self.driver.size(tombstone) is None:
            return
        self.on_wait(tombstone)
        deadline = self.clock() + self.item_lease
        while self.driver.size(tombstone) is not None and self.clock() < deadline:
            self.sleep(_POLL)

    # --------------------------------------------------------------------------------------- gc side
    def begin(self) -> Run:
        """Start a run: reap dead runs' markers, write ours. Deletions wait for `Run.ready`."""
        run = Run(self, uuid.uuid4().hex)
        run.write_lease()
        run.ready_at = self.clock() + self.ready_delay
        run.reap_stale()
        return run


class Run:
    """One gc run's marker and tombstones. `end()` removes them; a run killed leaves them for `stale`."""

    def __init__(self, fence: GcFence, run_id: str) -> None:
        self.fence = fence
        self.id = run_id
        self.ready_at = 0.0
        self.started = time.time()
        self._written = 0.0

    @property
    def driver(self) -> base.Driver:
        return self.fence.driver

    def write_lease(self) -> None:
        info = {"run": self.id, "host": socket.gethostname(), "pid": os.getpid(), "started": self.started}
        self.driver.put(paths.gc_lease(self.id), json.dumps(info).encode(), durability=base.Durability.NONE)
        self._written = self.fence.clock()

    def heartbeat(self) -> None:
        """Rewrite the marker when it is getting old (call it often; it writes every HEARTBEAT s)."""
        if self.fence.clock() - self._written >= HEARTBEAT:
            self.write_lease()

    def _others(self) -> list[tuple[str, float | None]]:
        return [
            (run, self.driver.mtime(paths.gc_lease(run)))
            for run in self.driver.list(paths.GC_RUNS)
            if run != self.id
        ]

    def reap_stale(self) -> list[str]:
        """Remove the markers and tombstones of runs not heard of for STALE seconds (storage's clock)."""
        now = self.driver.mtime(paths.gc_lease(self.id))
        if now is None:
            return []
        reaped = []
        for run, seen in self._others():
            # No lease at all: a run that died while ending (tombstones without marker); also dead.
            if seen is None or now - seen > STALE:
                self.driver.delete(paths.gc_run(run))
                reaped.append(run)
        return reaped

    def defer_to(self) -> str | None:
        """Another live run this one should leave the work to (replicas on one schedule), or None.

        Of the runs that see each other, the one started first (ties: the smaller id) goes on and the
        others defer; a run that saw no other goes on. Two runs may still overlap, which is safe; online
        runs look a second time once `ready_at` passed (gc.collect), so of runs started together exactly
        one goes on.
        """
        now = self.driver.mtime(paths.gc_lease(self.id))
        if now is None:
            return None
        mine = (self.started, self.id)
        for run, seen in self._others():
            if seen is None or now - seen > STALE:
                continue
            try:
                info = json.loads(self.driver.get(paths.gc_lease(run)))
                theirs = (float(info["started"]), run)
            except (FileNotFoundError, ValueError, KeyError, TypeError):
                continue
            if theirs < mine:
                return f"{run} ({info.get('host')}, pid {info.get('pid')})"
        return None

    def wait_ready(self) -> None:
        """Block until every replica's cached view is younger than our marker."""
        while (left := self.ready_at - self.fence.clock()) > 0:
            self.fence.sleep(left)

    @contextlib.contextmanager
    def deleting(self, item: str) -> Iterator[Callable[[], bool]]:
        """Hold a tombstone on `item` around its re-check and deletion. The callable says whether the
        deletion may still go ahead (less than half the item lease used); if not, keep the item."""
        self.wait_ready()
        self.heartbeat()
        clock = self.fence.clock
        started = clock()
        tombstone = paths.gc_tombstone(self.id, item)
        self.driver.put(tombstone, b"", durability=base.Durability.NONE)
        try:
            yield lambda: clock() - started < self.fence.item_lease / 2
        finally:
            self.driver.delete(tombstone, durable=False)

    def end(self) -> None:
        self.driver.delete(paths.gc_run(self.id))
