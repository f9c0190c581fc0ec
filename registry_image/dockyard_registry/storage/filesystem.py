"""Filesystem storage driver: the production driver.

Owns: mapping relative paths under a root directory to files, with atomic writes (temp file, rename) and
the fsyncs each durability level asks for (FULL: file and directory; ENTRY: directory; NONE: none;
`commit` always syncs the file and its new directory). Must not: accept paths that escape the root (a
guard rejects `..`, absolute paths and empty components even though `paths.py` never produces them).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import shutil
import stat
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import BinaryIO

from dockyard_registry import writeback
from dockyard_registry.storage import base

TEMP_PREFIX = ".tmp-"  # the name of a `put` in flight until its rename; `leftovers` after a crash


class FilesystemDriver:
    def __init__(self, root: pathlib.Path) -> None:
        self.root = root.resolve()

    def _path(self, path: str) -> pathlib.Path:
        parts = path.split("/")
        if not path or any(p in ("", ".", "..") for p in parts) or "\\" in path or "\0" in path:
            raise ValueError(f"unsafe storage path {path!r}")
        return self.root.joinpath(*parts)

    def get(self, path: str, /) -> bytes:
        return self._path(path).read_bytes()

    def put(self, path: str, data: bytes, /, *, durability: base.Durability = base.Durability.FULL) -> None:
        target = self._path(path)
        if not data and durability is base.Durability.NONE and _touched(target):
            return  # an empty record already there (a blob's `pushed`): its new mtime is all that changes
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                if durability is base.Durability.FULL:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if durability is not base.Durability.NONE:
            _fsync_dir(target.parent)

    def size(self, path: str, /) -> int | None:
        try:
            st = self._path(path).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st.st_size if not _is_dir(st.st_mode) else None

    def mtime(self, path: str, /) -> float | None:
        try:
            return self._path(path).stat().st_mtime
        except (FileNotFoundError, NotADirectoryError):
            return None

    def touch(self, path: str, /) -> None:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            os.utime(self._path(path))

    def list(self, path: str, /) -> list[str]:
        try:
            names = os.listdir(self._path(path))
        except (FileNotFoundError, NotADirectoryError):
            return []
        # temp files of in-flight `put`s are an implementation detail, not children.
        return sorted(n for n in names if not n.startswith(TEMP_PREFIX))

    def delete(self, path: str, /, *, durable: bool = True) -> None:
        target = self._path(path)
        try:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
        except FileNotFoundError:
            return
        if durable:
            _fsync_dir(target.parent)

    def open_writer(self, path: str, /) -> FileWriter:
        target = self._path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        return FileWriter(target)

    def open_reader(self, path: str, /, *, offset: int = 0) -> BinaryIO:
        f = open(self._path(path), "rb")  # noqa: SIM115 - the caller owns and closes the handle
        if offset:
            f.seek(offset)
        return f

    def commit(self, src: str, dst: str, /) -> None:
        source, target = self._path(src), self._path(dst)
        with open(source, "rb") as f:
            os.fsync(f.fileno())
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        # Only the target's directory: the source's disappearance is scratch state either way.
        _fsync_dir(target.parent)

    def leftovers(self, path: str, /) -> tuple[str, ...]:
        found: list[str] = []
        top = self._path(path)
        for directory, _dirs, files in os.walk(top):
            for name in files:
                if name.startswith(TEMP_PREFIX):
                    found.append((pathlib.Path(directory) / name).relative_to(self.root).as_posix())
        return tuple(sorted(found))

    def synced_together(self) -> contextlib.AbstractContextManager[None]:
        return _synced_together()

    def local_path(self, path: str, /) -> pathlib.Path | None:
        return self._path(path)

    def redirect_url(self, path: str, /) -> str | None:
        return None


class FileWriter:
    """Appends to a file; the store tracks the hash, this only moves bytes.

    Unbuffered on purpose: the store already hands over large batches, and with no Python-side buffer a
    failed write (ENOSPC) leaves nothing pending, so `truncate` can roll the file back without a flush that
    would fail again, and no stale buffer can be appended after the rollback when the file is closed.

    Every `writeback.MIN_BYTES` written, the writeback of those bytes starts (`writeback.start`, no wait):
    the disk writes while the next bytes arrive, and the commit's fsync finds little left to write.
    """

    def __init__(self, path: pathlib.Path) -> None:
        self._file = open(path, "ab", buffering=0)  # noqa: SIM115 - closed by close()
        self._size = os.fstat(self._file.fileno()).st_size
        self._unkicked = self._size  # where the bytes whose writeback has not been started begin

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes, /) -> None:
        view = memoryview(data)
        while view:
            written = self._file.write(view) or 0  # a raw write may be short; O_APPEND keeps it in order
            self._size += written
            view = view[written:]
        if self._size - self._unkicked >= writeback.MIN_BYTES:
            writeback.start(self._file.fileno(), self._unkicked, self._size - self._unkicked)
            self._unkicked = self._size

    def truncate(self, size: int, /) -> None:
        os.ftruncate(self._file.fileno(), size)
        self._size = size
        self._unkicked = min(self._unkicked, size)

    def sync(self) -> None:
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def _is_dir(mode: int) -> bool:
    return stat.S_ISDIR(mode)


class _Deferred(threading.local):
    dirs: dict[pathlib.Path, None] | None = None  # directories to sync as the block ends, in order


_deferred = _Deferred()


@contextlib.contextmanager
def _synced_together() -> Iterator[None]:
    """See base.Driver.synced_together. Each journal commit on ext4/XFS costs a small push about a
    millisecond; a blob's commit made three (data, its directory, the repository's link), now two: the
    directories are synced once at the end, after every rename of the block. Nested blocks join the outer."""
    if _deferred.dirs is not None:
        yield
        return
    _deferred.dirs = {}
    try:
        yield
    except BaseException:
        pending, _deferred.dirs = _deferred.dirs, None
        for directory in pending:
            with contextlib.suppress(OSError):  # the block failed already; keep what it did durable
                _fsync_dir(directory)
        raise
    pending, _deferred.dirs = _deferred.dirs, None
    for directory in pending:
        _fsync_dir(directory)


def _touched(target: pathlib.Path) -> bool:
    """Set an existing empty regular file's mtime to now, without a new inode (a temp file and a rename
    cost the file system an inode allocation each time); False when there is no such file."""
    try:
        st = target.stat()
        if st.st_size != 0 or not stat.S_ISREG(st.st_mode):
            return False
        os.utime(target)
    except (FileNotFoundError, NotADirectoryError):
        return False  # gone in between (gc removed the record): the caller writes it anew
    return True


def _fsync_dir(path: pathlib.Path) -> None:
    if _deferred.dirs is not None:
        _deferred.dirs[path] = None
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


WRITER_PREFIX = ".upload-"  # a resumable writer's bytes until `commit` renames them onto the path


class AsyncFilesystemDriver:
    """The async object contract (base.ObjectDriver) over a directory.

    Every blocking call runs in a worker thread, so the event loop never waits on the disk. A writer's
    bytes live in a hidden sibling (`.upload-<name>`, never listed) until `commit` fsyncs and renames it
    onto the path; `move` is an atomic rename followed by a directory fsync.
    """

    def __init__(self, root: pathlib.Path) -> None:
        self.files = FilesystemDriver(root)

    async def get(self, path: str, /) -> bytes:
        return await asyncio.to_thread(self.files.get, path)

    async def put(self, path: str, data: bytes, /) -> None:
        await asyncio.to_thread(self.files.put, path, data)

    async def stat(self, path: str, /) -> base.FileInfo | None:
        return await asyncio.to_thread(self._stat, path)

    def _stat(self, path: str) -> base.FileInfo | None:
        try:
            st = self.files._path(path).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if _is_dir(st.st_mode):
            return base.FileInfo(size=0, modified=st.st_mtime, is_dir=True)
        return base.FileInfo(size=st.st_size, modified=st.st_mtime)

    async def list(self, path: str, /) -> list[str]:
        names = await asyncio.to_thread(self.files.list, path)
        return [n for n in names if not n.startswith(WRITER_PREFIX)]

    async def delete(self, path: str, /) -> None:
        await asyncio.to_thread(self._delete, path)

    def _delete(self, path: str) -> None:
        self.files.delete(path)
        staged = self._staging(path)
        staged.unlink(missing_ok=True)

    async def move(self, src: str, dst: str, /) -> None:
        await asyncio.to_thread(self._move, src, dst)

    def _move(self, src: str, dst: str) -> None:
        source, target = self.files._path(src), self.files._path(dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        _fsync_dir(target.parent)

    def _staging(self, path: str) -> pathlib.Path:
        target = self.files._path(path)
        return target.parent / f"{WRITER_PREFIX}{target.name}"

    async def writer(self, path: str, /) -> AsyncFileWriter:
        staged = self._staging(path)

        def open_() -> FileWriter:
            staged.parent.mkdir(parents=True, exist_ok=True)
            return FileWriter(staged)

        return AsyncFileWriter(await asyncio.to_thread(open_), staged=staged, target=self.files._path(path))

    async def reader(self, path: str, /, *, offset: int = 0) -> AsyncIterator[bytes]:
        f = await asyncio.to_thread(self.files.open_reader, path, offset=offset)
        try:
            while chunk := await asyncio.to_thread(f.read, CHUNK):
                yield chunk
        finally:
            f.close()

    async def redirect_url(self, path: str, /) -> str | None:
        return None

    async def aclose(self) -> None:
        pass


CHUNK = 1 << 20


class AsyncFileWriter:
    """A resumable writer on a staging file; `abandon` truncates back to where this handle started."""

    def __init__(self, file: FileWriter, *, staged: pathlib.Path, target: pathlib.Path) -> None:
        self._file = file
        self._start = file.size
        self._staged = staged
        self._target = target

    @property
    def size(self) -> int:
        return self._file.size

    async def write(self, data: bytes, /) -> None:
        await asyncio.to_thread(self._file.write, data)

    async def close(self) -> None:
        await asyncio.to_thread(self._file.close)

    async def abandon(self) -> None:
        def undo() -> None:
            try:
                self._file.truncate(self._start)
            finally:
                self._file.close()

        await asyncio.to_thread(undo)

    async def commit(self) -> None:
        def finish() -> None:
            self._file.sync()
            self._file.close()
            os.replace(self._staged, self._target)
            _fsync_dir(self._target.parent)

        await asyncio.to_thread(finish)

    async def cancel(self) -> None:
        def drop() -> None:
            self._file.close()
            self._staged.unlink(missing_ok=True)

        await asyncio.to_thread(drop)


def _conforms(driver: AsyncFilesystemDriver) -> base.ObjectDriver:
    return driver  # mypy proves the contract is implemented
