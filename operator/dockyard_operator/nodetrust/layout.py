"""What the operator and the node agent agree on: keys, file locations, file contents, the node report.

Owns:
- the ConfigMap key of a registry host: `host[:port]` with `:` written as `..` (ConfigMap keys may only
  hold `[-._a-zA-Z0-9]`; OpenShift's node-ca uses the same encoding, and a DNS name never contains `..`, so
  decoding is unambiguous), plus the one reserved key `_targets.json` (host names never start with `_`)
  that narrows hosts to some runtimes;
- where each runtime (target) looks for a host's CA, relative to the node's root file system:
  ```
  etc/docker/certs.d/<host[:port]>/ca.crt          docker        (also read by podman/CRI-O as fallback)
  etc/containerd/certs.d/<host[:port]>/ca.crt      containerd    (config_path; no restart needed)
  etc/containerd/certs.d/<host[:port]>/hosts.toml
  etc/containers/certs.d/<host[:port]>/ca.crt      crio          (CRI-O, podman, skopeo, buildah)
  ```
  and the marker file the agent leaves in each directory it created (it never touches one without it);
- the `hosts.toml` text, CA bundle fingerprints, and the JSON report the agent writes on its Pod.

Must not: touch files, the clock or the API: both sides import this, and the tests pin it down.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes

Target = Literal["docker", "containerd", "crio"]
TARGETS: tuple[Target, ...] = ("docker", "containerd", "crio")

TARGETS_KEY = "_targets.json"
"""Reserved ConfigMap key: {host key: [targets]}; hosts missing from it get every target."""

MIRRORS_KEY = "_mirrors.json"
"""Reserved ConfigMap key: {image host: {"upstream", "registry", "prefix"}}: image hosts containerd pulls
through a Dockyard pull-through mirror (its `hosts.toml` only; the registry host's CA is its own entry)."""

NODE_CREDENTIALS = "dockyard-node-trust-credentials"
"""The Secret next to the ConfigMap (the agent mounts both) holding, per image host key (`host_key`), the
node credential containerd sends a mirror that takes no anonymous pulls: a registry token granting pull on
that mirror's prefix only, minted by the operator and replaced each half of its lifetime. A Secret, so the
ConfigMap stays free of credentials; `hosts.toml` files holding one are written readable by root only."""
_TOKEN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
"""A compact JWS: nothing a TOML string would need escaped."""

MARKER = ".dockyard-node-trust"
"""File the agent writes into every directory it created; its content says who and why."""
MARKER_TEXT = "created by the Dockyard node trust agent; removed when the host leaves its ConfigMap\n"
CA_FILE = "ca.crt"
HOSTS_TOML = "hosts.toml"

REPORT_ANNOTATION = "dockyard.dev/node-trust"
"""Annotation on the agent's own Pod: the JSON `Report` of what it installed."""

CERTS_DIRS: dict[Target, str] = {
    "docker": "etc/docker/certs.d",
    "containerd": "etc/containerd/certs.d",
    "crio": "etc/containers/certs.d",
}
"""Per target: the directory (relative to the node's root) holding one subdirectory per host."""

# host or IPv4 address, optional port; bracketed IPv6 literals are not representable as keys and are refused.
_LABEL = r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?"
_HOST = re.compile(rf"^{_LABEL}(\.{_LABEL})*(:[0-9]{{1,5}})?$")


class LayoutError(ValueError):
    """A host, key or report that cannot be used; the message names it."""


def check_host(host: str) -> str:
    """`host` if it is a usable `name[:port]` (DNS name or IPv4 address), else LayoutError."""
    if len(host) > 253 or not _HOST.fullmatch(host):
        raise LayoutError(f"{host!r} is not a registry host (expected name[:port])")
    if ":" in host and not 0 < int(host.rsplit(":", 1)[1]) < 65536:
        raise LayoutError(f"{host!r} has a port outside 1-65535")
    return host


def host_key(host: str) -> str:
    """The ConfigMap key of `host`: `localhost:30500` → `localhost..30500`."""
    return check_host(host).replace(":", "..")


def key_host(key: str) -> str:
    """The host of a ConfigMap key: `localhost..30500` → `localhost:30500`; LayoutError for anything else."""
    host = key.replace("..", ":")
    if host.count(":") > 1:
        raise LayoutError(f"ConfigMap key {key!r} is not an encoded host")
    return check_host(host)


def ca_path(target: Target, host: str) -> str:
    """Where `target` reads the CA of `host`, relative to the node's root."""
    return f"{CERTS_DIRS[target]}/{check_host(host)}/{CA_FILE}"


def hosts_toml(host: str) -> str:
    """containerd's per-host config: talk to `https://<host>` and verify it against our CA only.

    The `ca` path is absolute as the node sees it, so it does not depend on how containerd resolves relative
    paths; `push` is included so `ctr`/`nerdctl` pushes on the node work like pulls.
    """
    check_host(host)
    return (
        "# Written by the Dockyard node trust agent; edits are overwritten.\n"
        f'server = "https://{host}"\n'
        "\n"
        f'[host."https://{host}"]\n'
        '  capabilities = ["pull", "resolve", "push"]\n'
        f'  ca = "/{ca_path("containerd", host)}"\n'
    )


def mirror_hosts_toml(*, host: str, upstream: str, registry_host: str, prefix: str, token: str = "") -> str:
    """containerd's config for an image host a Dockyard pull-through mirror stands in for.

    Pods keep image names of `host` (say `docker.io/library/nginx`); containerd asks the first `[host]`,
    the registry's mirror prefix (`override_path`: the path, `/v2/<prefix>`, replaces containerd's own
    `/v2`), for pull and resolve only, verified against the registry's CA as installed for
    `registry_host`; when that fails it falls back to `server`, the upstream itself. With `token` (the
    node credential of a mirror that takes no anonymous pulls) containerd sends it to that host, and only
    to it, as a Bearer `Authorization` header; the file then holds a credential (see `NODE_CREDENTIALS`).
    """
    check_host(host)
    check_host(registry_host)
    if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?", upstream):
        raise LayoutError(f"{upstream!r} is not an upstream URL (expected http(s)://host[:port])")
    if not re.fullmatch(r"[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*", prefix):
        raise LayoutError(f"{prefix!r} is not a repository prefix")
    if token and not _TOKEN.fullmatch(token):
        raise LayoutError("the node credential is not a token (expected a JWT)")
    text = (
        "# Written by the Dockyard node trust agent; edits are overwritten.\n"
        f'server = "{upstream}"\n'
        "\n"
        f'[host."https://{registry_host}/v2/{prefix}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
        f'  ca = "/{ca_path("containerd", registry_host)}"\n'
        "  override_path = true\n"
    )
    if token:
        text += (
            f'  [host."https://{registry_host}/v2/{prefix}".header]\n    Authorization = "Bearer {token}"\n'
        )
    return text


REGISTRIES_CONF_DIR = "etc/containers/registries.conf.d"
"""containers-registries.conf(5) drop-ins: podman/skopeo/buildah read them on each run, CRI-O on reload."""
REGISTRIES_CONF_FILE = "50-dockyard-mirrors.conf"
"""The one drop-in the agent owns there (its first line says so); any other file is left alone."""
REGISTRIES_CONF_HEADER = "# Written by the Dockyard node trust agent; edits are overwritten.\n"
DOCKER_NOT_WIRED = "docker: not wired (needs daemon.json registry-mirrors and a restart; docker.io only)"
CRIO_RELOAD = (
    "cri-o/podman: registries.conf.d drop-in written (podman reads it on its next run; "
    "CRI-O only after `systemctl reload crio`)"
)


def registries_conf(mirrors: Mapping[str, MirrorWiring]) -> str:
    """The containers-registries.conf v2 drop-in for the image hosts wired to mirrors: each host keeps its
    own location (the fallback) and gets the registry's mirror prefix as its first mirror. The mirror's CA is
    the one already published for the registry host under /etc/containers/certs.d."""
    lines = [REGISTRIES_CONF_HEADER.rstrip("\n")]
    for host, wiring in sorted(mirrors.items()):
        check_host(host)
        check_host(wiring.registry)
        if not re.fullmatch(r"[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*", wiring.prefix):
            raise LayoutError(f"{wiring.prefix!r} is not a repository prefix")
        lines += [
            "",
            "[[registry]]",
            f'prefix = "{host}"',
            f'location = "{host}"',
            "",
            "[[registry.mirror]]",
            f'location = "{wiring.registry}/{wiring.prefix}"',
        ]
    return "\n".join(lines) + "\n"


def split_pem(bundle: str) -> list[str]:
    """The certificates of a PEM bundle, each normalized to end in a newline; LayoutError if none/invalid."""
    blocks = re.findall(r"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----", bundle, flags=re.S)
    if not blocks:
        raise LayoutError("no PEM certificate found")
    try:
        for block in blocks:
            x509.load_pem_x509_certificate(block.encode())
    except ValueError as exc:
        raise LayoutError(f"invalid PEM certificate: {exc}") from None
    return [block.replace("\r\n", "\n") + "\n" for block in blocks]


def fingerprint(pem: str) -> str:
    """SHA-256 fingerprint of one PEM certificate, as the operator's status shows it (`AB:CD:…`)."""
    digest = x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA256()).hex().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def fingerprints(bundle: str) -> list[str]:
    """Fingerprints of every certificate in a PEM bundle, in bundle order."""
    return [fingerprint(pem) for pem in split_pem(bundle)]


