"""Whose turn it is: passes and status refreshes of one registry never overlap, and few passes run at once.

Owns: the slots (at most `concurrent_passes` passes run at once; a pass somebody asked for, a create, an
update, a watch event, gets a free slot before the resync loop's passes, so a burst of new registries is not
queued behind the periodic passes of those already done), one lock per registry (dropped again when nobody
holds or waits for it), and the coalescing rules:
- a pass admitted but not begun (waiting for a slot, or for its registry) covers any later pass: it reads
  the registry fresh when it begins;
- the resync loop's pass is not needed while the registry has a pass running or waiting (`busy`);
- a status refresh takes no slot; it is not needed behind another waiting refresh, nor when a pass that holds
  its slot waits for the registry (both read node trust's latest view), and one whose turn comes while such a
  pass waits behind it gives way.
Must not: know what a pass or a refresh does, or call the API.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
from collections.abc import AsyncIterator

Key = tuple[str, str]


@dataclasses.dataclass
class _Queue:
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    pending: int = 0
    """Passes admitted that have not begun (waiting for a slot or for the lock)."""
    at_lock: int = 0
    """Of those, passes holding their slot, waiting for the lock."""
    refreshes: int = 0
    """Status refreshes waiting for the lock."""
    others: int = 0
    """Anything else waiting for the lock (a deletion)."""

    def idle(self) -> bool:
        return not (self.pending or self.refreshes or self.others or self.lock.locked())


class Slots:
    """At most `size` holders at once; urgent ones get a freed slot before the others (each in order)."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._urgent: collections.deque[asyncio.Future[None]] = collections.deque()
        self._later: collections.deque[asyncio.Future[None]] = collections.deque()

    @contextlib.asynccontextmanager
    async def held(self, *, urgent: bool) -> AsyncIterator[None]:
        await self._acquire(urgent=urgent)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, *, urgent: bool) -> None:
        if self._free > 0 and not self._urgent and (urgent or not self._later):
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._urgent if urgent else self._later
        queue.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a slot just as it was cancelled: pass it on
            with contextlib.suppress(ValueError):
                queue.remove(waiter)
            raise

    def _release(self) -> None:
        for queue in (self._urgent, self._later):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)  # the slot goes straight to the next holder
                    return
        self._free += 1


class Turns:
    def __init__(self, *, slots: int) -> None:
        self._slots = Slots(slots)
        self._queues: dict[Key, _Queue] = {}

    def busy(self, key: Key) -> bool:
        """Whether the registry has a pass (or a refresh, or a deletion) running or waiting."""
        queue = self._queues.get(key)
        return queue is not None and not queue.idle()

    @contextlib.asynccontextmanager
    async def pass_turn(self, key: Key, *, urgent: bool = True) -> AsyncIterator[bool]:
        """Wait for a slot, then for the registry; yields False (at once) when a pass that has not begun
        covers this one. `urgent`: somebody asked for it (not the resync loop)."""
        queue = self._queues.setdefault(key, _Queue())
        if queue.pending > 0:
            yield False
            return
        queue.pending += 1
        begun = False
        try:
            async with self._slots.held(urgent=urgent):
                queue.at_lock += 1
                try:
                    async with queue.lock:
                        queue.pending -= 1
                        queue.at_lock -= 1
                        begun = True
                        yield True
                finally:
                    if not begun:
                        queue.at_lock -= 1
        finally:
            if not begun:
                queue.pending -= 1
            self._tidy(key, queue)

    @contextlib.asynccontextmanager
    async def refresh_turn(self, key: Key) -> AsyncIterator[bool]:
        """Wait for the registry (no slot); yields False when a waiting refresh covers this one, or a pass
        holding its slot waits for the registry (now, or by the time this refresh's turn comes)."""
        queue = self._queues.setdefault(key, _Queue())
        if queue.lock.locked() and (queue.at_lock > 0 or queue.refreshes > 0):
            yield False
            return
        queue.refreshes += 1
        acquired = False
        try:
            async with queue.lock:
                queue.refreshes -= 1
                acquired = True
                yield queue.at_lock == 0
        finally:
            if not acquired:
                queue.refreshes -= 1
            self._tidy(key, queue)

    @contextlib.asynccontextmanager
    async def exclusive(self, key: Key) -> AsyncIterator[None]:
        """Wait for the registry, whatever is queued (a deletion waits for a running pass)."""
        queue = self._queues.setdefault(key, _Queue())
        queue.others += 1
        acquired = False
        try:
            async with queue.lock:
                queue.others -= 1
                acquired = True
                yield
        finally:
            if not acquired:
                queue.others -= 1
            self._tidy(key, queue)

    def held(self) -> list[asyncio.Lock]:
        """The registry locks held right now (shutdown waits for them)."""
        return [queue.lock for queue in list(self._queues.values()) if queue.lock.locked()]

    def _tidy(self, key: Key, queue: _Queue) -> None:
        if queue.idle() and self._queues.get(key) is queue:
            del self._queues[key]
