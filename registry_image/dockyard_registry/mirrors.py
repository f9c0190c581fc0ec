"""The pull-through mirror configuration: which repository prefixes stand in for which upstream registries.

Owns: reading and validating the mirrors file (`serve --mirrors FILE`) into frozen settings, and mapping a
repository name onto the mirror (and upstream repository) it belongs to. Must not: talk to an upstream
(mirror.py and upstream.py do) nor hold a credential's value: only the paths of the files holding them,
read when a request needs them (so a rotated Secret takes effect without a restart, and a password never
sits in a settings object that might be logged).

The file (YAML):

    mirrors:
      - prefix: dockerhub                      # repositories dockerhub/<upstream name> are this mirror
        upstream: https://registry-1.docker.io # scheme and host (and port) only
        usernameFile: /run/secrets/hub/username   # optional; both or neither
        passwordFile: /run/secrets/hub/password
        caFile: /etc/dockyard/hub-ca.pem       # optional: trust this CA bundle too (and the system CAs)
        tagTTL: 5m                             # optional (default 5m): trust a cached tag this long
        anonymousPull: false                   # optional: pulls under the prefix need no credentials;
                                               # default true only without credentials (public content)

A prefix is one or more repository-name components; prefixes may not nest (one name, one mirror).
A mirror's `anonymousPull` opens its prefix only (auth.Authenticator enforces it): nodes wired to the
mirror send the registry no credentials, and the rest of the registry stays closed to them.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from pathlib import Path
from typing import Any

import yaml

from dockyard_registry import reference, retention

DEFAULT_TAG_TTL = 300.0
_KEYS = frozenset({"prefix", "upstream", "usernameFile", "passwordFile", "caFile", "tagTTL", "anonymousPull"})


class MirrorConfigError(ValueError):
    """The mirrors file is unreadable or invalid; the message names the entry and the field."""


@dataclasses.dataclass(frozen=True)
class Credentials:
    """Where the upstream username and password are; read on use, never stored here."""

    username_file: Path
    password_file: Path

    def read(self) -> tuple[str, str]:
        """(username, password), surrounding whitespace (a Secret's trailing newline) stripped."""
        try:
            return (
                self.username_file.read_text(encoding="utf-8").strip(),
                self.password_file.read_text(encoding="utf-8").strip(),
            )
        except (OSError, UnicodeDecodeError) as exc:
            raise MirrorConfigError(f"cannot read upstream credentials: {type(exc).__name__}") from None


@dataclasses.dataclass(frozen=True)
class Mirror:
    prefix: str
    upstream: str  # scheme://host[:port], no trailing slash
    credentials: Credentials | None = None
    ca_file: Path | None = None
    tag_ttl: float = DEFAULT_TAG_TTL
    anonymous_pull: bool = False  # pulls under the prefix without credentials (parse() picks the default)

    @property
    def repositories(self) -> str:
        """The repositories of this mirror as an access glob (`hub/**`)."""
        return f"{self.prefix}/**"

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.upstream).netloc

    def upstream_name(self, name: str) -> str:
        """The upstream repository of a repository under this mirror's prefix."""
        return name[len(self.prefix) + 1 :]


@dataclasses.dataclass(frozen=True)
class Mirrors:
    entries: tuple[Mirror, ...] = ()

    def find(self, name: str) -> Mirror | None:
        """The mirror whose prefix `name` lies under (the prefix itself is not a repository of it)."""
        for entry in self.entries:
            if name.startswith(entry.prefix + "/"):
                return entry
        return None

    @property
    def anonymous_pull_repositories(self) -> tuple[str, ...]:
        """Globs of the repositories anyone may pull without credentials (the mirrors that allow it)."""
        return tuple(entry.repositories for entry in self.entries if entry.anonymous_pull)

    def covers(self, name: str) -> Mirror | None:
        """The mirror `name` lies under or is the prefix of: where pushes are refused."""
        for entry in self.entries:
            if name == entry.prefix or name.startswith(entry.prefix + "/"):
                return entry
        return None


