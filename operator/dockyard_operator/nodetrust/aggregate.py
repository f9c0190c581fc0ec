"""Every `PrivateRegistry` that wants node trust → the data of the one node trust ConfigMap.

Owns: which hosts a registry asks for by default (every name a node's runtime may use to pull from it) and
the merge of all registries into one `host → CA bundle` map, deterministic for the same input (so the
operator's spec-hash comparison skips no-op writes), with conflicts named instead of resolved silently: a
published host keeps its owner while that registry still claims it, a new one goes to the oldest claimant.

Default hosts, and why (the serving certificate carries every one of these names but the load balancer's):
- NodePort or LoadBalancer with a node port: `localhost:<nodePort>` and `127.0.0.1:<nodePort>`: on every node
  kube-proxy forwards the node port on loopback, so one image reference works on all nodes (the kind recipe's
  `localhost:<port>` form, KEP-1755);
- LoadBalancer: each ingress IP or hostname of the Service's status, port 443 (written without the port, as
  runtimes look the directory up by the reference's host);
- Ingress: its host (port 443);
- always the Service's fully qualified name (`<svc>.<ns>.svc.<domain>`, port 443), for nodes whose resolver
  forwards to cluster DNS;
- plus `nodeTrust.hostnames` as given.
`claims` decides which of these a registry may publish at all; this module merges what passed.

Must not: read anything, or decide CA rotation (that is `rotation`): it publishes the bundles it is given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence

from dockyard_operator.conditions import Reason
from dockyard_operator.nodetrust import layout


@dataclasses.dataclass(frozen=True, kw_only=True)
class Exposure:
    """How one registry is reachable, as far as nodes are concerned (from its spec and its live Service)."""

    service: str
    namespace: str
    cluster_domain: str = "cluster.local"
    service_type: str = "ClusterIP"
    node_port: int | None = None
    """The Service's https node port (assigned by Kubernetes when the spec leaves it empty)."""
    load_balancer: Sequence[str] = ()
    """`status.loadBalancer.ingress[*].ip|hostname` of the Service."""
    ingress_host: str | None = None


def default_hosts(exposure: Exposure, *, extra: Iterable[str] = ()) -> list[str]:
    """Every host[:port] a node may pull from, in a stable order, without duplicates."""
    hosts = [f"{exposure.service}.{exposure.namespace}.svc.{exposure.cluster_domain}"]
    if exposure.service_type in ("NodePort", "LoadBalancer") and exposure.node_port is not None:
        hosts += [f"localhost:{exposure.node_port}", f"127.0.0.1:{exposure.node_port}"]
    if exposure.service_type == "LoadBalancer":
        hosts += list(exposure.load_balancer)
    if exposure.ingress_host:
        hosts.append(exposure.ingress_host)
    hosts += list(extra)
    return list(dict.fromkeys(hosts))


@dataclasses.dataclass(frozen=True, kw_only=True)
class RegistryTrust:
    """One registry's contribution: the CAs nodes must trust for its hosts, for some runtimes."""

    namespace: str
    name: str
    hosts: Sequence[str]
    """Hosts that passed `claims` (a host this function is given is published unless another owns it)."""
    ca_pems: Sequence[str]
    """CA certificates to publish: the current one, plus the next one while a rotation is staged."""
    targets: Sequence[layout.Target] = layout.TARGETS
    created: str = ""
    """The registry's `metadata.creationTimestamp` (RFC 3339, UTC), which orders first claims."""


Key = tuple[str, str]


@dataclasses.dataclass(frozen=True)
class Problem:
    """Why some of a registry's node trust is not published: a `conditions.Reason` and a message."""

    reason: Reason
    message: str


@dataclasses.dataclass(frozen=True)
class Aggregate:
    """The ConfigMap data, who owns each host, and what could not be published (with reasons)."""

    data: dict[str, str]
    owners: dict[str, Key]
    """host → (namespace, name) of the registry whose CA it carries."""
    problems: dict[Key, list[Problem]]
    """(namespace, name) → problems (a host another registry holds, an unusable host or CA)."""


def first_come(registry: RegistryTrust) -> tuple[bool, str, str, str]:
    """The claim order: oldest registry first (unknown age last), then namespace and name."""
    return (not registry.created, registry.created, registry.namespace, registry.name)


