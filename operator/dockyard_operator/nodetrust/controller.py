"""Node trust for the whole installation, as one publisher: observe the agents, publish every registry's CA.

Registry passes never publish: they hand in their `Source` (`submit`, no I/O) and read the latest
publication (`latest`, `plan_for`). One task (`run`, started by the handlers) publishes when a source changed,
and every resync period to observe the agents; each publication
1. lists the registries, forgetting deleted ones and reading once any it has no `Source` for;
2. observes the nodes: the DaemonSet's desired/ready/updated counts and every agent's report (the
   `dockyard.dev/node-trust` annotation on its Pod);
3. keeps only the hosts each registry may claim (`claims`: names it serves or the installer allows, never a
   public registry's), settles hosts two registries claim (`aggregate`: the owner recorded on the published
   ConfigMap keeps it, else the oldest registry), asks `rotation.plan` which CAs each registry publishes for
   the hosts it holds, aggregates and applies the ConfigMap and the DaemonSet in the operator's namespace
   through the child writer (spec-hash: no write when nothing changed);
4. records, per registry, its hosts, the published fingerprints, its rotation plan and any problem
   (`sources.Observation`), and tells the reconciler which registries read differently, so their status
   (`status.nodeTrust`, `NodeTrustReady`) follows without waiting for the resync timer.
So a resync costs one publication (a handful of reads, O(N) work) instead of one per registry, and no
registry pass waits on a lock. A deletion publishes at once (`forget`). The agent's ServiceAccount, Role and
RoleBinding are static and ship with the chart (`builders.desired` renders them), so the operator needs no
RBAC-granting rights.

Must not: decide per-registry status wording (that is `rotation`), or call the API except through its client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import pydantic

from dockyard_operator import kube, model, names, writer
from dockyard_operator.conditions import Reason
from dockyard_operator.nodetrust import aggregate, builders, claims, layout, rotation, sources

log = logging.getLogger(__name__)

Key = sources.Key


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


def _decoded(secret: Mapping[str, Any] | None, key: str) -> str | None:
    raw = ((secret or {}).get("data") or {}).get(key)
    return base64.b64decode(raw).decode("utf-8", "replace") if raw else None


class NodeTrust:
    """The one publisher of node trust for an operator installation (namespace, agent image).

    Keeps the latest `Source` of every registry in memory: a reconcile pass hands in its own (it already
    read everything), and a registry not seen since start-up is read once here, so a restarted operator
    never publishes a partial ConfigMap (which would make nodes drop CAs of registries not reconciled yet).
    Only `run` (and `forget`, on a deletion) publish; `submit` and the reads (`latest`, `plan_for`) do no I/O.
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
        self._sources: dict[Key, sources.Source | None] = {}
        self._last: sources.Observation | None = None
        self._wanted = asyncio.Event()
        # Only the publisher task and a deletion publish; the lock keeps the two from interleaving.
        self._lock = asyncio.Lock()

    @property
    def namespace(self) -> str:
        return self._namespace

    def submit(self, key: Key, update: sources.Source | None) -> None:
        """Record a registry's latest `Source` (None: node trust is off for it); a change wakes the
        publisher. No I/O: this is all a registry's pass does for node trust besides reading `latest`."""
        if key in self._sources and self._sources[key] == update:
            return
        self._sources[key] = update
        self._wanted.set()

    def latest(self) -> sources.Observation | None:
        """The last publication (None before the first)."""
        return self._last

    def plan_for(self, namespace: str, name: str) -> rotation.Plan | None:
        """The rotation plan of the last publication for a registry (None before it was published)."""
        view = self._last.view(namespace, name) if self._last is not None else None
        return view.plan if view is not None else None

    async def run(self, *, on_change: Callable[[set[Key]], Awaitable[None]]) -> None:
        """The publisher task: publish when a source changed or every `resync_seconds` (agents' reports,
        the DaemonSet's counts), and tell `on_change` which registries now read differently."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wanted.wait(), timeout=self._resync)
            try:
                await self.publish_round(on_change=on_change)
            except kube.KubeError as exc:  # listing registries failed (API down, RBAC): the next round
                log.warning("node trust: cannot publish: %s", exc)

    async def publish_round(self, *, on_change: Callable[[set[Key]], Awaitable[None]]) -> None:
        """One round of the publisher: publish, then tell `on_change` which registries read differently."""
        before = self._last
        changed = sources.changed(before, await self.publish())
        if changed:
            await on_change(changed)

    async def publish(self) -> sources.Observation:
        """One publication of every registry's CAs, and what the nodes report."""
        async with self._lock:
            self._wanted.clear()  # this publication covers every source handed in so far
            return await self._sync(skip=set())

    async def forget(self, namespace: str, name: str) -> sources.Observation:
        """A registry is being deleted: publish without it, now (the deletion waits for the withdrawal)."""
        async with self._lock:
            self._sources.pop((namespace, name), None)
            return await self._sync(skip={(namespace, name)})

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

    async def _sync(self, *, skip: set[Key]) -> sources.Observation:
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
        published, previous = await self._published()
        views: dict[Key, sources.RegistryView] = {}
        wanted: dict[Key, tuple[sources.Source, tuple[str, ...]]] = {}
        refusals: dict[Key, tuple[aggregate.Problem, ...]] = {}
        for item, src in sorted(self._sources.items()):
            if src is None:
                continue
            if src.current_pem is None:
                no_ca = aggregate.Problem(Reason.NO_CA, "no CA to publish yet")
                views[item] = sources.RegistryView((), (), None, (no_ca,))
                continue
            accepted, refused = claims.screen(src.hosts, served=src.served, allowed=self._allowed)
            wanted[item] = (src, accepted)
            refusals[item] = tuple(aggregate.Problem(Reason.HOST_REFUSED, r.message) for r in refused)

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
            views[item] = sources.RegistryView(hosts, fingerprints, plans[item], refusals[item])
        merged = aggregate.aggregate(
            contributions({item: plan.publish for item, plan in plans.items()}), previous=previous
        )
        wired, mirror_problems = aggregate.wire_mirrors(
            [
                aggregate.MirrorClaim(
                    namespace=item[0], name=item[1], mirrors=src.mirrors, created=src.created
                )
                for item, (src, _) in wanted.items()
                if src.mirrors
            ],
            owners=merged.owners,
            allowed=self._mirror_refusal,
        )
        data = {**merged.data, **layout.encode({}, mirrors=wired)}
        for item, problems in [*merged.problems.items(), *mirror_problems.items()]:
            old = views[item]
            views[item] = dataclasses.replace(old, problems=(*old.problems, *problems))
        for host, wiring in wired.items():  # which registry each wired image host belongs to
            holder = merged.owners.get(wiring.registry)
            if holder is not None and holder in views:
                old = views[holder]
                views[holder] = dataclasses.replace(old, mirror_hosts=(*old.mirror_hosts, host))
        error = None
        try:
            owner = await self._agent_account_uid()
            if not published and not any(src is not None for src in self._sources.values()):
                pass  # no registry uses node trust and nothing was published: no DaemonSet on every node
            elif owner is None:
                # Pods of a DaemonSet without its ServiceAccount are refused at admission, and a DaemonSet
                # not owned by the chart's account would outlive `helm uninstall`: publish nothing.
                error = (
                    f"the node trust agent's ServiceAccount {self._namespace}/{builders.NAME} does not exist "
                    "(the chart installs it with nodeTrust.enabled=true)"
                )
            else:
                for manifest in self._children(data, owners=merged.owners, owner_uid=owner):
                    await self._writer.apply(manifest)
        except kube.KubeError as exc:  # a missing or terminating namespace, RBAC, a conflict: next pass
            error = f"cannot publish node trust in namespace {self._namespace}: {exc}"
        self._last = sources.Observation(nodes=nodes, registries=views, error=error)
        return self._last

    def _mirror_refusal(self, host: str, namespace: str) -> str | None:
        """Why an image host may not be wired to a mirror (None: it may): the installer must allow it."""
        _, refused = claims.screen([host], served=claims.Served(namespace=namespace), allowed=self._allowed)
        return refused[0].message if refused else None

    async def _published(self) -> tuple[bool, dict[str, Key]]:
        """Whether the ConfigMap exists, and who owns each host as last published (nothing when it cannot be
        read: publishing then fails and says why)."""
        try:
            live = await self._client.get(
                api_version="v1", kind="ConfigMap", namespace=self._namespace, name=builders.NAME
            )
        except kube.KubeError:
            return True, {}
        return live is not None, builders.owners_of(live)

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

    async def _load(self, body: Mapping[str, Any]) -> sources.Source | None:
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
        return sources.source(
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
