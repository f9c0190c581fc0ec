"""Start writing a file's dirty pages to disk early, so the fsync that makes it durable finds little left.

Every stored blob is fsynced before the registry answers 201 (storage.filesystem: `commit`). On its own
that fsync starts the writeback of the whole blob only at the end of the push, after the bytes were
received and hashed, so the push waits for the disk on top of everything else. `start` asks the kernel to
begin the writeback now and returns without waiting for it (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`),
so the disk writes while the registry hashes the bytes (bodyfile.adopt) or receives the next ones
(storage.filesystem.FileWriter); the commit's fsync then waits only for what is still in flight.

Durability is still the fsync's alone, and so is error reporting: `start` only initiates writeback (no wait,
no metadata) and never checks or clears the file's writeback error state, so an I/O error it triggers is
reported by the fsync that follows. That is why this is `sync_file_range` with WRITE only and not an early
`fdatasync` whose error would have to be carried to the commit: a later fsync on another descriptor does
not report an error an earlier fsync already returned. Best effort: where the call does not exist (not
Linux, no such libc symbol) or fails, nothing happens and the fsync does all the work, as before.

Must not: wait for the disk, or raise.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writeback of dirty pages not already under writeback
# Below this a file is left to the fsync alone: a kick would cost a syscall (and a thread, in bodyfile) for
# writeback the fsync starts a millisecond later anyway.
MIN_BYTES = 4 << 20

_SyncFileRange = Callable[[int, int, int, int], int]


def _load() -> _SyncFileRange | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the C library the interpreter is linked with
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    call: _SyncFileRange = function
    return call


_sync_file_range = _load()


def supported() -> bool:
    """Whether `start` can do anything here (Linux with glibc or musl)."""
    return _sync_file_range is not None


def start(fd: int, offset: int = 0, length: int = 0) -> bool:
    """Start writing back `fd`'s dirty pages in [offset, offset + length) (length 0: to the end of the
    file), without waiting; True when the kernel took the request. Releases the GIL (a ctypes call): it may
    block while the disk's queue is full, so callers run it where that blocks nobody (a worker thread)."""
    if _sync_file_range is None or length < 0 or offset < 0:
        return False
    return _sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE) == 0


def size_worth_it(size: int) -> bool:
    """Whether `size` new bytes are worth a writeback kick of their own (see MIN_BYTES)."""
    return size >= MIN_BYTES and supported()
