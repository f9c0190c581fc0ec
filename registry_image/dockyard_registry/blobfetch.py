"""One running upstream fetch of a blob, as the client that started it (the "leader") sees it.

Owns: the small queue of chunks the leader reads while the fetch stores them, the end of that stream
(the leader's last chunk only once the whole blob matched its digest, or the fetch's error instead), and
detaching a leader that went away. Must not: fetch, store or verify anything (mirror.py does) or know
HTTP (handlers/mirrored.py writes the chunks to the client).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

QUEUE_CHUNKS = 8  # chunks buffered for the leader: a slow client slows the fetch, never fills memory.
# A chunk is what asyncio decrypted from one read of the upstream connection (~128 KiB on average; at most
# ~0.5 MiB, its TLS buffer drained after a pause), so at most ~4 MiB per fetch wait here, as 4 x 1 MiB did.


class BlobFetch:
    """One running upstream fetch of a blob into the store (see the module docstring)."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.started: asyncio.Future[int | None] = loop.create_future()  # the upstream's Content-Length
        self.queue: asyncio.Queue[bytes | None] | None = asyncio.Queue(maxsize=QUEUE_CHUNKS)
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
        """The leader's copy of the bytes as they are stored, the last one once the blob is verified;
        raises the fetch's error instead of that last chunk when it failed."""
        queue = self.queue
        while queue is not None:
            chunk = await queue.get()
            if chunk is None:
                break
            yield chunk
        last = await asyncio.shield(self.verified)
        if last:
            yield last

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
