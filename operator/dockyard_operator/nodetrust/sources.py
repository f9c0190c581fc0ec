"""What node trust knows about each registry, as pure values: its `Source` in, its `RegistryView` out.

Owns: `Source` (a registry's hosts, CAs, rollout state and what it really serves, built by `source()` from
what a reconcile pass already holds, or by the publisher from the API for a registry no pass handed in yet),
`served()` (the names `claims` screens hosts against), `rolled_out()`, and `Observation`, the result of one
publication, which registry passes read (hosts, fingerprints on nodes, rotation plan, NodeTrustReady).
Must not: perform I/O (that is `controller`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from dockyard_common import pki, regtoken
from dockyard_operator import model, names, policies
from dockyard_operator.conditions import Reason
from dockyard_operator.nodetrust import aggregate, claims, layout, rotation

Key = tuple[str, str]
"""(namespace, name) of a registry."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Source:
    """One registry's node trust inputs: where nodes reach it and which CAs exist."""

    hosts: tuple[str, ...]
    """Every host the registry asks for (defaults and `nodeTrust.hostnames`), before `claims` screens them."""
    current_pem: str | None
    """The CA the registry's clients trust today (`<registry>-ca`, or `ca.crt` of a user's TLS Secret)."""
    next_pem: str | None = None
    """A staged next CA (`builders.next_ca_name`), during a rotation."""
    server_issuer: str | None = None
    """Fingerprint of whichever of the two CAs signed the live serving certificate."""
    targets: tuple[layout.Target, ...] = layout.TARGETS
    rolled_out: bool = True
    """Whether every registry pod serves the certificate in the TLS Secret (see `rotation`)."""
    served: claims.Served
    """What the registry really serves: `claims` screens `hosts` against it and the allowed hosts."""
    created: str = ""
    """`metadata.creationTimestamp`: older registries claim a host first (see `aggregate`)."""
    mirrors: tuple[tuple[str, str, str], ...] = ()
    """spec.mirrors with wireNodes: (image host, upstream URL, prefix), see `aggregate.wire_mirrors`."""
    node_tokens: tuple[tuple[str, str], ...] = dataclasses.field(default=(), repr=False)
    """(image host, node credential) for the wired mirrors that take no anonymous pulls (`node_token`)."""


def source(
    *,
    spec: model.PrivateRegistrySpec,
    name: str,
    namespace: str,
    service: Mapping[str, Any] | None,
    current_pem: str | None,
    next_pem: str | None,
    server_cert_pem: str | None,
    cluster_domain: str,
    deployment: Mapping[str, Any] | None = None,
    created: str = "",
    token_key: str = "",
    now: float | None = None,
) -> Source:
    """Build a registry's `Source` from what its reconcile pass already holds (pure); with the registry's
    `token_key`, the node credentials of its wired mirrors that take no anonymous pulls, minted for the
    window `now` (the pass's clock, seconds since the epoch) falls in (`node_token`)."""
    child_names = names.Names.of(name)
    exposure = _exposure(
        spec, service, service_name=child_names.service, namespace=namespace, cluster_domain=cluster_domain
    )
    hosts = aggregate.default_hosts(exposure, extra=spec.node_trust.hostnames)
    served_names = served(
        spec=spec,
        name=name,
        namespace=namespace,
        service=service,
        server_cert_pem=server_cert_pem,
        cluster_domain=cluster_domain,
    )
    candidates: list[str] = []
    for pem in (current_pem, next_pem):
        try:
            candidates.append(layout.split_pem(pem)[0] if pem else "")
        except layout.LayoutError:
            candidates.append("")
    current, upcoming = candidates[0] or None, candidates[1] or None
    return Source(
        hosts=tuple(hosts),
        current_pem=current,
        next_pem=upcoming,
        server_issuer=_issuer(server_cert_pem, [c for c in (current, upcoming) if c]),
        targets=tuple(spec.node_trust.targets),
        rolled_out=rolled_out(deployment),
        served=served_names,
        created=created,
        mirrors=tuple(
            (m.effective_node_host, m.upstream.rstrip("/"), m.prefix) for m in spec.mirrors if m.wire_nodes
        ),
        node_tokens=tuple(
            (m.effective_node_host, node_token(key=token_key, registry=name, prefix=m.prefix, now=now))
            for m in spec.mirrors
            if m.needs_node_credential and token_key and now is not None
        ),
    )


