"""Every `PrivateRegistry` that wants node trust → the data of the one node trust ConfigMap.

Owns: which hosts a registry gets by default (every name a node's runtime may use to pull from it) and the
merge of all registries into one `host → CA bundle` map, deterministic for the same input (so the operator's
spec-hash comparison skips no-op writes), with conflicts named instead of resolved silently.

Default hosts, and why (the serving certificate carries every one of these names):
- NodePort or LoadBalancer with a node port: `localhost:<nodePort>` and `127.0.0.1:<nodePort>`: on every node
  kube-proxy forwards the node port on loopback, so one image reference works on all nodes (the kind recipe's
  `localhost:<port>` form, KEP-1755);
- LoadBalancer: each ingress IP or hostname of the Service's status, port 443 (written without the port, as
  runtimes look the directory up by the reference's host);
- Ingress: its host (port 443);
- always the Service's fully qualified name (`<svc>.<ns>.svc.<domain>`, port 443), for nodes whose resolver
  forwards to cluster DNS;
- plus `nodeTrust.hostnames` as given.

Must not: read anything, or decide CA rotation (that is `rotation`): it publishes the bundles it is given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

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
    ca_pems: Sequence[str]
    """CA certificates to publish: the current one, plus the next one while a rotation is staged."""
    targets: Sequence[layout.Target] = layout.TARGETS


@dataclasses.dataclass(frozen=True)
class Aggregate:
    """The ConfigMap data, who owns each host, and what could not be published (with reasons)."""

    data: dict[str, str]
    owners: dict[str, tuple[str, str]]
    """host → (namespace, name) of the registry whose CA it carries."""
    problems: dict[tuple[str, str], list[str]]
    """(namespace, name) → messages (a host another registry claimed first, an unusable host or CA)."""


def aggregate(registries: Iterable[RegistryTrust]) -> Aggregate:
    """Merge every registry; a host claimed by two registries goes to the first by (namespace, name).

    Why first-wins instead of trusting both CAs for the host: that would let either registry's CA vouch
    for the other's name; the loser is told in its status and can pick another hostname.
    """
    hosts: dict[str, tuple[str, tuple[layout.Target, ...]]] = {}
    owners: dict[str, tuple[str, str]] = {}
    problems: dict[tuple[str, str], list[str]] = {}
    for registry in sorted(registries, key=lambda r: (r.namespace, r.name)):
        key = (registry.namespace, registry.name)
        try:
            pem = layout.bundle(registry.ca_pems)
        except layout.LayoutError as exc:
            problems.setdefault(key, []).append(f"CA cannot be published: {exc}")
            continue
        targets = tuple(t for t in layout.TARGETS if t in registry.targets)
        for host in registry.hosts:
            try:
                layout.check_host(host)
            except layout.LayoutError as exc:
                problems.setdefault(key, []).append(str(exc))
                continue
            if host in owners and owners[host] != key:
                namespace, name = owners[host]
                problems.setdefault(key, []).append(f"host {host} is already trusted for {namespace}/{name}")
                continue
            owners[host] = key
            hosts[host] = (pem, targets)
    return Aggregate(data=layout.encode(hosts), owners=owners, problems=problems)
