"""The TLS trust of one mirrored upstream: the system CAs plus the mirror's `caFile`, reloaded on change.

Owns: building the client SSL context of an upstream with a CA bundle, and telling whether the bundle
file changed since it was loaded, by its stat (device, inode, size, mtime, ctime; followed through
symlinks, so kubelet's swap of a mounted Secret, a flip of the `..data` symlink, is seen like an
in-place rewrite). Both are blocking (a stat, and parsing the system's CA bundle: tens of
milliseconds): upstream.Client calls them in a worker thread.
Must not: keep state of its own (upstream.Client holds the loaded context and its stamp) or know HTTP.
"""

from __future__ import annotations

import dataclasses
import os
import ssl
from pathlib import Path


class CaBundleError(Exception):
    """The CA bundle cannot be read or holds no usable certificate; the message names the file.

    `stamp` is the version of the file that failed (None when it could not even be looked at), so the
    same broken file is not parsed again at every check.
    """

    def __init__(self, message: str, *, stamp: Stamp | None = None) -> None:
        super().__init__(message)
        self.stamp = stamp


@dataclasses.dataclass(frozen=True)
class Stamp:
    """What identifies one version of a file on disk, without reading it."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int


@dataclasses.dataclass(frozen=True)
class Loaded:
    """A CA bundle turned into an SSL context, with the stamp of the file it was read from."""

    stamp: Stamp
    context: ssl.SSLContext


def stamp(path: Path) -> Stamp:
    """The stamp of `path` (through symlinks); CaBundleError when it cannot be looked at."""
    try:
        found = os.stat(path)
    except OSError as exc:
        raise CaBundleError(f"cannot read CA bundle {path}: {exc.strerror or type(exc).__name__}") from None
    return Stamp(found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns)


def load(path: Path) -> Loaded:
    """A context trusting the system CAs (an upstream may redirect blob downloads to a CDN with a public
    certificate) and the bundle at `path`; CaBundleError when the file cannot be read or parsed.

    The stamp is taken before the file is read: a file replaced while being read differs from it, so
    the next check loads the file again.
    """
    before = stamp(path)
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        raise CaBundleError(f"cannot load CA bundle {path}: {exc}", stamp=before) from None
    return Loaded(before, context)


def reload_if_changed(path: Path, known: Stamp | None) -> Loaded | None:
    """The bundle at `path` loaded anew when its stamp is not `known` (the version last tried, loaded or
    not); None when it is unchanged."""
    if known is not None and stamp(path) == known:
        return None
    return load(path)
