"""The storage driver Protocols: the synchronous `Driver` the store runs on today, and the async
`ObjectDriver` contract (below) that the filesystem, memory and S3 drivers implement for the async store.

Owns: the operations the store may perform on bytes at relative `/`-separated paths. Must not: know about
digests, manifests or HTTP. Paths come only from `paths.py`, never from a client.

Semantics every driver guarantees (the contract suite checks them):
- `put` and `commit` are atomic: a reader sees the old content or the new, never a partial file. After
  `commit`, and after `put` with Durability.FULL, content and name survive a power loss; see Durability
  for the cheaper levels. `delete(durable=False)` may be undone by a power loss (for scratch state).
- Missing paths: `get`/`open_reader` raise FileNotFoundError, `size`/`mtime` return None, `list` returns [],
  `delete` is a no-op.
- `list` returns the names of the direct children of a directory, sorted.
- `leftovers` finds what an atomic write killed before its rename (kill -9, power loss) left behind; such
  a path works with `mtime` and `delete` like any other, and `list` never shows it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import pathlib
from collections.abc import AsyncIterator
from typing import BinaryIO, Protocol


class StorageUnavailableError(ConnectionError):
    """The storage backend could not be reached (an S3 endpoint down or restarting). Nothing of the
    operation counts; the client may retry it."""


class Durability(enum.Enum):
    """How much of a write must survive a power loss (every write survives a process crash).

    fsync is the dominant cost of a push on real disks, so each write asks only for what its reader
    needs: scratch state (upload sessions) needs NONE; a link whose *existence* is the information
    needs ENTRY (directory fsync; after a crash the file may be empty); anything whose bytes are read
    back (blobs, tags, referrer descriptors) needs FULL (file and directory fsync).
    """

    NONE = "none"
    ENTRY = "entry"
    FULL = "full"


class Writer(Protocol):
    """An append-only handle on an upload file."""

    @property
    def size(self) -> int: ...
    def write(self, data: bytes, /) -> None: ...
    def truncate(self, size: int, /) -> None: ...
    def sync(self) -> None: ...
    def close(self) -> None: ...


class Driver(Protocol):
    def get(self, path: str, /) -> bytes: ...
    def put(self, path: str, data: bytes, /, *, durability: Durability = Durability.FULL) -> None: ...
    def size(self, path: str, /) -> int | None: ...
    def mtime(self, path: str, /) -> float | None: ...
    def touch(self, path: str, /) -> None: ...
    def list(self, path: str, /) -> list[str]: ...
    def delete(self, path: str, /, *, durable: bool = True) -> None: ...
    def open_writer(self, path: str, /) -> Writer: ...
    def open_reader(self, path: str, /, *, offset: int = 0) -> BinaryIO: ...
    def commit(self, src: str, dst: str, /) -> None:
        """Move a fully written file to `dst` atomically (replacing it); `src` is gone afterwards."""
        ...

    def leftovers(self, path: str, /) -> tuple[str, ...]:
        """Paths of temp files of interrupted writes anywhere under `path`, sorted (empty when none)."""
        ...

    def local_path(self, path: str, /) -> pathlib.Path | None:
        """A real file path for zero-copy serving (sendfile, X-Accel-Redirect), when the driver has one."""
        ...

    def redirect_url(self, path: str, /) -> str | None:
        """A URL a client may fetch the bytes from directly (a presigned S3 URL), or None."""
        ...

    def synced_together(self) -> contextlib.AbstractContextManager[None]:
        """A block of calls (this thread's) whose directory syncs happen once per directory as the block
        ends, before it returns or raises: what the calls make durable is durable when the block is left,
        as without it, in fewer journal commits. File data is still synced where each call syncs it."""
        ...


# ------------------------------------------------------------------------------------------------------
# The async object contract (issue 14), in the shape of Distribution's StorageDriver.
#
# Every driver implements it: filesystem (blocking calls run in a worker thread), memory and S3. It needs
# no atomic rename, no truncate and no mtimes the store can set: a write becomes visible only through a
# `put` (atomic) or a writer's `commit`; `move` may be copy + delete (it is atomic only where the backend's
# rename is); a failed chunk is rolled back by not `close`-ing its writer (`abandon`), never by truncating.
# One contract suite (tests/registry/test_storage_contract.py) runs over every implementation.
#
# Semantics:
# - `get`/`reader` of a missing path raise FileNotFoundError; `stat` returns None; `list` returns [];
#   `delete` is a no-op. `list` gives the sorted names of the direct children of a directory, which exists
#   while something is stored below it.
# - `writer(path)` opens (or, when one is open, resumes) a resumable upload at `path`. Its bytes are
#   durable after `close()`, which ends this handle but keeps the upload for a later `writer(path)`: in
#   another process, or another replica on the same bucket. `abandon()` ends the handle and forgets what it
#   wrote since it was opened. `commit()` makes every byte written visible at `path` (replacing it) and
#   ends the upload; `cancel()` discards the upload. A writer is used by one task at a time.
# - `redirect_url` is a URL a client may fetch the bytes from directly (a presigned S3 URL), or None.
# ------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FileInfo:
    """What `stat` says about a path: a file's size and last-modified time (seconds since the epoch),
    or a directory (size 0)."""

    size: int
    modified: float
    is_dir: bool = False


class ObjectWriter(Protocol):
    @property
    def size(self) -> int:
        """Bytes in the upload so far, including those written through this handle."""
        ...

    async def write(self, data: bytes, /) -> None: ...
    async def close(self) -> None: ...
    async def abandon(self) -> None: ...
    async def commit(self) -> None: ...
    async def cancel(self) -> None: ...


class ObjectDriver(Protocol):
    async def get(self, path: str, /) -> bytes: ...
    async def put(self, path: str, data: bytes, /) -> None: ...
    async def stat(self, path: str, /) -> FileInfo | None: ...
    async def list(self, path: str, /) -> list[str]: ...
    async def delete(self, path: str, /) -> None: ...
    async def move(self, src: str, dst: str, /) -> None:
        """Make `src`'s content `dst`'s (replacing it); `src` is gone afterwards. FileNotFoundError when
        `src` is missing. May be copy + delete (server-side on S3: the bytes do not pass through us)."""
        ...

    async def writer(self, path: str, /) -> ObjectWriter: ...
    def reader(self, path: str, /, *, offset: int = 0) -> AsyncIterator[bytes]:
        """The bytes of `path` from `offset`, in chunks; FileNotFoundError (first iteration) when missing."""
        ...

    async def redirect_url(self, path: str, /) -> str | None: ...
    async def aclose(self) -> None:
        """Release connections; the driver is unusable afterwards."""
        ...
