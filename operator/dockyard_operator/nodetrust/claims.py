"""Which hosts a registry may have every node trust its CA for: pure checks, each a (reason, message).

Why: node trust writes a registry's CA into every node's certs.d directory of each of its hosts, and for
containerd a `hosts.toml` naming that CA as the only one for the host. Without these rules whoever may
create a `PrivateRegistry` decides what every node trusts for any name: `docker.io`, `registry.k8s.io` or
another team's Service.

The rules, in order (the first that applies decides):
1. a well-known public registry host (`PUBLIC_HOSTS`) is refused unless the installer's allowlist names it
   explicitly: the exact name, or a wildcard inside one of the public wildcards (`*.azurecr.io`,
   `*.dkr.ecr.eu-west-1.amazonaws.com`); `*` or `*.io` never unlock one;
2. a loopback name (`localhost`, `127.0.0.1`) only with the registry's own node port: kube-proxy forwards
   exactly that port on every node to this registry, and the port is unique in the cluster;
3. a cluster Service name (`<svc>.<namespace>.svc[.<domain>]`) only in the registry's own namespace;
4. a name the registry serves: its serving certificate's names as the spec makes them (the Service names,
   `localhost`, `127.0.0.1`, the Ingress host, `tls.dnsNames` (`*.x` covering one label), `tls.ipAddresses`)
   or an address of its Service's load balancer;
5. a name the installer allows (`DOCKYARD_NODE_TRUST_ALLOWED_HOSTS`: exact names, `*.suffix` for any name
   ending in `.suffix`, `*` for every name);
6. anything else is refused.
The port of `name[:port]` is free except on loopback (rule 2). A refused host is not published; the
registry's `NodeTrustReady` condition names it and the rule.

Must not: do I/O, or decide which of two registries gets a host both may publish (that is `aggregate`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence

from dockyard_operator.conditions import Reason

PUBLIC_HOSTS: tuple[str, ...] = (
    "docker.io",
    "registry-1.docker.io",
    "index.docker.io",
    "registry.k8s.io",
    "k8s.gcr.io",
    "gcr.io",
    "*.gcr.io",
    "ghcr.io",
    "quay.io",
    "public.ecr.aws",
    "*.amazonaws.com",
    "mcr.microsoft.com",
    "*.azurecr.io",
    "*.pkg.dev",
)
"""Hosts of public registries that nodes pull from: never taken over by a registry unless allowed by name."""

LOOPBACK = ("localhost", "127.0.0.1")

PATTERN = re.compile(r"^(\*|(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)$")
"""An allowlist entry: `*`, an exact name or IPv4 address, or `*.suffix`."""


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Whether one host may be published (`ok`), with a `conditions.Reason` and a message naming the host."""

    ok: bool
    reason: Reason
    message: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class Served:
    """What a registry really serves, as far as the rules above need to know."""

    namespace: str
    cluster_domain: str = "cluster.local"
    names: Sequence[str] = ()
    """The serving certificate's DNS names and IPs (as the spec makes them, or a BYO certificate's), and
    the load balancer's addresses."""
    node_port: int | None = None
    """The https node port of its Service (NodePort and LoadBalancer only)."""


def matches(pattern: str, name: str) -> bool:
    """Allowlist semantics: `*` matches all, `*.suffix` any name ending in `.suffix`, else equality."""
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return name.endswith(pattern[1:])
    return name == pattern


def public_entry(name: str) -> str | None:
    """The `PUBLIC_HOSTS` entry that `name` falls under, if any."""
    return next((entry for entry in PUBLIC_HOSTS if matches(entry, name)), None)


def names_explicitly(pattern: str, name: str) -> bool:
    """Whether an allowlist entry names a public host on purpose: the name itself, or a wildcard that lies
    wholly inside a public wildcard (`*.azurecr.io`, `*.dkr.ecr.eu-west-1.amazonaws.com`)."""
    if pattern == name:
        return True
    if not pattern.startswith("*.") or not matches(pattern, name):
        return False
    suffix = pattern[1:]  # ".azurecr.io"
    return any(
        entry.startswith("*.") and (suffix == entry[1:] or suffix.endswith(entry[1:]))
        for entry in PUBLIC_HOSTS
    )


def _served(pattern: str, name: str) -> bool:
    """Certificate name semantics: `*.x` covers exactly one more label."""
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return name == pattern


def _service_namespace(name: str, cluster_domain: str) -> str | None:
    """The namespace in `<svc>.<namespace>.svc[.<domain>]`, None for any other name."""
    for suffix in (".svc", f".svc.{cluster_domain}"):
        if name.endswith(suffix):
            labels = name[: -len(suffix)].split(".")
            if len(labels) == 2 and all(labels):
                return labels[1]
    return None


def verdict(host: str, *, served: Served, allowed: Sequence[str] = ()) -> Verdict:
    """Whether `host` (`name[:port]`) may carry this registry's CA on every node, and why."""
    name, _, port = host.lower().partition(":")
    public = public_entry(name)
    if public is not None:
        if any(names_explicitly(pattern, name) for pattern in allowed):
            return Verdict(True, Reason.ALLOWED, f"host {host} is allowed by the operator's allowed hosts")
        return Verdict(
            False,
            Reason.PUBLIC_REGISTRY_HOST,
            f"host {host} is a public registry ({public}); nodes keep trusting it as they do "
            "unless the operator's allowed hosts name it explicitly",
        )
    if name in LOOPBACK:
        if served.node_port is not None and port == str(served.node_port):
            return Verdict(True, Reason.NODE_PORT, f"host {host} is the registry's own node port")
        return Verdict(
            False,
            Reason.NOT_OWN_NODE_PORT,
            f"host {host} is loopback on a port that is not this registry's node port "
            f"({served.node_port if served.node_port is not None else 'none'})",
        )
    namespace = _service_namespace(name, served.cluster_domain)
    if namespace is not None and namespace != served.namespace:
        return Verdict(
            False,
            Reason.FOREIGN_SERVICE_NAME,
            f"host {host} is a Service name of namespace {namespace}, not of {served.namespace}",
        )
    if any(_served(pattern.lower(), name) for pattern in served.names):
        return Verdict(True, Reason.SERVED, f"host {host} is a name of the registry's serving certificate")
    if any(matches(pattern, name) for pattern in allowed):
        return Verdict(True, Reason.ALLOWED, f"host {host} is allowed by the operator's allowed hosts")
    return Verdict(
        False,
        Reason.NOT_SERVED,
        f"host {host} is neither a name of the registry's certificate (add it to spec.tls.dnsNames or "
        "spec.tls.ipAddresses) nor in the operator's allowed hosts",
    )


def screen(
    hosts: Iterable[str], *, served: Served, allowed: Sequence[str] = ()
) -> tuple[tuple[str, ...], tuple[Verdict, ...]]:
    """(the hosts that may be published, in order; the refusals, one per refused host)."""
    accepted: list[str] = []
    refused: list[Verdict] = []
    for host in hosts:
        found = verdict(host, served=served, allowed=allowed)
        if found.ok:
            accepted.append(host)
        else:
            refused.append(found)
    return tuple(accepted), tuple(refused)
