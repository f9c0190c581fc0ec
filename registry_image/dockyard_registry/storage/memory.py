"""In-memory storage driver for tests.

Owns: a dict of path -> bytes with the same observable semantics as the filesystem driver (directories
are implied by path prefixes). Must not: be used in production (nothing survives the process).
"""

from __future__ import annotations

import contextlib
import io
import pathlib
import threading
import time
from collections.abc import AsyncIterator
from typing import BinaryIO

from dockyard_registry.storage import base


class MemoryDriver:
    def __init__(self) -> None:
        self._files: dict[str, bytearray] = {}
        self._mtimes: dict[str, float] = {}
        self._lock = threading.Lock()

    def get(self, path: str, /) -> bytes:
        with self._lock:
            if path not in self._files:
                raise FileNotFoundError(path)
            return bytes(self._files[path])

    def put(self, path: str, data: bytes, /, *, durability: base.Durability = base.Durability.FULL) -> None:
        with self._lock:
            self._files[path] = bytearray(data)
            self._mtimes[path] = time.time()

    def size(self, path: str, /) -> int | None:
        f = self._files.get(path)
        return None if f is None else len(f)

    def mtime(self, path: str, /) -> float | None:
        if path in self._mtimes:
            return self._mtimes[path]
        prefix = path + "/"
        times = [t for p, t in self._mtimes.items() if p.startswith(prefix)]
        return max(times) if times else None

    def touch(self, path: str, /) -> None:
        if path in self._files:
            self._mtimes[path] = time.time()

    def set_mtime(self, path: str, value: float) -> None:
        """Test hook: age a file (the filesystem equivalent is os.utime)."""
        self._mtimes[path] = value

    def list(self, path: str, /) -> list[str]:
        prefix = path.rstrip("/") + "/"
        with self._lock:
            return sorted({p[len(prefix) :].split("/", 1)[0] for p in self._files if p.startswith(prefix)})

    def delete(self, path: str, /, *, durable: bool = True) -> None:
        prefix = path + "/"
        with self._lock:
            for p in [p for p in self._files if p == path or p.startswith(prefix)]:
                del self._files[p]
                self._mtimes.pop(p, None)

    def open_writer(self, path: str, /) -> MemoryWriter:
        with self._lock:
            buf = self._files.setdefault(path, bytearray())
            self._mtimes[path] = time.time()
        return MemoryWriter(buf)

    def open_reader(self, path: str, /, *, offset: int = 0) -> BinaryIO:
        stream = io.BytesIO(self.get(path))
        stream.seek(offset)
        return stream

    def commit(self, src: str, dst: str, /) -> None:
        with self._lock:
            if src not in self._files:
                raise FileNotFoundError(src)
            self._files[dst] = self._files.pop(src)
            self._mtimes.pop(src, None)
            self._mtimes[dst] = time.time()

    def leftovers(self, path: str, /) -> tuple[str, ...]:
        return ()  # every write here is a dict assignment: nothing is left half-done

    def synced_together(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # nothing to sync

    def local_path(self, path: str, /) -> pathlib.Path | None:
        return None

    def redirect_url(self, path: str, /) -> str | None:
        return None


class MemoryWriter:
    def __init__(self, buf: bytearray) -> None:
        self._buf = buf

    @property
    def size(self) -> int:
        return len(self._buf)

    def write(self, data: bytes, /) -> None:
        self._buf.extend(data)

    def truncate(self, size: int, /) -> None:
        del self._buf[size:]

    def sync(self) -> None:
        pass

    def close(self) -> None:
        pass


class AsyncMemoryDriver:
    """The async object contract (base.ObjectDriver) over dicts, for fast tests of the layers above.

    A writer's bytes are kept apart from the files until `commit` (as on S3, where an unfinished multipart
    upload is invisible); nothing here blocks, so no call needs a thread.
    """

    def __init__(self) -> None:
        self._files: dict[str, bytes] = {}
        self._mtimes: dict[str, float] = {}
        self._uploads: dict[str, bytearray] = {}

    async def get(self, path: str, /) -> bytes:
        if path not in self._files:
            raise FileNotFoundError(path)
        return self._files[path]

    async def put(self, path: str, data: bytes, /) -> None:
        self._files[path] = bytes(data)
        self._mtimes[path] = time.time()

    async def stat(self, path: str, /) -> base.FileInfo | None:
        if path in self._files:
            return base.FileInfo(size=len(self._files[path]), modified=self._mtimes[path])
        prefix = path.rstrip("/") + "/"
        times = [t for p, t in self._mtimes.items() if p.startswith(prefix)]
        return base.FileInfo(size=0, modified=max(times), is_dir=True) if times else None

    async def list(self, path: str, /) -> list[str]:
        prefix = path.rstrip("/") + "/"
        return sorted({p[len(prefix) :].split("/", 1)[0] for p in self._files if p.startswith(prefix)})

    async def delete(self, path: str, /) -> None:
        prefix = path + "/"
        for table in (self._files, self._mtimes, self._uploads):
            for p in [p for p in table if p == path or p.startswith(prefix)]:
                del table[p]

    async def move(self, src: str, dst: str, /) -> None:
        if src not in self._files:
            raise FileNotFoundError(src)
        self._files[dst] = self._files.pop(src)
        self._mtimes.pop(src, None)
        self._mtimes[dst] = time.time()

    async def writer(self, path: str, /) -> AsyncMemoryWriter:
        return AsyncMemoryWriter(self, path, self._uploads.setdefault(path, bytearray()))

    async def reader(self, path: str, /, *, offset: int = 0) -> AsyncIterator[bytes]:
        data = await self.get(path)
        if offset < len(data):
            yield data[offset:]

    async def redirect_url(self, path: str, /) -> str | None:
        return None

    async def aclose(self) -> None:
        pass


class AsyncMemoryWriter:
    def __init__(self, driver: AsyncMemoryDriver, path: str, buf: bytearray) -> None:
        self._driver = driver
        self._path = path
        self._buf = buf
        self._start = len(buf)

    @property
    def size(self) -> int:
        return len(self._buf)

    async def write(self, data: bytes, /) -> None:
        self._buf.extend(data)

    async def close(self) -> None:
        pass

    async def abandon(self) -> None:
        del self._buf[self._start :]

    async def commit(self) -> None:
        await self._driver.put(self._path, bytes(self._buf))
        self._driver._uploads.pop(self._path, None)

    async def cancel(self) -> None:
        self._driver._uploads.pop(self._path, None)


def _conforms(driver: AsyncMemoryDriver) -> base.ObjectDriver:
    return driver  # mypy proves the contract is implemented
