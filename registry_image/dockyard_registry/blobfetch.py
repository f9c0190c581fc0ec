"""One running upstream fetch of a blob, as the client that started it (the "leader") sees it.

Owns: relaying the upstream's chunks to their two readers, each at its own pace within its own bound:
the small queue of chunks the leader reads, and the feed the store takes them from (a bounded buffer:
the store hashes and writes on a task of its own, so a hashing thread waiting for a core stalls neither
the leader nor the upstream read); the end of the leader's stream (its last chunk only once the whole
blob matched its digest, or the fetch's error instead); detaching a leader that went away. Must not:
open the upstream connection, store or verify anything (mirror.py and the store do) or know HTTP
(handlers/mirrored.py writes the chunks to the client).

Memory per fetch stays bounded whoever is slow: a slow client fills its queue and then the relay waits
for it; a slow store fills the feed (`FEED_BYTES`) and then the relay waits for it; while the relay
waits it reads nothing more from the upstream. The queue and the feed hold the same chunk objects, so
what they hold together is the larger of the two windows, not their sum.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

QUEUE_CHUNKS = 8  # chunks buffered for the leader: a slow client slows the fetch, never fills memory.
# A chunk is what asyncio decrypted from one read of the upstream connection (~128 KiB on average; at most
# ~0.5 MiB, its TLS buffer drained after a pause), so at most ~4 MiB per fetch wait here, as 4 x 1 MiB did.
FEED_BYTES = 4 << 20  # bytes buffered for the store (one chunk more at most): a slow store slows the
# fetch, never fills memory; a few MiB ride out a hashing thread's wait for a core (~10-40 ms of relay).
FEED_WAKE = 1 << 20  # bytes waiting before the store's task is woken: it hashes and writes in batches of
# 1 MiB anyway, so it takes a batch's chunks in one go instead of waking once per chunk.

# What the relay hands the store: the chunks to take, and the hook to await once the blob matched.
Verified = Callable[[], Awaitable[None]]
Storer = Callable[[AsyncIterable[bytes], Verified], Coroutine[Any, Any, int]]


class FeedAbortedError(Exception):
    """The fetch failed while the store was taking its chunks: the store's write is rolled back."""