def bundle(pems: Iterable[str]) -> str:
    """One PEM bundle of several CAs, deduplicated, in the given order (for publishing old and new CA)."""
    seen: dict[str, str] = {}
    for pem in pems:
        for cert in split_pem(pem):
            seen.setdefault(fingerprint(cert), cert)
    return "".join(seen.values())


@dataclasses.dataclass(frozen=True)
class MirrorWiring:
    """An image host that containerd pulls through a Dockyard mirror, falling back to `upstream`."""

    upstream: str
    registry: str
    """The Dockyard registry's host[:port] as nodes reach it (its CA is published under that host)."""
    prefix: str

    def hosts_toml(self, host: str, *, token: str = "") -> str:
        return mirror_hosts_toml(
            host=host, upstream=self.upstream, registry_host=self.registry, prefix=self.prefix, token=token
        )

    def to_json(self) -> dict[str, str]:
        return {"upstream": self.upstream, "registry": self.registry, "prefix": self.prefix}


@dataclasses.dataclass(frozen=True)
class Desired:
    """What one node should hold, decoded from the ConfigMap: host → (CA bundle, targets), and the image
    hosts wired to a mirror (containerd only)."""

    hosts: Mapping[str, tuple[str, tuple[Target, ...]]]
    errors: tuple[str, ...] = ()
    """Keys that could not be used (bad key, bad PEM, bad target); reported, never written."""
    mirrors: Mapping[str, MirrorWiring] = dataclasses.field(default_factory=dict)
    tokens: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Image host → node credential for its mirror (from the `NODE_CREDENTIALS` Secret)."""


def decode_credentials(data: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The node credentials Secret's data → (image host → token, problems); a problem names the key only,
    never the value."""
    tokens: dict[str, str] = {}
    errors: list[str] = []
    for key in sorted(data):
        try:
            host = key_host(key)
        except LayoutError as exc:
            errors.append(f"{NODE_CREDENTIALS}: {exc}")
            continue
        token = data[key].strip()
        if not _TOKEN.fullmatch(token):
            errors.append(f"{NODE_CREDENTIALS}: {key}: not a token")
            continue
        tokens[host] = token
    return tokens, errors