def load(path: Path) -> Mirrors:
    """Parse a mirrors file; MirrorConfigError with a message naming what is wrong."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MirrorConfigError(f"cannot read mirrors file {path}: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise MirrorConfigError(f"mirrors file {path} is not valid YAML: {exc}") from None
    return parse(doc, base=path.parent)


def parse(doc: Any, *, base: Path) -> Mirrors:
    """Validate a parsed mirrors document; relative file paths are relative to `base`."""
    if doc is None:
        return Mirrors()
    if not isinstance(doc, dict) or set(doc) - {"mirrors"}:
        raise MirrorConfigError("the mirrors file must be a mapping with one key, `mirrors`")
    items = doc.get("mirrors") or []
    if not isinstance(items, list):
        raise MirrorConfigError("`mirrors` must be a list")
    entries = tuple(_entry(item, index=i, base=base) for i, item in enumerate(items))
    for i, a in enumerate(entries):
        for b in entries[i + 1 :]:
            if (
                a.prefix == b.prefix
                or a.prefix.startswith(b.prefix + "/")
                or b.prefix.startswith(a.prefix + "/")
            ):
                raise MirrorConfigError(f"mirror prefixes {a.prefix!r} and {b.prefix!r} overlap")
    return Mirrors(entries)


def _entry(item: Any, *, index: int, base: Path) -> Mirror:
    where = f"mirrors[{index}]"
    if not isinstance(item, dict):
        raise MirrorConfigError(f"{where} must be a mapping")
    unknown = set(item) - _KEYS
    if unknown:
        raise MirrorConfigError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    prefix = item.get("prefix")
    if not isinstance(prefix, str) or not reference.is_valid_name(prefix):
        raise MirrorConfigError(f"{where}.prefix must be a valid repository name, got {prefix!r}")
    upstream = _upstream(item.get("upstream"), where=where)
    username, password = item.get("usernameFile"), item.get("passwordFile")
    if (username is None) != (password is None):
        raise MirrorConfigError(f"{where}: give both usernameFile and passwordFile, or neither")
    credentials = None
    if username is not None:
        credentials = Credentials(
            username_file=_path(username, field=f"{where}.usernameFile", base=base),
            password_file=_path(password, field=f"{where}.passwordFile", base=base),
        )
    ca = item.get("caFile")
    ttl = item.get("tagTTL", DEFAULT_TAG_TTL)
    try:
        tag_ttl = float(ttl) if isinstance(ttl, int | float) and not isinstance(ttl, bool) else None
        if tag_ttl is None and isinstance(ttl, str):
            tag_ttl = retention.parse_duration(ttl)
    except ValueError:
        tag_ttl = None
    if tag_ttl is None or tag_ttl < 0:
        raise MirrorConfigError(f"{where}.tagTTL must be a duration such as 300, 90s or 5m, got {ttl!r}")
    # Default: open only what is public anyway (an upstream asked without credentials).
    anonymous = item.get("anonymousPull", credentials is None)
    if not isinstance(anonymous, bool):
        raise MirrorConfigError(f"{where}.anonymousPull must be true or false, got {anonymous!r}")
    return Mirror(
        prefix=prefix,
        upstream=upstream,
        credentials=credentials,
        ca_file=None if ca is None else _path(ca, field=f"{where}.caFile", base=base),
        tag_ttl=tag_ttl,
        anonymous_pull=anonymous,
    )


def _upstream(value: Any, *, where: str) -> str:
    if not isinstance(value, str):
        raise MirrorConfigError(f"{where}.upstream must be a URL such as https://registry-1.docker.io")
    try:
        parts = urllib.parse.urlsplit(value.strip())
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.password is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise MirrorConfigError(
            f"{where}.upstream must be http(s)://host[:port] without credentials or path, got {value!r}"
        )
    return f"{parts.scheme}://{parts.netloc}"


def _path(value: Any, *, field: str, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise MirrorConfigError(f"{field} must be a file path")
    return base / value
