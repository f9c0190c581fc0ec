"""In-memory storage driver for tests.

Owns: a dict of path -> bytes with the same observable semantics as the filesystem driver (directories
are implied by path prefixes). Must not: be used in production (nothing survives the process).
"""

from __future__ import annotations

import io
import pathlib
import threading
import time
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

    def local_path(self, path: str, /) -> pathlib.Path | None:
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