NODE_TOKEN_LIFETIME = 24 * 3600
"""Seconds a node credential is valid. A new one is minted each half lifetime (`regtoken.pull_window`),
so what nodes hold always has at least 12 h left while the operator runs; when it stops for longer, the
mirror answers nodes 401 and containerd pulls from the upstream itself."""
NODE_TOKEN_SUBJECT = "dockyard-node-trust"  # noqa: S105  # a subject name, not a secret
"""Who a node credential says it is, in the registry's logs and metrics."""


def node_token(*, key: str, registry: str, prefix: str, now: float) -> str:
    """The node credential for one mirror: a registry token granting pull on `<prefix>/**` and nothing
    else, minted for the current half-lifetime window (the same token all window long)."""
    return regtoken.mint(
        key=key.encode(),
        service=registry,
        subject=NODE_TOKEN_SUBJECT,
        grants=[(f"{prefix}/**", ("pull",))],
        now=regtoken.pull_window(now=now, lifetime_seconds=NODE_TOKEN_LIFETIME),
        ttl_seconds=NODE_TOKEN_LIFETIME,
    )


def served(
    *,
    spec: model.PrivateRegistrySpec,
    name: str,
    namespace: str,
    service: Mapping[str, Any] | None,
    server_cert_pem: str | None,
    cluster_domain: str,
) -> claims.Served:
    """What the registry really serves, for `claims` (pure): its certificate's names and its addresses."""
    child_names = names.Names.of(name)
    exposure = _exposure(
        spec, service, service_name=child_names.service, namespace=namespace, cluster_domain=cluster_domain
    )
    dns, ips = policies.desired_sans(
        spec=spec, child_names=child_names, namespace=namespace, cluster_domain=cluster_domain
    )
    if spec.tls.mode == "Secret" and server_cert_pem:
        # A bring-your-own certificate serves the names it carries, whatever the spec says.
        try:
            info = pki.inspect(server_cert_pem.encode())
            dns, ips = [*dns, *info.dns_names], [*ips, *info.ip_addresses]
        except pki.PkiError:
            pass  # its own reconcile reports the unusable certificate
    return claims.Served(
        namespace=namespace,
        cluster_domain=cluster_domain,
        names=(*dns, *ips, *exposure.load_balancer),
        node_port=exposure.node_port if spec.expose.type != "ClusterIP" else None,
    )


def rolled_out(deployment: Mapping[str, Any] | None) -> bool:
    """True when the Deployment runs only pods of its current template, all available (or none wanted)."""
    if deployment is None:
        return False
    want = int((deployment.get("spec") or {}).get("replicas", 1))
    status = deployment.get("status") or {}
    current = status.get("observedGeneration", 0) >= (deployment.get("metadata") or {}).get("generation", 0)
    counts = (
        status.get("updatedReplicas") or 0,
        status.get("replicas") or 0,
        status.get("availableReplicas") or 0,
    )
    return current and counts == (want, want, want)


@dataclasses.dataclass(frozen=True)
class RegistryView:
    """What one registry's status needs from a node trust pass."""

    hosts: tuple[str, ...]
    """The hosts published for it (refused hosts and hosts another registry holds are not)."""
    fingerprints: tuple[str, ...]
    """Fingerprints of the CAs published for its hosts (two while a rotation is staged)."""
    plan: rotation.Plan | None
    problems: tuple[aggregate.Problem, ...] = ()
    mirror_hosts: tuple[str, ...] = ()
    """Image hosts wired to this registry's mirrors on the nodes."""


