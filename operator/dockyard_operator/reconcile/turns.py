"""Whose turn it is, per registry: passes and status refreshes of one registry never overlap.

Owns: one lock per registry (dropped again when nobody holds or waits for it) and the coalescing rules. A pass
that would only queue behind another queued pass is not needed (that pass reads the registry fresh and covers
it); a status refresh is not needed behind a queued pass or a queued refresh (both read node trust's latest
view when their turn comes), and one whose turn comes while a pass waits behind it gives way to that pass.
Must not: know what a pass or a refresh does, or call the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator

Key = tuple[str, str]


@dataclasses.dataclass
class _Queue:
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    passes: int = 0
    """Passes waiting for the lock."""
    refreshes: int = 0
    """Status refreshes waiting for the lock."""
    others: int = 0
    """Anything else waiting for the lock (a deletion)."""


class Turns:
    def __init__(self) -> None:
        self._queues: dict[Key, _Queue] = {}

    @contextlib.asynccontextmanager
    async def pass_turn(self, key: Key) -> AsyncIterator[bool]:
        """Wait for the registry's turn for a pass; yields False (at once) when a queued pass covers it."""
        queue = self._queues.setdefault(key, _Queue())
        if queue.lock.locked() and queue.passes > 0:
            yield False
            return
        async with self._turn(key, queue, "passes"):
            yield True

    @contextlib.asynccontextmanager
    async def refresh_turn(self, key: Key) -> AsyncIterator[bool]:
        """Wait for the registry's turn for a status refresh; yields False when a queued pass or refresh
        covers it, or when a pass queued behind it while it waited."""
        queue = self._queues.setdefault(key, _Queue())
        if queue.lock.locked() and (queue.passes > 0 or queue.refreshes > 0):
            yield False
            return
        async with self._turn(key, queue, "refreshes"):
            yield queue.passes == 0

    @contextlib.asynccontextmanager
    async def exclusive(self, key: Key) -> AsyncIterator[None]:
        """Wait for the registry's turn, whatever is queued (a deletion waits for a running pass)."""
        async with self._turn(key, self._queues.setdefault(key, _Queue()), "others"):
            yield

    @contextlib.asynccontextmanager
    async def _turn(self, key: Key, queue: _Queue, counter: str) -> AsyncIterator[None]:
        """Hold the registry's lock, counted under `counter` while waiting for it."""
        setattr(queue, counter, getattr(queue, counter) + 1)
        waiting = True
        try:
            async with queue.lock:
                setattr(queue, counter, getattr(queue, counter) - 1)
                waiting = False
                yield
        finally:
            if waiting:  # cancelled while waiting
                setattr(queue, counter, getattr(queue, counter) - 1)
            self._tidy(key, queue)

    def busy(self) -> list[asyncio.Lock]:
        """The locks held right now (shutdown waits for them)."""
        return [queue.lock for queue in list(self._queues.values()) if queue.lock.locked()]

    def _tidy(self, key: Key, queue: _Queue) -> None:
        idle = not (queue.passes or queue.refreshes or queue.others or queue.lock.locked())
        if idle and self._queues.get(key) is queue:
            del self._queues[key]
