"""Digest grammar and streaming hashers (OCI image-spec "Digests").

Owns: parsing `algorithm:encoded` strings, the set of algorithms we accept, and incremental hashers.
Must not: touch storage or HTTP. Pure and dependency free so every layer can use it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Protocol

# algorithm-component/separator grammar from the image spec; the encoded part is checked per algorithm.
_DIGEST_RE = re.compile(r"^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$")
_ENCODED = {"sha256": re.compile(r"^[a-f0-9]{64}$"), "sha512": re.compile(r"^[a-f0-9]{128}$")}


class DigestInvalidError(ValueError):
    """The string is not a digest of an algorithm we know (bad grammar or bad encoded part)."""


class DigestUnsupportedError(ValueError):
    """The string is a well-formed digest of an algorithm we do not implement."""


class Hasher(Protocol):
    @property
    def name(self) -> str: ...
    def update(self, data: bytes | memoryview, /) -> None: ...
    def hexdigest(self) -> str: ...
    def copy(self) -> Hasher: ...


@dataclasses.dataclass(frozen=True, order=True)
class Digest:
    algorithm: str
    encoded: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.encoded}"

    def hasher(self) -> Hasher:
        return new_hasher(self.algorithm)


def parse(value: str) -> Digest:
    """Parse and validate a digest; raises DigestInvalidError or DigestUnsupportedError."""
    m = _DIGEST_RE.match(value)
    if m is None:
        raise DigestInvalidError(f"invalid digest {value[:200]!r}")
    algorithm, encoded = m.group(1), m.group(2)
    pattern = _ENCODED.get(algorithm)
    if pattern is None:
        raise DigestUnsupportedError(f"unsupported digest algorithm {algorithm!r}")
    if pattern.match(encoded) is None:
        raise DigestInvalidError(f"invalid {algorithm} digest {value[:200]!r}")
    return Digest(algorithm, encoded)


def is_digest_like(value: str) -> bool:
    """True when a manifest reference is meant as a digest (it has a colon), even if invalid."""
    return ":" in value


def new_hasher(algorithm: str) -> Hasher:
    if algorithm not in _ENCODED:
        raise DigestUnsupportedError(f"unsupported digest algorithm {algorithm!r}")
    return hashlib.new(algorithm)


def of_bytes(data: bytes, *, algorithm: str = "sha256") -> Digest:
    h = new_hasher(algorithm)
    h.update(data)
    return Digest(algorithm, h.hexdigest())


def algorithms() -> tuple[str, ...]:
    return tuple(_ENCODED)