def aggregate(registries: Iterable[RegistryTrust], *, previous: Mapping[str, Key] | None = None) -> Aggregate:
    """Merge every registry; a host claimed by two registries keeps the owner it was published for.

    `previous` is the last published host → owner map: a host stays with that owner as long as it still
    claims the host. A host nobody held goes to the first claimant by `first_come` (creation time, then
    namespace and name), not by name alone, so a registry created later cannot take a host away by picking
    a name that sorts first. Why one owner instead of trusting both CAs for the host: that would let either
    registry's CA vouch for the other's name; the later claimant is told in its status.
    """
    ordered = sorted(registries, key=first_come)
    hosts: dict[str, tuple[str, tuple[layout.Target, ...]]] = {}
    problems: dict[Key, list[Problem]] = {}
    usable: list[tuple[RegistryTrust, str]] = []
    for registry in ordered:
        key = (registry.namespace, registry.name)
        try:
            usable.append((registry, layout.bundle(registry.ca_pems)))
        except layout.LayoutError as exc:
            problems.setdefault(key, []).append(Problem(Reason.CA_UNUSABLE, f"CA cannot be published: {exc}"))
    claimed: dict[str, set[Key]] = {}
    for registry, _ in usable:
        for host in registry.hosts:
            claimed.setdefault(host, set()).add((registry.namespace, registry.name))
    owners: dict[str, Key] = {
        host: owner for host, owner in (previous or {}).items() if owner in claimed.get(host, set())
    }
    for registry, pem in usable:
        key = (registry.namespace, registry.name)
        targets = tuple(t for t in layout.TARGETS if t in registry.targets)
        for host in registry.hosts:
            try:
                layout.check_host(host)
            except layout.LayoutError as exc:
                problems.setdefault(key, []).append(Problem(Reason.HOST_INVALID, str(exc)))
                continue
            owner = owners.setdefault(host, key)
            if owner != key:
                namespace, name = owner
                problems.setdefault(key, []).append(
                    Problem(
                        Reason.HOST_CONFLICT,
                        f"host {host} is already trusted for {namespace}/{name}, which claimed it first",
                    )
                )
                continue
            hosts[host] = (pem, targets)
    owners = {host: owner for host, owner in owners.items() if host in hosts}
    return Aggregate(data=layout.encode(hosts), owners=owners, problems=problems)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MirrorClaim:
    """A registry's pull-through mirrors that want nodes wired: (image host, upstream URL, prefix)."""

    namespace: str
    name: str
    mirrors: Sequence[tuple[str, str, str]]
    created: str = ""


def wire_mirrors(
    claims_: Iterable[MirrorClaim], *, owners: Mapping[str, Key], allowed: Callable[[str, str], str | None]
) -> tuple[dict[str, layout.MirrorWiring], dict[Key, list[Problem]]]:
    """Which image hosts nodes pull through which registry's mirror (`_mirrors.json`), and why not others.

    A registry's mirror is reached at one of the hosts it holds in the node trust ConfigMap (its own node
    port on `localhost` first: kube-proxy forwards it on every node; else the first in order), so a
    registry none of whose hosts is published wires nothing. `allowed(host, namespace)` screens the image
    host (None: allowed, else the refusal's message): a mirror decides what every node runs for that host,
    so the same installer allowlist as for trusted hosts applies. A host that is a registry host itself, or
    that an older registry already wires, is a conflict.
    """
    wired: dict[str, layout.MirrorWiring] = {}
    problems: dict[Key, list[Problem]] = {}
    ordered = sorted(claims_, key=lambda c: (not c.created, c.created, c.namespace, c.name))
    for claim in ordered:
        key = (claim.namespace, claim.name)
        held = sorted(
            (h for h, o in owners.items() if o == key), key=lambda h: (not h.startswith("localhost:"), h)
        )
        if claim.mirrors and not held:
            problems.setdefault(key, []).append(
                Problem(
                    Reason.MIRROR_UNREACHABLE,
                    "no host of this registry is published to nodes; mirrors not wired",
                )
            )
            continue
        for host, upstream, prefix in claim.mirrors:
            refusal = allowed(host, claim.namespace)
            if refusal is not None:
                problems.setdefault(key, []).append(
                    Problem(Reason.MIRROR_HOST_REFUSED, f"mirror for {host}: {refusal}")
                )
                continue
            if host in owners or host in wired:
                problems.setdefault(key, []).append(
                    Problem(
                        Reason.MIRROR_HOST_CONFLICT,
                        f"host {host} is already a registry host or wired to a mirror",
                    )
                )
                continue
            wiring = layout.MirrorWiring(upstream=upstream, registry=held[0], prefix=prefix)
            try:
                wiring.hosts_toml(host)
            except layout.LayoutError as exc:
                problems.setdefault(key, []).append(
                    Problem(Reason.MIRROR_INVALID, f"mirror for {host}: {exc}")
                )
                continue
            wired[host] = wiring
    return wired, problems
