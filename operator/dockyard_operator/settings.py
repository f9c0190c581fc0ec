"""Operator settings: one documented, immutable dataclass read from the environment once at start-up.

Owns: the names and defaults of every `DOCKYARD_*` environment variable the operator understands.
Must not: read anything but the given mapping (tests pass their own), or hold per-registry state.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping

from dockyard_operator import tenancy
from dockyard_operator.nodetrust import claims

_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


class SettingsError(ValueError):
    """An environment variable has a value the operator cannot use."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """How the operator behaves; every field maps to one environment variable."""

    registry_image: str = "ghcr.io/dockyard-dev/dockyard-registry:0.1.0"
    """DOCKYARD_REGISTRY_IMAGE: registry image used when a registry's spec.image is empty."""

    nginx_image: str = "nginx:1.27-alpine"
    """DOCKYARD_NGINX_IMAGE: the TLS/auth sidecar image (its nginx must have auth_request)."""

    resync_seconds: float = 60.0
    """DOCKYARD_RESYNC_SECONDS: period of the one drift-correcting resync loop, which asks for a pass of
    every registry once per period, spread evenly over it; tests set it low."""

    concurrent_passes: int = 16
    """DOCKYARD_CONCURRENT_PASSES: reconcile passes that run at once (1 to 1024). A thousand registries
    created together then queue instead of all holding a pass's reads, keys and manifests in memory at once;
    passes mostly wait on the API server, so a few dozen keep it as busy as a thousand would. Passes somebody
    asked for (create, update, a watch event) get a freed slot before the resync loop's."""

    bcrypt_rounds: int = 12
    """DOCKYARD_BCRYPT_ROUNDS: bcrypt cost for new htpasswd hashes (4 to 16); existing hashes are kept."""

    cluster_domain: str = "cluster.local"
    """DOCKYARD_CLUSTER_DOMAIN: the cluster DNS suffix used in certificate SANs."""

    field_manager: str = "dockyard-operator"
    """DOCKYARD_FIELD_MANAGER: the fieldManager recorded on every write."""

    namespace: str = "dockyard-system"
    """DOCKYARD_NAMESPACE (else POD_NAMESPACE): the operator's own namespace, home of the node trust
    ConfigMap and DaemonSet."""

    node_trust_image: str = "ghcr.io/dockyard-dev/dockyard-operator:0.1.0"
    """DOCKYARD_NODE_TRUST_IMAGE: image of the node trust agent (it runs this package's agent module)."""

    node_trust_allowed_hosts: tuple[str, ...] = ()
    """DOCKYARD_NODE_TRUST_ALLOWED_HOSTS: comma-separated host patterns (`registry.corp.example`,
    `*.corp.example` for any name ending in `.corp.example`, `*` for all) that any registry may have the
    nodes trust its CA for, besides the names it serves; a public registry host (docker.io, ...) only when
    named explicitly (see `nodetrust.claims`)."""

    watch_namespaces: tuple[str, ...] = ()
    """DOCKYARD_WATCH_NAMESPACES: comma-separated namespaces of a namespace-scoped install (the chart's
    watchNamespaces, also passed to kopf as --namespace): the operator then lists and reads only these
    namespaces and kopf does no cluster-wide scanning, so Roles in them suffice. Empty: every namespace."""

    ingress_annotations_allowed: tuple[str, ...] = tenancy.DEFAULT_INGRESS_ANNOTATIONS
    """DOCKYARD_INGRESS_ANNOTATIONS_ALLOWED: comma-separated annotation keys (`prefix*` for every key with
    that prefix) a registry's spec.expose.ingress.annotations may set; unset: `tenancy`'s default, empty:
    none. A key containing `snippet` is refused whatever this says (see `tenancy`)."""

    metrics_listen: str = ""
    """DOCKYARD_METRICS_LISTEN (or `--metrics-listen`): host:port of the operator's Prometheus /metrics
    (`0.0.0.0:8081`, `[::]:8081`); empty: not served."""

    metrics_url_override: str | None = None
    """DOCKYARD_METRICS_URL_OVERRIDE (tests only): read every registry's status document from this URL
    (`{namespace}` and `{name}` are replaced) instead of `http://<pod IP>:9102/status` of its pods, for a
    cluster without a pod network."""

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """(host, port) of the metrics listener, None when off."""
        return parse_listen(self.metrics_listen) if self.metrics_listen else None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        defaults = cls()
        try:
            resync = float(env.get("DOCKYARD_RESYNC_SECONDS", defaults.resync_seconds))
            rounds = int(env.get("DOCKYARD_BCRYPT_ROUNDS", defaults.bcrypt_rounds))
            passes = int(env.get("DOCKYARD_CONCURRENT_PASSES", defaults.concurrent_passes))
        except ValueError as exc:
            raise SettingsError(f"invalid number in the environment: {exc}") from None
        if resync <= 0:
            raise SettingsError("DOCKYARD_RESYNC_SECONDS must be > 0")
        if not 4 <= rounds <= 16:
            raise SettingsError("DOCKYARD_BCRYPT_ROUNDS must be between 4 and 16")
        if not 1 <= passes <= 1024:
            raise SettingsError("DOCKYARD_CONCURRENT_PASSES must be between 1 and 1024")
        allowed = tuple(
            p.strip().lower()
            for p in env.get("DOCKYARD_NODE_TRUST_ALLOWED_HOSTS", "").split(",")
            if p.strip()
        )
        for pattern in allowed:
            if not claims.PATTERN.fullmatch(pattern):
                raise SettingsError(
                    f"DOCKYARD_NODE_TRUST_ALLOWED_HOSTS: {pattern!r} is not a host pattern "
                    "(use a name, *.suffix or *)"
                )
        watched = tuple(n.strip() for n in env.get("DOCKYARD_WATCH_NAMESPACES", "").split(",") if n.strip())
        for name in watched:
            if not _NAMESPACE.fullmatch(name):
                raise SettingsError(f"DOCKYARD_WATCH_NAMESPACES: {name!r} is not a namespace name")
        raw_annotations = env.get("DOCKYARD_INGRESS_ANNOTATIONS_ALLOWED")
        annotations = (
            defaults.ingress_annotations_allowed
            if raw_annotations is None
            else tuple(p.strip() for p in raw_annotations.split(",") if p.strip())
        )
        metrics_listen = env.get("DOCKYARD_METRICS_LISTEN", "").strip()
        if metrics_listen:
            try:
                parse_listen(metrics_listen)
            except ValueError as exc:
                raise SettingsError(f"DOCKYARD_METRICS_LISTEN: {exc}") from None
        return cls(
            metrics_listen=metrics_listen,
            registry_image=env.get("DOCKYARD_REGISTRY_IMAGE", defaults.registry_image),
            nginx_image=env.get("DOCKYARD_NGINX_IMAGE", defaults.nginx_image),
            resync_seconds=resync,
            bcrypt_rounds=rounds,
            concurrent_passes=passes,
            cluster_domain=env.get("DOCKYARD_CLUSTER_DOMAIN", defaults.cluster_domain),
            field_manager=env.get("DOCKYARD_FIELD_MANAGER", defaults.field_manager),
            namespace=env.get("DOCKYARD_NAMESPACE") or env.get("POD_NAMESPACE") or defaults.namespace,
            node_trust_image=env.get("DOCKYARD_NODE_TRUST_IMAGE", defaults.node_trust_image),
            node_trust_allowed_hosts=allowed,
            ingress_annotations_allowed=annotations,
            watch_namespaces=watched,
            metrics_url_override=env.get("DOCKYARD_METRICS_URL_OVERRIDE") or None,
        )


def parse_listen(text: str) -> tuple[str, int]:
    """`host:port` (an IPv6 host in brackets) as (host, port); raises ValueError with a readable message."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not host:port (e.g. 0.0.0.0:8081)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)
