"""Node trust for the whole installation: observe the agents, publish every registry's CA, per pass.

One `sync()` call (made by every registry's reconcile pass, handing in that registry's `Source`, and after a
registry is deleted):
1. lists the registries, forgetting deleted ones and reading once any it has no `Source` for;
2. observes the nodes: the DaemonSet's desired/ready/updated counts and every agent's report (the
   `dockyard.dev/node-trust` annotation on its Pod);
3. keeps only the hosts each registry may claim (`claims`: names it serves or the installer allows, never a
   public registry's), settles hosts two registries claim (`aggregate`: the owner recorded on the published
   ConfigMap keeps it, else the oldest registry), asks `rotation.plan` which CAs each registry publishes for
   the hosts it holds, aggregates and applies the ConfigMap and the DaemonSet in the operator's namespace
   through the child writer (spec-hash: no write when nothing changed);
4. returns, per registry, its hosts, the published fingerprints, its rotation plan and any problem, which the
   reconciler turns into `status.nodeTrust` and the `NodeTrustReady` condition.
The ConfigMap is a pure function of all registries' sources, so concurrent passes converge on the same
content. The agent's ServiceAccount, Role and RoleBinding are static and ship with the chart
(`builders.desired` renders them), so the operator needs no RBAC-granting rights.

Must not: decide per-registry status wording (that is `rotation`), or call the API except through its client.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import pydantic

from dockyard_operator import crypto, kube, model, names, policies, writer
from dockyard_operator.nodetrust import aggregate, builders, claims, layout, rotation

log = logging.getLogger(__name__)


class Client(Protocol):
    """The part of `kube.Kube` node trust uses."""

    async def get(
        self, *, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None: ...
    async def list(
        self,
        *,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]: ...
    async def apply(self, *, manifest: Mapping[str, Any], force: bool = False) -> dict[str, Any]: ...
    async def patch_json(
        self,
        *,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        operations: Sequence[Mapping[str, Any]],
    ) -> dict[str, Any]: ...
    async def create(self, *, manifest: Mapping[str, Any]) -> dict[str, Any]: ...
    async def replace(self, *, manifest: Mapping[str, Any]) -> dict[str, Any]: ...
    async def delete(self, *, api_version: str, kind: str, namespace: str, name: str) -> None: ...


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
) -> Source:
    """Build a registry's `Source` from what its reconcile pass already holds (pure)."""
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
            info = crypto.inspect(server_cert_pem.encode())
            dns, ips = [*dns, *info.dns_names], [*ips, *info.ip_addresses]
        except crypto.CryptoError:
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
            return rotation.Verdict(False, "PublishFailed", self.error)
        if view.problems:
            return rotation.Verdict(
                False, view.problems[0].reason, "; ".join(p.message for p in view.problems)
            )
        return rotation.readiness(nodes=self.nodes, hosts=view.hosts, fingerprints=view.fingerprints)

    def trusted(self, namespace: str, name: str) -> int:
        """Nodes that trust every published CA of the registry for every one of its hosts."""
        view = self.view(namespace, name)
        if view is None or not view.fingerprints:
            return 0
        return min(
            rotation.trusting(self.nodes, hosts=view.hosts, fingerprint=fp) for fp in view.fingerprints
        )


def _decoded(secret: Mapping[str, Any] | None, key: str) -> str | None:
    raw = ((secret or {}).get("data") or {}).get(key)
    return base64.b64decode(raw).decode("utf-8", "replace") if raw else None


Key = tuple[str, str]


