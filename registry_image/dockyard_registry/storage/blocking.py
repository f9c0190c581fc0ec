"""A blocking `base.Driver` over the async S3 driver, whose client runs on its own event loop thread.

Owns: the thread and loop the S3 client lives on, and the mapping of the store's blocking calls onto
`ObjectDriver` operations. Must not: be called on an event loop that serves requests (the store calls it
from worker threads, like the filesystem driver); know about digests or HTTP.

Why a facade and not an async store: the store's rules (locks shared with gc, upload sessions, manifests)
are written and tested as blocking code run in worker threads; this keeps them as they are while no S3
call ever runs on the serving loop: each call is a coroutine submitted to the driver's own loop, and the
calling worker thread waits for it.

The mapping, where the contracts differ:
- `size`/`mtime` of a path with an open resumable upload (an upload session's data) are the upload's
  (S3Driver.writer_stat): its bytes are invisible until `commit`. Only paths that may hold one (`resumable`:
  by default the store's upload data, paths.is_upload_data) are asked about an upload: a HEAD of its state
  first, then of the object; any other path is one HEAD (`size`), plus a listing for a directory's
  `mtime`.
- A writer rolls a failed chunk back with `truncate(size at open)`, which is `abandon()`; any other
  truncation is refused (S3 cannot shorten an upload).
- `commit(src, dst)` completes the upload open at `src` (if any), then moves it to `dst`; an upload that
  never filled a part is PUT straight to `dst` instead (no copy, no delete).
- `open_reader` of an open upload raises FileNotFoundError: such bytes are readable only once committed
  (the store then hashes the committed object; see Store._hash_state).
- Durability levels are moot (an S3 PUT is durable when acknowledged); there are no leftovers of
  interrupted writes (an upload is invisible until complete) and no local paths.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import pathlib
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, BinaryIO, TypeVar

from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

from dockyard_registry import paths
from dockyard_registry.storage import base, s3

# What botocore raises, after its own retries, when the endpoint cannot be reached or drops the request.
_UNREACHABLE = (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError)

_T = TypeVar("_T")
HAND_OVER = 1 << 20  # bytes a writer holds before handing them to the driver's loop


class BlockingS3Driver:
    """Start with `BlockingS3Driver.start(config)`; `close()` releases the client and stops the thread."""

    def __init__(
        self,
        driver: s3.S3Driver,
        loop: asyncio.AbstractEventLoop,
        thread: threading.Thread,
        resumable: Callable[[str], bool] = paths.is_upload_data,
    ) -> None:
        self._driver = driver
        self._loop = loop
        self._thread = thread
        self._resumable = resumable

    @classmethod
    def start(
        cls, config: s3.S3Config, *, resumable: Callable[[str], bool] = paths.is_upload_data
    ) -> BlockingS3Driver:
        """`resumable`: the paths writers are opened on (any other path never holds an open upload)."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="dockyard-s3", daemon=True)
        thread.start()
        driver = s3.S3Driver(config)
        try:
            asyncio.run_coroutine_threadsafe(driver.start(), loop).result()
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            raise
        return cls(driver, loop, thread, resumable)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._run(self._driver.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if threading.current_thread() is self._thread:
            raise RuntimeError("BlockingS3Driver called from its own loop")
        future: concurrent.futures.Future[_T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except _UNREACHABLE as exc:
            raise base.StorageUnavailableError(f"object storage unreachable: {exc}") from None

    # ------------------------------------------------------------------------------------ base.Driver
    def get(self, path: str, /) -> bytes:
        return self._run(self._driver.get(path))

    def put(self, path: str, data: bytes, /, *, durability: base.Durability = base.Durability.FULL) -> None:
        self._run(self._driver.put(path, data))

    async def _info(self, path: str, *, dirs: bool) -> base.FileInfo | None:
        if self._resumable(path):
            # An upload's data is an open upload until committed: its state first (one request then).
            info = await self._driver.writer_stat(path)
            if info is not None:
                return info
        return await (self._driver.stat(path) if dirs else self._driver.head(path))

    def size(self, path: str, /) -> int | None:
        info = self._run(self._info(path, dirs=False))
        return None if info is None or info.is_dir else info.size

    def mtime(self, path: str, /) -> float | None:
        info = self._run(self._info(path, dirs=True))
        return None if info is None else info.modified

    def touch(self, path: str, /) -> None:
        # A rewrite (a copy on S3): the store no longer touches content, only small records.
        self.put(path, self.get(path))

    def list(self, path: str, /) -> list[str]:
        return self._run(self._driver.list(path))

    def delete(self, path: str, /, *, durable: bool = True) -> None:
        self._run(self._driver.delete(path))

    def open_writer(self, path: str, /) -> base.Writer:
        return _Writer(self, self._run(self._driver.writer(path)))

    def open_reader(self, path: str, /, *, offset: int = 0) -> BinaryIO:
        chunks = self._driver.reader(path, offset=offset)
        reader = _Reader(self, chunks)
        reader.prime()  # FileNotFoundError now, as the contract says, not on the first read
        return io.BufferedReader(reader)

    def commit(self, src: str, dst: str, /) -> None:
        self._run(self._commit(src, dst))

    async def _commit(self, src: str, dst: str) -> None:
        writer = await self._driver.resume(src) if self._resumable(src) else None
        if writer is not None:
            if src != dst and not writer.multipart:
                await writer.commit_to(self._driver.key(dst))
                return
            await writer.commit()
        if src != dst:
            await self._driver.move(src, dst)

    def leftovers(self, path: str, /) -> tuple[str, ...]:
        return ()

    def synced_together(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # nothing to sync

    def local_path(self, path: str, /) -> pathlib.Path | None:
        return None

    def redirect_url(self, path: str, /) -> str | None:
        return self._run(self._driver.redirect_url(path))

    # Used by the facade's helpers only.
    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return self._run(coro)


class _Writer:
    """Chunks are handed to the driver's loop in batches of at least HAND_OVER bytes (one hop between
    threads per batch, not per socket read); `close` hands over the rest first, `truncate` drops it."""

    def __init__(self, owner: BlockingS3Driver, writer: base.ObjectWriter) -> None:
        self._owner = owner
        self._writer = writer
        self._opened_at = writer.size
        self._ended = False
        self._held: list[bytes] = []
        self._held_size = 0

    @property
    def size(self) -> int:
        return self._writer.size + self._held_size

    def write(self, data: bytes, /) -> None:
        self._held.append(data)
        self._held_size += len(data)
        if self._held_size >= HAND_OVER:
            self._hand_over()

    def _hand_over(self) -> None:
        chunks, self._held, self._held_size = self._held, [], 0
        if chunks:
            self._owner.run(_write_all(self._writer, chunks))

    def truncate(self, size: int, /) -> None:
        if size != self._opened_at:
            raise OSError(f"an S3 upload rolls back only to where this writer opened it ({self._opened_at})")
        self._held, self._held_size = [], 0
        self._owner.run(self._writer.abandon())
        self._ended = True

    def sync(self) -> None:
        pass  # bytes are durable once `close` records them

    def close(self) -> None:
        if not self._ended:
            self._ended = True
            self._hand_over()
            self._owner.run(self._writer.close())


async def _write_all(writer: base.ObjectWriter, chunks: list[bytes]) -> None:
    for chunk in chunks:
        await writer.write(chunk)


class _Reader(io.RawIOBase):
    """The chunks of an async reader, pulled one at a time on the driver's loop."""

    def __init__(self, owner: BlockingS3Driver, chunks: AsyncIterator[bytes]) -> None:
        self._owner = owner
        self._chunks = chunks
        self._pending = b""
        self._pos = 0
        self._done = False

    def prime(self) -> None:
        self._pending = self._next()

    def _next(self) -> bytes:
        if self._done:
            return b""
        chunk = self._owner.run(_next_chunk(self._chunks))
        if chunk is None:
            self._done = True
            return b""
        return chunk

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while self._pos == len(self._pending) and not self._done:
            self._pending, self._pos = self._next(), 0
        n = min(len(view), len(self._pending) - self._pos)
        view[:n] = self._pending[self._pos : self._pos + n]
        self._pos += n
        return n

    def close(self) -> None:
        if not self.closed and not self._done:
            self._done = True
            aclose = getattr(self._chunks, "aclose", None)
            if aclose is not None:
                self._owner.run(aclose())
        super().close()


async def _next_chunk(chunks: AsyncIterator[bytes]) -> bytes | None:
    try:
        return await chunks.__anext__()
    except StopAsyncIteration:
        return None


def _conforms(driver: BlockingS3Driver) -> base.Driver:
    return driver  # mypy proves the store's contract is implemented
