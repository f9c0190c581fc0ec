"""What the node trust agent keeps on its node: each runtime's CA files, containerd's `hosts.toml`, mirrors.

`Installer.sync` makes, under one host root, the certs.d directories of some targets (docker, containerd,
crio) equal to a `layout.Desired` (decoded from the node trust ConfigMap) and reports what it installed
(`SyncResult`); the agent process (`agent`) calls it on every change and every resync.

Guarantees: every write is a temp file + fsync + rename + directory fsync (no runtime ever reads half a CA);
unchanged files are not rewritten; directories are created with a marker file inside (created under a temp
name and renamed, so a directory without the marker was never ours) and only directories carrying that marker
are ever changed or removed; a directory someone else made for the same host is left alone and reported.
Files are never removed on shutdown: a rolling update of the DaemonSet must not make nodes distrust
registries.

Mirrors: containerd's `hosts.toml` per wired image host; with the crio target, one drop-in
`registries.conf.d/50-dockyard-mirrors.conf` where the node has that directory (podman reads it on each run,
CRI-O on reload, which the agent reports instead of doing); with the docker target, a report that Docker is
not wired (its `registry-mirrors` needs daemon.json and a restart). The report lists which runtimes were
wired for which image host.

Must not: talk to the API, or write outside `<host-root>/<certs.d dirs of its targets>` and its own drop-in
in `<host-root>/etc/containers/registries.conf.d`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from dockyard_operator.nodetrust import layout

log = logging.getLogger(__name__)

_NEW_DIR_PREFIX = ".dockyard-new-"
_TMP_SUFFIX = ".dockyard-tmp"


# ------------------------------------------------------------------------------------------- writing


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, *, mode: int = 0o644) -> bool:
    """Write `data` to `path` by temp file + fsync + rename; False (no write) when it already holds it with
    `mode`. 0o644 by default: CAs are public and runtimes may read them as any user; a file holding a
    credential is written 0o600 (the temp file has that mode from its creation on)."""
    try:
        if path.read_bytes() == data and path.stat().st_mode & 0o777 == mode:
            return False
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}{_TMP_SUFFIX}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a crash's leftover: O_EXCL below creates the file with `mode` or fails
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode & 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.chmod(mode)
    tmp.replace(path)
    _fsync_dir(path.parent)
    return True


@dataclasses.dataclass
class SyncResult:
    """What one pass did: host → installed fingerprints, problems, and how many files it changed."""

    installed: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    errors: list[str] = dataclasses.field(default_factory=list)
    mirrors: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    """Image host → runtimes now pulling it through its mirror."""
    notes: list[str] = dataclasses.field(default_factory=list)
    """Runtimes not wired, or needing a reload to see the wiring."""
    written: int = 0
    removed: int = 0


class Installer:
    """Keeps the certs.d directories of some targets under one host root equal to a `layout.Desired`."""

    def __init__(self, *, host_root: Path, targets: Sequence[layout.Target] = layout.TARGETS) -> None:
        self.host_root = host_root
        self.targets = tuple(t for t in layout.TARGETS if t in targets)

    def base(self, target: layout.Target) -> Path:
        return self.host_root / layout.CERTS_DIRS[target]

    def sync(self, desired: layout.Desired) -> SyncResult:
        result = SyncResult(errors=list(desired.errors))
        failed: set[str] = set()
        for target in self.targets:
            base = self.base(target)
            base.mkdir(parents=True, exist_ok=True)
            wanted = {host: pem for host, (pem, targets) in desired.hosts.items() if target in targets}
            for host, pem in sorted(wanted.items()):
                if not self._install(
                    target=target, host=host, files=self._files(target, host, pem), result=result
                ):
                    failed.add(host)
            wired = dict(desired.mirrors) if target == "containerd" else {}
            for host, wiring in sorted(wired.items()):
                # Only hosts.toml: containerd verifies the mirror with the registry host's own ca.crt.
                token = desired.tokens.get(host, "")
                files = {layout.HOSTS_TOML: wiring.hosts_toml(host, token=token).encode()}
                private = {layout.HOSTS_TOML} if token else set()
                if self._install(target=target, host=host, files=files, result=result, private=private):
                    result.mirrors[host] = (*result.mirrors.get(host, ()), "containerd")
            self._prune(base=base, keep=set(wanted) | set(wired), result=result)
        if "crio" in self.targets:
            self._registries_conf(desired.mirrors, result=result)
        if "docker" in self.targets and desired.mirrors:
            # Docker's registry-mirrors lives in daemon.json, covers docker.io only and needs a daemon
            # restart: the agent never touches it and says so.
            result.notes.append(layout.DOCKER_NOT_WIRED)
        for host, (pem, targets) in sorted(desired.hosts.items()):
            if host not in failed and set(targets) & set(self.targets):
                result.installed[host] = tuple(layout.fingerprints(pem))
        return result

    def _registries_conf(self, mirrors: Mapping[str, layout.MirrorWiring], *, result: SyncResult) -> None:
        """Our drop-in in the node's registries.conf.d (podman, skopeo, CRI-O), only where the node has that
        directory; removed (when it is ours) once no mirror is wired."""
        directory = self.host_root / layout.REGISTRIES_CONF_DIR
        path = directory / layout.REGISTRIES_CONF_FILE
        if not directory.is_dir():
            return
        if path.exists() and not path.read_text(errors="replace").startswith(layout.REGISTRIES_CONF_HEADER):
            result.errors.append(f"{path.relative_to(self.host_root)}: exists and was not written by us")
            return
        if not mirrors:
            if path.exists():
                path.unlink()
                _fsync_dir(directory)
                result.removed += 1
                log.info("removed %s", path)
            return
        try:
            text = layout.registries_conf(mirrors)
        except layout.LayoutError as exc:
            result.errors.append(f"{path.relative_to(self.host_root)}: {exc}")
            return
        if write_atomically(path, text.encode()):
            result.written += 1
            log.info("wrote %s", path)
        for host in sorted(mirrors):
            result.mirrors[host] = (*result.mirrors.get(host, ()), "cri-o/podman")
        result.notes.append(layout.CRIO_RELOAD)

    def _files(self, target: layout.Target, host: str, pem: str) -> dict[str, bytes]:
        files = {layout.CA_FILE: pem.encode()}
        if target == "containerd":
            files[layout.HOSTS_TOML] = layout.hosts_toml(host).encode()
        return files

    def _install(
        self,
        *,
        target: layout.Target,
        host: str,
        files: dict[str, bytes],
        result: SyncResult,
        private: set[str] | frozenset[str] = frozenset(),
    ) -> bool:
        """Write `files` into the host's directory (made with our marker when missing); the ones named in
        `private` hold a credential and are readable by root only. False: the directory is not ours."""
        directory = self.base(target) / host
        if directory.exists() and not (directory / layout.MARKER).is_file():
            result.errors.append(f"{directory.relative_to(self.host_root)}: exists and was not created by us")
            return False
        if not directory.exists():
            self._create_dir(directory)
            log.info("created %s", directory)
        for name, content in files.items():
            if write_atomically(directory / name, content, mode=0o600 if name in private else 0o644):
                result.written += 1
                log.info("wrote %s", directory / name)
        return True

    def _create_dir(self, directory: Path) -> None:
        # Built under a temp name with the marker inside, then renamed: a crash can never leave a directory
        # under the host's name that lacks the marker (and that we would then refuse to touch forever).
        staging = directory.with_name(f"{_NEW_DIR_PREFIX}{directory.name}")
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(mode=0o755)
        write_atomically(staging / layout.MARKER, layout.MARKER_TEXT.encode())
        staging.rename(directory)
        _fsync_dir(directory.parent)

    def _prune(self, *, base: Path, keep: set[str], result: SyncResult) -> None:
        for entry in sorted(base.iterdir()):
            if entry.name.startswith(_NEW_DIR_PREFIX) and entry.is_dir():
                shutil.rmtree(entry)  # a creation that crashed before its rename
                continue
            if entry.name in keep or not entry.is_dir() or entry.is_symlink():
                continue
            if not (entry / layout.MARKER).is_file():
                continue  # not ours: another registry's or the administrator's
            for name in (layout.CA_FILE, layout.HOSTS_TOML, f".{layout.CA_FILE}{_TMP_SUFFIX}",
                         f".{layout.HOSTS_TOML}{_TMP_SUFFIX}", layout.MARKER):  # fmt: skip
                with contextlib.suppress(FileNotFoundError):
                    (entry / name).unlink()
            try:
                entry.rmdir()
            except OSError:
                log.warning("left %s: it holds files we did not write", entry)
            else:
                log.info("removed %s", entry)
            _fsync_dir(base)
            result.removed += 1
