"""Upload bodies that nginx already wrote to a file on the data volume (issue 15): hash, then adopt.

Behind the operator's nginx, a blob upload's PATCH/PUT/POST body is written by nginx to a file in a
directory on the registry's own data volume (`client_body_in_file_only`), and only that file's path
reaches the registry (`--body-file-dir` names the directory; see handlers/common.body_source for who may
name a file). The registry then never copies the bytes through a socket:

- it hashes the file once, in a worker thread, over a read-only memory map (no copy into Python);
- the first bytes of an upload (a monolithic push, the first PATCH) are *renamed* into the upload's data
  file: nginx wrote them once, nothing writes them again;
- later chunks are appended in the kernel (`os.copy_file_range`: a reflink or an in-kernel copy, never
  through user space).

The commit fsyncs the blob before the client hears 201. So that this fsync does not start writing the
whole body only then, the writeback of the bytes the upload keeps starts as soon as they are in their file
(`writeback.start`, which does not wait for the disk): for a renamed body, in a second thread while the
first hashes it (both release the GIL: the disk writes while the CPU hashes); for an appended chunk, once
it is copied (the disk writes while the client sends the next chunk).

Rollback is as for a streamed chunk: if anything fails (a full disk; a cancelled request, which the store
(`Store._take`, which runs `adopt` in the request's one worker-thread call) rolls back once `adopt` returns),
the upload's data is truncated back to where it was and its running hash is left as it was; the body file is
nginx's and nginx removes it when the request ends (`clean`). A driver without local files (S3) or a body
file on another file system gets the bytes streamed from the file like any request body.

Must not: trust a path it was not handed by the HTTP edge, follow a symlink, or know HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import mmap
import os
import pathlib
import re
import stat
import threading
from collections.abc import AsyncIterator, Iterator

from dockyard_registry import bodyahead, digest, writeback

READ_CHUNK = 1 << 20
MAP_WINDOW = 4 << 20  # a multiple of mmap.ALLOCATIONGRANULARITY; resident per upload being hashed
# The request header naming the body file: set by the operator's nginx on blob upload requests and
# cleared by it on every other request (nginx_configmap), trusted by handlers.common.body_source only.
HEADER = "X-Dockyard-Body-File"
# Where that nginx writes bodies: this directory under the data volume's root (same file system, so a
# rename adopts a body). The registry's storage paths never start with a dot.
DIR_NAME = ".nginx-bodies"
NAME_RE = re.compile(r"^[0-9]{1,20}$")  # nginx's temp files: a zero-padded counter


class BodyFileError(Exception):
    """The named body file is not a regular file we may read (gone, a symlink, a directory)."""


@dataclasses.dataclass(frozen=True)
class BodyFile:
    """A complete request body in a file; `size` as nginx left it (the request's content length).
    `ahead`: what may have hashed its first bytes while nginx wrote them (bodyahead.py)."""

    path: pathlib.Path
    size: int
    ahead: bodyahead.Follower | None = None


def open_checked(path: pathlib.Path, *, ahead: bodyahead.Follower | None = None) -> BodyFile:
    """Stat `path` without following a symlink; BodyFileError unless it is a regular file."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise BodyFileError(f"request body file missing: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise BodyFileError("request body file is not a regular file")
    return BodyFile(path=path, size=st.st_size, ahead=ahead)


def _hash_into(hasher: digest.Hasher, fd: int, size: int, *, start: int = 0) -> None:
    """Hash bytes [start, size) of `fd` over read-only maps: the page cache's bytes, no copy into Python.
    One window at a time, so the process never maps (and counts as resident) more than MAP_WINDOW of it.
    `start`: a multiple of mmap.ALLOCATIONGRANULARITY."""
    for offset in range(start, size, MAP_WINDOW):
        length = min(MAP_WINDOW, size - offset)
        with (
            mmap.mmap(fd, length, access=mmap.ACCESS_READ, offset=offset) as mapped,
            memoryview(mapped) as view,
        ):
            hasher.update(view)


def _append_kernel(src: int, dst: int, size: int, *, at: int) -> None:
    """Copy `size` bytes of `src` (from its start) to `dst` at offset `at`, never through user space
    (copy_file_range refuses an O_APPEND target, hence the explicit offset)."""
    offset = 0
    while offset < size:
        copied = os.copy_file_range(src, dst, size - offset, offset, at + offset)
        if copied == 0:
            raise BodyFileError(f"request body file shrank to {offset} of {size} bytes")
        offset += copied


def adopt(
    body: BodyFile, target: pathlib.Path, *, upload_size: int, hasher: digest.Hasher | None
) -> digest.Hasher | None:
    """Make `body`'s bytes the continuation of the upload file `target`; returns a copy of `hasher`
    updated with them (None when there is no running hash). Blocking: runs in a worker thread.

    The caller's `hasher` is never touched. On any failure the target is truncated back to `upload_size`.
    """
    try:
        fd = os.open(body.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        # Never a bare FileNotFoundError: to the store that would mean the upload itself is lost.
        raise BodyFileError(f"request body file unreadable: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != body.size:
            raise BodyFileError("request body file changed after it was handed over")
        hashed = hasher.copy() if hasher is not None else None
        start = 0
        ahead = body.ahead.take(fd) if body.ahead is not None else None
        if ahead is not None and hashed is not None and upload_size == 0 and hashed.name == ahead.hasher.name:
            # The upload's first bytes, hashed while nginx wrote them: its running hash is the empty one,
            # so what was hashed ahead continues it exactly.
            hashed, start = ahead.hasher, ahead.offset
        # This very file becomes the upload (renamed below): its writeback may start at once.
        kept = upload_size == 0 and writeback.size_worth_it(body.size) and _same_file_system(st, target)
        with _written_back(fd, enabled=kept):
            if hashed is not None:
                _hash_into(hashed, fd, body.size, start=start)
        if body.size:
            _place(fd, body, target, upload_size=upload_size)
        return hashed
    finally:
        os.close(fd)


def _same_file_system(st: os.stat_result, target: pathlib.Path) -> bool:
    try:
        return os.stat(target.parent).st_dev == st.st_dev
    except OSError:
        return False


@contextlib.contextmanager
def _written_back(fd: int, *, enabled: bool) -> Iterator[None]:
    """Run `writeback.start(fd)` in a thread of its own while the block runs (hashing the file), then wait
    for it: the descriptor stays open until the kernel took the request. Disabled: nothing runs."""
    if not enabled:
        yield
        return
    kick = threading.Thread(target=writeback.start, args=(fd,), name="dockyard-writeback", daemon=True)
    kick.start()
    try:
        yield
    finally:
        kick.join()


def _place(fd: int, body: BodyFile, target: pathlib.Path, *, upload_size: int) -> None:
    if upload_size == 0:
        try:
            # The first bytes of the upload: nginx's file becomes the upload's data, written once.
            os.replace(body.path, target)
            return
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
    out = os.open(target, os.O_WRONLY | os.O_CLOEXEC)
    try:
        try:
            if os.fstat(out).st_size != upload_size:
                raise BodyFileError("upload changed size while a chunk was being added")
            _append_kernel(fd, out, body.size, at=upload_size)
        except BaseException:
            os.ftruncate(out, upload_size)
            raise
        if writeback.size_worth_it(body.size):
            # The chunk goes to disk while the client sends the next one; the commit's fsync waits for it.
            writeback.start(out, upload_size, body.size)
    finally:
        os.close(out)


async def chunks(body: BodyFile) -> AsyncIterator[bytes]:
    """The file's bytes in chunks read in a worker thread: the fallback where they cannot be adopted."""
    try:
        f = await asyncio.to_thread(open, body.path, "rb", buffering=0)
    except OSError as exc:
        raise BodyFileError(f"request body file unreadable: {exc.strerror}") from None
    try:
        while chunk := await asyncio.to_thread(f.read, READ_CHUNK):
            yield chunk
    finally:
        f.close()


def sweep(directory: pathlib.Path, *, older_than: float) -> int:
    """Remove nginx temp files in `directory` last written before `older_than` (epoch seconds): what a
    killed nginx left behind (a live nginx removes its own, `clean`). Returns how many were removed."""
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if not NAME_RE.match(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime < older_than:
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:
            continue
    return removed
