"""The storage driver Protocol.

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

import enum
import pathlib
from typing import BinaryIO, Protocol


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
