"""Repository name and tag grammars (OCI distribution spec "Pulling manifests").

Owns: validating names, tags and manifest references. Must not: do I/O.

A valid name can never contain `..`, `%`, a leading `/` or a component starting with `_`, which is what
lets `paths.py` use names directly as directory paths (and `_manifests` etc. as reserved children).
"""

from __future__ import annotations

import re

from dockyard_registry import digest

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
MAX_NAME_LENGTH = 255


class NameInvalidError(ValueError):
    pass


class TagInvalidError(ValueError):
    pass


def validate_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH:
        raise NameInvalidError(f"repository name longer than {MAX_NAME_LENGTH} characters")
    if _NAME_RE.match(name) is None:
        raise NameInvalidError(f"invalid repository name {name[:300]!r}")
    return name


def is_valid_name(name: str) -> bool:
    return len(name) <= MAX_NAME_LENGTH and _NAME_RE.match(name) is not None


def validate_tag(tag: str) -> str:
    if _TAG_RE.match(tag) is None:
        raise TagInvalidError(f"invalid tag {tag[:200]!r}")
    return tag


def parse_reference(ref: str) -> str | digest.Digest:
    """A manifest reference is a digest (when it contains a colon) or a tag."""
    if digest.is_digest_like(ref):
        return digest.parse(ref)
    return validate_tag(ref)