@dataclasses.dataclass(frozen=True)
class MirrorNodes:
    """What the agents report for one wired image host: nodes with at least one runtime wired, and the
    notes of runtimes not wired or waiting for a reload, each with how many nodes said it."""

    wired: int
    notes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Observation:
    nodes: rotation.Nodes
    registries: Mapping[tuple[str, str], RegistryView]
    error: str | None = None
    """Why publishing failed (missing namespace, forbidden), or None."""

    def view(self, namespace: str, name: str) -> RegistryView | None:
        return self.registries.get((namespace, name))

    def verdict(self, namespace: str, name: str) -> rotation.Verdict | None:
        """`NodeTrustReady` for one registry (None when it does not use node trust)."""
        view = self.view(namespace, name)
        if view is None:
            return None
        if self.error is not None:
            return rotation.Verdict(False, Reason.PUBLISH_FAILED, self.error)
        if view.problems:
            return rotation.Verdict(
                False, view.problems[0].reason, "; ".join(p.message for p in view.problems)
            )
        return rotation.readiness(nodes=self.nodes, hosts=view.hosts, fingerprints=view.fingerprints)

    def summary(self, key: Key) -> tuple[object, ...]:
        """Everything a registry's status reads from this publication."""
        view = self.view(*key)
        if view is None:
            return ()
        nodes = (self.nodes.desired, self.nodes.ready)
        return (
            view,
            self.verdict(*key),
            self.trusted(*key),
            nodes,
            self.error,
            self.on_nodes(view),
            tuple(sorted(self.mirror_nodes(*key).items())),
        )

    def mirror_nodes(self, namespace: str, name: str) -> dict[str, MirrorNodes]:
        """Per image host wired to the registry's mirrors, what the nodes report."""
        view = self.view(namespace, name)
        if view is None:
            return {}
        found: dict[str, MirrorNodes] = {}
        for host in view.mirror_hosts:
            reports = [r for r in self.nodes.reports if host in r.mirrors]
            counted: dict[str, int] = {}
            for report in self.nodes.reports:  # agents note runtimes only while some mirror is wired
                for note in report.notes:
                    counted[note] = counted.get(note, 0) + 1
            notes = tuple(f"{note} ({count} nodes)" for note, count in sorted(counted.items()))
            found[host] = MirrorNodes(wired=len(reports), notes=notes)
        return found

    def on_nodes(self, view: RegistryView) -> tuple[str, ...]:
        """Fingerprints every node reports for every host of the registry."""
        return tuple(
            fp
            for fp in view.fingerprints
            if self.nodes.desired and rotation.everywhere(self.nodes, hosts=view.hosts, fingerprint=fp)
        )

    def trusted(self, namespace: str, name: str) -> int:
        """Nodes that trust every published CA of the registry for every one of its hosts."""
        view = self.view(namespace, name)
        if view is None or not view.fingerprints:
            return 0
        return min(
            rotation.trusting(self.nodes, hosts=view.hosts, fingerprint=fp) for fp in view.fingerprints
        )


def changed(before: Observation | None, after: Observation) -> set[Key]:
    """Registries whose view of node trust differs between two publications (what their status shows)."""
    keys = set(after.registries) | (set(before.registries) if before is not None else set())
    return {key for key in keys if before is None or before.summary(key) != after.summary(key)}


def _issuer(cert_pem: str | None, candidates: Sequence[str]) -> str | None:
    """Fingerprint of the candidate CA that signed the serving certificate, None if none did."""
    if cert_pem is None:
        return None
    for candidate in candidates:
        try:
            if pki.signed_by(cert_pem=cert_pem.encode(), ca_pem=candidate.encode()):
                return layout.fingerprint(candidate)
        except pki.PkiError:
            return None
    return None


def _exposure(
    spec: model.PrivateRegistrySpec,
    service: Mapping[str, Any] | None,
    *,
    service_name: str,
    namespace: str,
    cluster_domain: str,
) -> aggregate.Exposure:
    live_spec = (service or {}).get("spec") or {}
    node_port = spec.expose.node_port
    for port in live_spec.get("ports") or []:
        if port.get("nodePort"):
            node_port = int(port["nodePort"])
    ingress = ((service or {}).get("status") or {}).get("loadBalancer", {}).get("ingress") or []
    addresses: Sequence[str] = [
        str(i.get("ip") or i.get("hostname")) for i in ingress if i.get("ip") or i.get("hostname")
    ]
    return aggregate.Exposure(
        service=service_name,
        namespace=namespace,
        cluster_domain=cluster_domain,
        service_type=spec.expose.type,
        node_port=node_port,
        load_balancer=addresses,
        ingress_host=spec.expose.ingress.host if spec.expose.ingress is not None else None,
    )