def decode(data: Mapping[str, str]) -> Desired:
    """The ConfigMap's data → `Desired`; bad entries are skipped and named in `errors`, never half-applied."""
    errors: list[str] = []
    targets_of: dict[str, tuple[Target, ...]] = {}
    raw_targets = data.get(TARGETS_KEY)
    if raw_targets is not None:
        try:
            parsed = json.loads(raw_targets)
            if not isinstance(parsed, dict):
                raise ValueError("not an object")
            for key, names in parsed.items():
                chosen = tuple(t for t in TARGETS if t in names)
                if not isinstance(names, list) or len(chosen) != len(set(names)):
                    errors.append(f"{TARGETS_KEY}: {key}: unknown target in {names!r}")
                targets_of[str(key)] = chosen
        except ValueError as exc:
            errors.append(f"{TARGETS_KEY}: {exc}")
    hosts: dict[str, tuple[str, tuple[Target, ...]]] = {}
    for key in sorted(data):
        if key in (TARGETS_KEY, MIRRORS_KEY):
            continue
        try:
            host = key_host(key)
            pem = "".join(split_pem(data[key]))
        except LayoutError as exc:
            errors.append(f"{key}: {exc}")
            continue
        hosts[host] = (pem, targets_of.get(key, TARGETS))
    mirrors = _decode_mirrors(data.get(MIRRORS_KEY), hosts=hosts, errors=errors)
    return Desired(hosts=hosts, errors=tuple(errors), mirrors=mirrors)


