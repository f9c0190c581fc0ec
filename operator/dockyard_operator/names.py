"""Names, labels and annotation keys of everything the operator creates for a `PrivateRegistry`.

Owns: the mapping from a registry's name to its children's names (DNS-safe, at most 63 characters, stable
for long names), the `app.kubernetes.io/*` label sets, and the annotation keys the operator writes.
Must not: touch the API, read the spec beyond the registry's name, or depend on kopf/lightkube.

Why a hash suffix for long names: a `PrivateRegistry` name may be up to 253 characters, but Service names
(DNS-1035 labels) and label values are capped at 63. Truncating alone could make two registries collide;
a short digest of the full name keeps truncated names unique and stable across restarts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

GROUP = "dockyard.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "PrivateRegistry"
PLURAL = "privateregistries"
SINGULAR = "privateregistry"
SHORT_NAMES = ("preg",)

MAX_NAME = 63
_DIGEST_LEN = 8

# Annotation keys written by the operator.
SPEC_HASH = f"{GROUP}/spec-hash"
CONFIG_HASH = f"{GROUP}/config-hash"

# On a claim kept after its registry is gone (spec.storage.pvc.deletionPolicy Retain): whose data it holds.
RETAINED_FROM = f"{GROUP}/retained-from"

# The registry container's Prometheus /metrics and /status (last gc run, storage) address: a pod port apart
# from nginx's, never proxied, for the metrics Service, a ServiceMonitor and the operator's status read.
METRICS_PORT = 9102
METRICS_PORT_NAME = "metrics"

# Label keys and constant values.
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
APP_NAME = "dockyard-registry"
MANAGED_BY = "dockyard"
PART_OF = "dockyard"

_INVALID = re.compile(r"[^a-z0-9-]+")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_DIGEST_LEN]


def dns_label(base: str, suffix: str = "") -> str:
    """A DNS-1035 label (≤63 chars, starts with a letter) made of `base` and `suffix`.

    Short, already valid names pass through unchanged (`demo` + `-tls` → `demo-tls`), so names stay
    predictable for users; anything longer or invalid gets truncated and a digest of the original.
    """
    candidate = f"{base}{suffix}"
    if len(candidate) <= MAX_NAME and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", candidate):
        return candidate
    cleaned = _INVALID.sub("-", base.lower()).strip("-") or "r"
    if not cleaned[0].isalpha():
        cleaned = f"r-{cleaned}"
    room = MAX_NAME - len(suffix) - _DIGEST_LEN - 1
    head = cleaned[:room].rstrip("-")
    return f"{head}-{_digest(base)}{suffix}"


def label_value(value: str) -> str:
    """A label value (≤63 chars, alphanumeric at both ends) that stays unique for long inputs."""
    if len(value) <= MAX_NAME and re.fullmatch(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]", value):
        return value
    head = re.sub(r"[^-A-Za-z0-9_.]", "-", value)[: MAX_NAME - _DIGEST_LEN - 1].strip("-_.")
    return f"{head}-{_digest(value)}" if head else _digest(value)


@dataclasses.dataclass(frozen=True)
class Names:
    """Every child name of one registry; build with `Names.of(name)`."""

    registry: str
    service: str
    deployment: str
    htpasswd_secret: str
    tls_secret: str
    ca_secret: str
    nginx_configmap: str
    maintenance_configmap: str
    pvc: str
    ingress: str
    metrics_service: str
    pod_disruption_budget: str
    network_policy: str

    @classmethod
    def of(cls, registry: str) -> Names:
        base = dns_label(registry)
        return cls(
            registry=registry,
            service=base,
            deployment=base,
            htpasswd_secret=dns_label(registry, "-htpasswd"),
            tls_secret=dns_label(registry, "-tls"),
            ca_secret=dns_label(registry, "-ca"),
            nginx_configmap=dns_label(registry, "-nginx"),
            maintenance_configmap=dns_label(registry, "-maintenance"),
            pvc=dns_label(registry, "-data"),
            ingress=base,
            metrics_service=dns_label(registry, "-metrics"),
            pod_disruption_budget=base,
            network_policy=base,
        )


def selector_labels(registry: str) -> dict[str, str]:
    """The labels selecting a registry's pods; they never change (Deployment selectors are immutable)."""
    return {
        LABEL_NAME: APP_NAME,
        LABEL_INSTANCE: label_value(registry),
        LABEL_COMPONENT: "registry",
    }


def labels(registry: str, *, component: str) -> dict[str, str]:
    """The full recommended label set for a child of `registry`."""
    return {
        LABEL_NAME: APP_NAME,
        LABEL_INSTANCE: label_value(registry),
        LABEL_COMPONENT: component,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_PART_OF: PART_OF,
    }


def service_hosts(service: str, namespace: str, cluster_domain: str = "cluster.local") -> list[str]:
    """The DNS names under which the Service is reachable inside the cluster, shortest first."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.{cluster_domain}",
    ]