class NodeTrust:
    """Publishes node trust for one operator installation (namespace, agent image).

    Keeps the latest `Source` of every registry in memory: a reconcile pass hands in its own (it already
    read everything), and a registry not seen since start-up is read once here, so a restarted operator
    never publishes a partial ConfigMap (which would make nodes drop CAs of registries not reconciled yet).
    """

    def __init__(
        self,
        *,
        client: Client,
        namespace: str,
        image: str,
        cluster_domain: str = "cluster.local",
        resync_seconds: float = 60.0,
        allowed_hosts: Sequence[str] = (),
    ) -> None:
        self._client = client
        self._writer = writer.Writer(client)
        self._allowed = tuple(allowed_hosts)
        self._namespace = namespace
        self._image = image
        self._cluster_domain = cluster_domain
        self._resync = resync_seconds
        self._sources: dict[Key, Source | None] = {}
        self._last: Observation | None = None
        # Passes of different registries run concurrently; publishing one ConfigMap from each at once would
        # only produce write conflicts, so syncs queue (each is a handful of reads when nothing changed).
        self._lock = asyncio.Lock()

    @property
    def namespace(self) -> str:
        return self._namespace

    async def observe(self) -> rotation.Nodes:
        ds = await self._client.get(
            api_version="apps/v1", kind="DaemonSet", namespace=self._namespace, name=builders.NAME
        )
        status = (ds or {}).get("status") or {}
        pods = await self._client.list(
            api_version="v1", kind="Pod", namespace=self._namespace, labels=builders.SELECTOR
        )
        reports: list[layout.Report] = []
        for pod in pods:
            text = ((pod.get("metadata") or {}).get("annotations") or {}).get(layout.REPORT_ANNOTATION)
            if text is None or (pod.get("metadata") or {}).get("deletionTimestamp"):
                continue
            try:
                reports.append(layout.Report.from_json(text))
            except layout.LayoutError as exc:
                log.warning("ignoring the report on Pod %s: %s", pod["metadata"].get("name"), exc)
        return rotation.Nodes(
            desired=int(status.get("desiredNumberScheduled") or 0),
            ready=int(status.get("numberReady") or 0),
            updated=int(status.get("updatedNumberScheduled") or 0),
            reports=reports,
        )

    def plan_for(self, namespace: str, name: str) -> rotation.Plan | None:
        """The rotation plan of the last sync for a registry (None before its first sync)."""
        view = self._last.view(namespace, name) if self._last is not None else None
        return view.plan if view is not None else None

    async def forget(self, namespace: str, name: str) -> Observation:
        """A registry is being deleted: publish without it."""
        async with self._lock:
            self._sources.pop((namespace, name), None)
            return await self._sync(skip={(namespace, name)})

    async def sync(self, *, key: Key | None = None, update: Source | None = None) -> Observation:
        """Record `update` for registry `key` (None: it has node trust off), then publish everything."""
        async with self._lock:
            if key is not None:
                self._sources[key] = update
            return await self._sync(skip=set())

    async def _sync(self, *, skip: set[Key]) -> Observation:
        present: set[Key] = set()
        for body in await self._client.list(api_version=names.API_VERSION, kind=names.KIND):
            meta = body.get("metadata") or {}
            if meta.get("deletionTimestamp"):
                continue  # a deleted registry's hosts leave the nodes
            item = (str(meta.get("namespace")), str(meta.get("name")))
            if item in skip:
                continue
            present.add(item)
            if item not in self._sources:
                self._sources[item] = await self._load(body)
        for gone in set(self._sources) - present:
            del self._sources[gone]
        nodes = await self.observe()
        previous = await self._published_owners()
        views: dict[Key, RegistryView] = {}
        wanted: dict[Key, tuple[Source, tuple[str, ...]]] = {}
        refusals: dict[Key, tuple[aggregate.Problem, ...]] = {}
        for item, src in sorted(self._sources.items()):
            if src is None:
                continue
            if src.current_pem is None:
                views[item] = RegistryView((), (), None, (aggregate.Problem("NoCA", "no CA to publish yet"),))
                continue
            accepted, refused = claims.screen(src.hosts, served=src.served, allowed=self._allowed)
            wanted[item] = (src, accepted)
            refusals[item] = tuple(aggregate.Problem("HostRefused", r.message) for r in refused)

        def contributions(pems: Mapping[Key, Sequence[str]]) -> list[aggregate.RegistryTrust]:
            return [
                aggregate.RegistryTrust(
                    namespace=item[0],
                    name=item[1],
                    hosts=accepted,
                    ca_pems=pems[item],
                    targets=src.targets,
                    created=src.created,
                )
                for item, (src, accepted) in wanted.items()
            ]

        # Who owns which host does not depend on the CAs, and a rotation must wait for the hosts a
        # registry holds only: the nodes never report a refused host, or one another registry holds.
        current = {item: [src.current_pem or ""] for item, (src, _) in wanted.items()}
        held = aggregate.aggregate(contributions(current), previous=previous).owners
        plans: dict[Key, rotation.Plan] = {}
        for item, (src, accepted) in wanted.items():
            hosts = tuple(h for h in accepted if held.get(h) == item)
            plans[item] = rotation.plan(
                current_pem=src.current_pem or "",
                next_pem=src.next_pem,
                server_issuer=src.server_issuer,
                hosts=hosts,
                nodes=nodes,
                rolled_out=src.rolled_out,
            )
            fingerprints = tuple(layout.fingerprint(p) for p in plans[item].publish)
            views[item] = RegistryView(hosts, fingerprints, plans[item], refusals[item])
        merged = aggregate.aggregate(
            contributions({item: plan.publish for item, plan in plans.items()}), previous=previous
        )
        for item, problems in merged.problems.items():
            old = views[item]
            views[item] = dataclasses.replace(old, problems=(*old.problems, *problems))
        error = None
        try:
            owner = await self._agent_account_uid()
            if owner is None:
                # Pods of a DaemonSet without its ServiceAccount are refused at admission, and a DaemonSet
                # not owned by the chart's account would outlive `helm uninstall`: publish nothing.
                error = (
                    f"the node trust agent's ServiceAccount {self._namespace}/{builders.NAME} does not exist "
                    "(the chart installs it with nodeTrust.enabled=true)"
                )
            else:
                for manifest in self._children(merged.data, owners=merged.owners, owner_uid=owner):
                    await self._writer.apply(manifest)
        except kube.KubeError as exc:  # a missing or terminating namespace, RBAC, a conflict: next pass
            error = f"cannot publish node trust in namespace {self._namespace}: {exc}"
        self._last = Observation(nodes=nodes, registries=views, error=error)
        return self._last

    async def _published_owners(self) -> dict[str, Key]:
        """Who owns each host as last published (empty when nothing is, or it cannot be read: publishing
        then fails and says why)."""
        try:
            live = await self._client.get(
                api_version="v1", kind="ConfigMap", namespace=self._namespace, name=builders.NAME
            )
        except kube.KubeError:
            return {}
        return builders.owners_of(live)

    async def _agent_account_uid(self) -> str | None:
        """The uid of the agent's ServiceAccount (the owner of what is published), None while it is absent."""
        account = await self._client.get(
            api_version="v1", kind="ServiceAccount", namespace=self._namespace, name=builders.NAME
        )
        meta = (account or {}).get("metadata") or {}
        if account is None or meta.get("deletionTimestamp"):
            return None
        return str(meta["uid"])

    def _children(
        self, data: Mapping[str, str], *, owners: Mapping[str, Key], owner_uid: str
    ) -> list[dict[str, Any]]:
        return [
            builders.configmap(namespace=self._namespace, data=data, owner_uid=owner_uid, owners=owners),
            builders.daemonset(
                namespace=self._namespace, image=self._image, resync_seconds=self._resync, owner_uid=owner_uid
            ),
        ]

    async def _load(self, body: Mapping[str, Any]) -> Source | None:
        """Read a registry's Source from the API (a registry no reconcile pass has handed in yet)."""
        meta = body["metadata"]
        namespace, name = str(meta["namespace"]), str(meta["name"])
        try:
            spec = model.parse_spec(body.get("spec") or {})
        except pydantic.ValidationError:
            return None  # its own reconcile reports the invalid spec
        if not spec.node_trust.enabled:
            return None
        child_names = names.Names.of(name)
        if spec.tls.mode == "SelfSigned":
            tls_name, ca_name = child_names.tls_secret, child_names.ca_secret
        else:
            tls_name = ca_name = spec.tls.secret_name or ""
        tls = await self._secret(namespace, tls_name)
        ca_secret = tls if ca_name == tls_name else await self._secret(namespace, ca_name)
        upcoming = None
        if spec.tls.mode == "SelfSigned":
            upcoming = _decoded(await self._secret(namespace, builders.next_ca_name(name)), "ca.crt")
        service = await self._client.get(
            api_version="v1", kind="Service", namespace=namespace, name=child_names.service
        )
        deployment = await self._client.get(
            api_version="apps/v1", kind="Deployment", namespace=namespace, name=child_names.deployment
        )
        return source(
            spec=spec,
            name=name,
            namespace=namespace,
            service=service,
            current_pem=_decoded(ca_secret, "ca.crt"),
            next_pem=upcoming,
            server_cert_pem=_decoded(tls, "tls.crt"),
            cluster_domain=self._cluster_domain,
            deployment=deployment,
            created=str(meta.get("creationTimestamp") or ""),
        )

    async def _secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._client.get(api_version="v1", kind="Secret", namespace=namespace, name=name)


def _issuer(cert_pem: str | None, candidates: Sequence[str]) -> str | None:
    """Fingerprint of the candidate CA that signed the serving certificate, None if none did."""
    if cert_pem is None:
        return None
    for candidate in candidates:
        try:
            if crypto.signed_by(cert_pem=cert_pem.encode(), ca_pem=candidate.encode()):
                return layout.fingerprint(candidate)
        except crypto.CryptoError:
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