def _decode_mirrors(
    raw: str | None, *, hosts: Mapping[str, tuple[str, tuple[Target, ...]]], errors: list[str]
) -> dict[str, MirrorWiring]:
    if raw is None:
        return {}
    try:
        parsed = json.loads(raw)
        if not isinstance(parsed, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        errors.append(f"{MIRRORS_KEY}: {exc}")
        return {}
    mirrors: dict[str, MirrorWiring] = {}
    for host, entry in sorted(parsed.items()):
        try:
            if not isinstance(entry, dict):
                raise LayoutError("not an object")
            wiring = MirrorWiring(
                upstream=str(entry.get("upstream")),
                registry=str(entry.get("registry")),
                prefix=str(entry.get("prefix")),
            )
            wiring.hosts_toml(str(host))  # validates every part
            if host in hosts:
                raise LayoutError("is also a registry host of its own")
            if wiring.registry not in hosts:
                raise LayoutError(f"names registry {wiring.registry}, whose CA is not published")
        except LayoutError as exc:
            errors.append(f"{MIRRORS_KEY}: {host}: {exc}")
            continue
        mirrors[str(host)] = wiring
    return mirrors


def encode(
    hosts: Mapping[str, tuple[str, Iterable[Target]]], *, mirrors: Mapping[str, MirrorWiring] | None = None
) -> dict[str, str]:
    """host → (CA bundle, targets) as ConfigMap data; `_targets.json` lists only hosts with fewer targets;
    `_mirrors.json` the image hosts wired to a mirror, when there are any."""
    data: dict[str, str] = {}
    narrowed: dict[str, list[Target]] = {}
    for host, (pem, targets) in sorted(hosts.items()):
        key = host_key(host)
        data[key] = bundle([pem])
        chosen = [t for t in TARGETS if t in set(targets)]
        if chosen != list(TARGETS):
            narrowed[key] = chosen
    if narrowed:
        data[TARGETS_KEY] = json.dumps(narrowed, sort_keys=True, separators=(",", ":"))
    if mirrors:
        wired = {host: wiring.to_json() for host, wiring in sorted(mirrors.items())}
        data[MIRRORS_KEY] = json.dumps(wired, sort_keys=True, separators=(",", ":"))
    return data


def content_hash(data: Mapping[str, str]) -> str:
    """A short digest of ConfigMap data: the agent reports which version it applied."""
    text = json.dumps(dict(data), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Report:
    """What one node's agent installed: host → CA fingerprints, for ConfigMap version `applied`."""

    node: str
    applied: str
    hosts: Mapping[str, tuple[str, ...]]
    errors: tuple[str, ...] = ()
    mirrors: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    """Image host wired to a mirror → the runtimes wired for it (containerd, cri-o/podman)."""
    notes: tuple[str, ...] = ()
    """Runtimes that are not wired or need a reload to see the wiring (one line each)."""

    def to_json(self) -> str:
        doc: dict[str, object] = {
            "node": self.node,
            "applied": self.applied,
            "hosts": {h: list(f) for h, f in sorted(self.hosts.items())},
            "errors": list(self.errors),
        }
        if self.mirrors:  # only then: reports of agents without mirrors stay as they were
            doc["mirrors"] = {h: list(r) for h, r in sorted(self.mirrors.items())}
        if self.notes:
            doc["notes"] = list(self.notes)
        return json.dumps(
            doc,
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Report:
        """Parse a report; LayoutError for anything that is not one (an annotation a human edited)."""
        try:
            raw = json.loads(text)
            hosts = {str(h): tuple(str(f) for f in fps) for h, fps in dict(raw.get("hosts") or {}).items()}
            return cls(
                node=str(raw["node"]),
                applied=str(raw["applied"]),
                hosts=hosts,
                errors=tuple(str(e) for e in raw.get("errors") or []),
                mirrors={
                    str(h): tuple(str(r) for r in rs) for h, rs in dict(raw.get("mirrors") or {}).items()
                },
                notes=tuple(str(n) for n in raw.get("notes") or []),
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise LayoutError(f"not a node trust report: {exc}") from None
