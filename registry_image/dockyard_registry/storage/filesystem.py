"""Filesystem storage driver: the production driver.

Owns: mapping relative paths under a root directory to files, with atomic writes (temp file, rename) and
the fsyncs each durability level asks for (FULL: file and directory; ENTRY: directory; NONE: none;
`commit` always syncs the file and its new directory). Must not: accept paths that escape the root (a
guard rejects `..`, absolute paths and empty components even though `paths.py` never produces them).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import uuid
from typing import BinaryIO

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

    def local_path(self, path: str, /) -> pathlib.Path | None:
        return self._path(path)


class FileWriter:
    """Appends to a file; the store tracks the hash, this only moves bytes.

    Unbuffered on purpose: the store already hands over large batches, and with no Python-side buffer a
    failed write (ENOSPC) leaves nothing pending, so `truncate` can roll the file back without a flush that
    would fail again, and no stale buffer can be appended after the rollback when the file is closed.
    """

    def __init__(self, path: pathlib.Path) -> None:
        self._file = open(path, "ab", buffering=0)  # noqa: SIM115 - closed by close()
        self._size = os.fstat(self._file.fileno()).st_size

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes, /) -> None:
        view = memoryview(data)
        while view:
            written = self._file.write(view) or 0  # a raw write may be short; O_APPEND keeps it in order
            self._size += written
            view = view[written:]

    def truncate(self, size: int, /) -> None:
        os.ftruncate(self._file.fileno(), size)
        self._size = size

    def sync(self) -> None:
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def _is_dir(mode: int) -> bool:
    import stat

    return stat.S_ISDIR(mode)


def _fsync_dir(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