class Feed:
    """The chunks the store has yet to take, in order, about `limit` bytes at most; one writer (the
    relay) and one reader (the store)."""

    def __init__(self, limit: int = FEED_BYTES, *, wake_at: int = FEED_WAKE) -> None:
        self.limit = limit
        self.wake_at = min(wake_at, limit)  # the reader waits until this many bytes (or the end) are here
        self.buffered = 0  # bytes put and not taken yet
        self._chunks: collections.deque[bytes] = collections.deque()
        self._closed = False  # no more chunks will be put
        self._error: BaseException | None = None  # the fetch failed: the reader stops at once
        self._stopped = False  # the reader stopped taking chunks (done or failed)
        self._readable: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None

    @property
    def waiting(self) -> bool:
        """Whether the writer waits for room (tests wait on this rather than sleep)."""
        return self._writable is not None and not self._writable.done()

    async def put(self, chunk: bytes) -> bool:
        """Queue `chunk` for the reader, first waiting while `limit` bytes are buffered; False (nothing
        queued) when the reader stopped: the writer should stop too."""
        while self.buffered >= self.limit and not self._stopped:
            self._writable = asyncio.get_running_loop().create_future()
            await self._writable
        if self._stopped:
            return False
        self._chunks.append(chunk)
        self.buffered += len(chunk)
        if self.buffered >= self.wake_at:
            _wake(self._readable)
        return True

    def close(self, error: BaseException | None = None) -> None:
        """No more chunks: the reader ends after the buffered ones, or, the fetch having failed
        (`error`), raises FeedAbortedError instead of taking any more."""
        if error is not None and self._error is None:
            self._error = error
            self._drop()
        self._closed = True
        _wake(self._readable)

    def stop(self) -> None:
        """The reader is done (or failed): a writer waiting for room is told to stop."""
        self._stopped = True
        self._drop()
        _wake(self._writable)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The reader's chunks in the order put, until the writer closes the feed; once it took every
        chunk here, it waits until `wake_at` bytes (or the end) are here again."""
        while True:
            if self._error is not None:
                raise FeedAbortedError(f"the upstream fetch failed: {type(self._error).__name__}")
            if self._chunks:
                chunk = self._chunks.popleft()
                self.buffered -= len(chunk)
                if self.buffered < self.limit:
                    _wake(self._writable)
                yield chunk
            elif self._closed:
                return
            else:
                self._readable = asyncio.get_running_loop().create_future()
                await self._readable

    def _drop(self) -> None:
        self._chunks.clear()
        self.buffered = 0


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class BlobFetch:
    """One running upstream fetch of a blob into the store (see the module docstring)."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.started: asyncio.Future[int | None] = loop.create_future()  # the upstream's Content-Length
        self.queue: asyncio.Queue[bytes | None] | None = asyncio.Queue(maxsize=QUEUE_CHUNKS)
        self.feed = Feed()
        self.received = 0  # bytes read from the upstream so far
        # The leader's last chunk, set once the whole blob matched its digest (before it is committed to
        # storage: the fsync is no client's wait); an exception when the fetch failed.
        self.verified: asyncio.Future[bytes] = loop.create_future()
        self.task: asyncio.Task[int] | None = None
        self.waiters = 0  # requests that joined this fetch after it started (coalesced)

    def detach(self) -> None:
        """The leader stops reading (done, or its client left): the fetch goes on without it."""
        queue, self.queue = self.queue, None
        while queue is not None and not queue.empty():
            queue.get_nowait()  # unblocks a put waiting for room

    async def chunks(self) -> AsyncIterator[bytes]:
        """The leader's copy of the bytes as the upstream sends them, the last one once the blob is
        verified; raises the fetch's error instead of that last chunk when it failed."""
        queue = self.queue
        while queue is not None:
            chunk = await queue.get()
            if chunk is None:
                break
            yield chunk
        last = await asyncio.shield(self.verified)
        if last:
            yield last

    async def relay(self, body: AsyncIterable[bytes], *, store: Storer) -> int:
        """Relay the upstream's `body` to the leader and to `store`, which runs on a task of its own,
        taking the chunks from the feed, and awaits the hook it is given once the blob matched its digest
        (before committing it); returns what `store` returned.

        The leader gets each chunk once the next one arrived, and the last only from that hook: a client
        never holds a complete body of wrong bytes. When `body` fails (or this is cancelled) the store's
        chunks end with FeedAbortedError and its write is rolled back before this raises; when the store
        fails, the upstream is read no further and its error is raised here.
        """
        held: list[bytes] = []

        async def verified() -> None:
            self._settle(held.pop() if held else b"")

        storing = asyncio.create_task(store(self.feed.chunks(), verified))
        storing.add_done_callback(self._stored)
        try:
            async for chunk in body:
                self.received += len(chunk)
                if held:
                    await self._offer(held.pop())
                held.append(chunk)
                if not await self.feed.put(chunk):
                    break  # the store failed: awaiting it below raises its error
            else:
                self.feed.close()
                await self._offer(None)  # the body ended: the leader now waits for `verified`
            size = await storing
        except BaseException as exc:
            self.feed.close(exc)
            await asyncio.wait({storing})  # nothing partial left behind once the fetch reports
            raise
        self._settle(held.pop() if held else b"")  # settled already, unless `verified` never ran
        return size

    def _stored(self, storing: asyncio.Task[int]) -> None:
        self.feed.stop()
        if not storing.cancelled():
            storing.exception()  # retrieved here too: raised by `relay` unless it was cancelled first

    async def _offer(self, chunk: bytes | None) -> None:
        queue = self.queue
        if queue is not None:
            await queue.put(chunk)

    def _abort(self) -> None:
        """The fetch failed: the leader stops at once (what it has not read yet is dropped: its response
        is cut short either way) and learns why from `verified`."""
        queue = self.queue
        if queue is not None:
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(None)

    def _settle(self, last: bytes | Exception) -> None:
        if self.verified.done():
            return
        if isinstance(last, Exception):
            self.verified.set_exception(last)
            self.verified.exception()  # the leader may be gone: retrieved, so no warning
        else:
            self.verified.set_result(last)
