"""Node trust for the whole installation, as one publisher: observe the agents, publish every registry's CA.

Registry passes never publish: they hand in their `Source` (`submit`, no I/O) and read the latest
publication (`latest`, `plan_for`). One task (`run`, started by the handlers) publishes when a source changed,
and every resync period to observe the agents; each publication
1. on the periodic round and the first one after start only: lists the registries, forgetting deleted ones
   and reading once any it has no `Source` for (so a restarted operator never publishes a partial
   ConfigMap); a round woken by hand-ins publishes from the sources in memory, after gathering the rest of
   their burst (`GATHER_SECONDS`, at most `GATHER_MAX_SECONDS`): 1,000 registries created together cost a
   few rounds, not 1,000 rounds that each list 1,000 registries;
2. observes the nodes: the DaemonSet's desired/ready/updated counts and every agent's report (the
   `dockyard.dev/node-trust` annotation on its Pod);
3. composes what to publish (`publication`: the hosts each registry may claim, who holds a host two
   registries claim, which CAs each publishes during a rotation, the node credentials of wired mirrors that
   take no anonymous pulls) and applies the ConfigMap and the DaemonSet in the operator's namespace through
   the child writer, which decides on the DaemonSet and ConfigMap this round already read (spec-hash: no
   write when nothing changed), and the node credentials Secret when its data changed or on the periodic
   round (one more read then);
4. records, per registry, its hosts, the published fingerprints, its rotation plan and any problem
   (`sources.Observation`), and tells the reconciler which registries read differently, so their status
   (`status.nodeTrust`, `NodeTrustReady`) follows without waiting for the resync loop.
So a round costs the same handful of reads whatever the number of registries (the DaemonSet, the agent
Pods, the ConfigMap, the agent's ServiceAccount; the periodic round adds one LIST of the registries and a
read of the node credentials Secret) and O(N) work, and no registry pass waits on a lock. A deletion
publishes at once (`forget`), without a LIST.
The agent's ServiceAccount, Role and RoleBinding are static and ship with the chart (`builders.desired`
renders them), so the operator needs no RBAC-granting rights.

Must not: decide per-registry status wording (that is `rotation`), or call the API except through its client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import pydantic

from dockyard_operator import kube, model, names, writer
from dockyard_operator.builders import htpasswd_secret
from dockyard_operator.nodetrust import builders, layout, publication, rotation, sources

log = logging.getLogger(__name__)

Key = sources.Key

GATHER_SECONDS = 0.3
"""A woken publisher waits until no registry handed in a change for this long (a burst is one round) ..."""
GATHER_MAX_SECONDS = 2.0
"""... but publishes at most this long after it woke up, however steady the stream of hand-ins."""


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
        gather_seconds: float = GATHER_SECONDS,
        gather_max_seconds: float = GATHER_MAX_SECONDS,
    ) -> None:
        self._client = client
        self._writer = writer.Writer(client)
        self._allowed = tuple(allowed_hosts)
        self._namespace = namespace
        self._image = image
        self._cluster_domain = cluster_domain
        self._resync = resync_seconds
        self._gather = gather_seconds
        self._gather_max = gather_max_seconds
        self._sources: dict[Key, sources.Source | None] = {}
        # When the registries were last listed (monotonic); None: not since start, so the next round lists.
        self._listed_at: float | None = None
        self._last: sources.Observation | None = None
        # The node credentials last written (None: not since start): a round writes them when they changed
        # (a new token window, a mirror wired or unwired) and on the periodic round, which also puts back
        # a Secret someone deleted; other rounds spend no read on them.
        self._tokens_written: Mapping[str, str] | None = None
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
        the DaemonSet's counts), and tell `on_change` which registries now read differently.

        A round woken by hand-ins first gathers the rest of their burst, then publishes from the sources in
        memory; only the periodic round (and the first one after start) lists the registries."""
        due = time.monotonic() + self._resync
        while True:
            if (remaining := due - time.monotonic()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wanted.wait(), timeout=remaining)
            periodic, listed = time.monotonic() >= due, self._listed_at
            if not periodic:
                await self._gathered()
            try:
                await self.publish_round(on_change=on_change, full=periodic)
            except kube.KubeError as exc:  # listing registries failed (API down, RBAC): the next round
                log.warning("node trust: cannot publish: %s", exc)
            if periodic:  # also after a failed one: no busy loop against an API that is down
                due = time.monotonic() + self._resync
            elif self._listed_at is not None and self._listed_at != listed:  # the first round listed
                due = self._listed_at + self._resync

    async def _gathered(self) -> None:
        """Let a burst of hand-ins arrive (1,000 registries created together wake the publisher 1,000 times):
        wait until none came for `gather_seconds`, at most `gather_max_seconds` in all, so a steady stream
        of hand-ins cannot hold publication back."""
        deadline = time.monotonic() + self._gather_max
        while (remaining := deadline - time.monotonic()) > 0:
            self._wanted.clear()
            try:
                await asyncio.wait_for(self._wanted.wait(), timeout=min(self._gather, remaining))
            except TimeoutError:
                return

    async def publish_round(
        self, *, on_change: Callable[[set[Key]], Awaitable[None]], full: bool = True
    ) -> None:
        """One round of the publisher: publish, then tell `on_change` which registries read differently."""
        before = self._last
        changed = sources.changed(before, await self.publish(full=full))
        if changed:
            await on_change(changed)

    async def publish(self, *, full: bool = True) -> sources.Observation:
        """One publication of every registry's CAs, and what the nodes report.

        `full`: list the registries first (forget deleted ones, read those no pass handed in); otherwise
        publish from the sources in memory, which the first publication after start never does."""
        async with self._lock:
            self._wanted.clear()  # this publication covers every source handed in so far
            return await self._sync(skip=set(), full=full)

    async def forget(self, namespace: str, name: str) -> sources.Observation:
        """A registry is being deleted: publish without it, now (the deletion waits for the withdrawal)."""
        async with self._lock:
            self._sources.pop((namespace, name), None)
            return await self._sync(skip={(namespace, name)}, full=False)

    async def observe(self) -> rotation.Nodes:
        """The DaemonSet's counts and every agent's report."""
        nodes, _ = await self._observe()
        return nodes

    async def _observe(self) -> tuple[rotation.Nodes, dict[str, Any] | None]:
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
        nodes = rotation.Nodes(
            desired=int(status.get("desiredNumberScheduled") or 0),
            ready=int(status.get("numberReady") or 0),
            updated=int(status.get("updatedNumberScheduled") or 0),
            reports=reports,
        )
        return nodes, ds

    async def _sync(self, *, skip: set[Key], full: bool) -> sources.Observation:
        if full or self._listed_at is None:
            await self._list(skip=skip)
        nodes, daemonset = await self._observe()
        published, previous, configmap = await self._published()
        composed = publication.compose(self._sources, nodes=nodes, previous=previous, allowed=self._allowed)
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
                # Both were read moments ago (`_published`, `_observe`): the writer decides on those reads.
                configmap_manifest, daemonset_manifest = self._children(
                    composed.data, owners=composed.owners, owner_uid=owner
                )
                await self._writer.apply(configmap_manifest, read=configmap)
                await self._writer.apply(daemonset_manifest, read=daemonset)
                # Last: a Secret the operator may not write (a hand-made Role without it) fails the round
                # and says why, but after the CAs and the wiring were published.
                if full or composed.tokens != self._tokens_written:
                    await self._writer.apply(
                        builders.credentials_secret(
                            namespace=self._namespace, tokens=composed.tokens, owner_uid=owner
                        )
                    )
                    self._tokens_written = dict(composed.tokens)
        except kube.KubeError as exc:  # a missing or terminating namespace, RBAC, a conflict: next pass
            error = f"cannot publish node trust in namespace {self._namespace}: {exc}"
        self._last = sources.Observation(nodes=nodes, registries=composed.views, error=error)
        return self._last

    async def _list(self, *, skip: set[Key]) -> None:
        """List the registries: forget deleted ones, read once any no pass has handed in (after a restart)."""
        known = set(self._sources)  # one handed in while this round reads others is not dropped below
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
        for gone in known - present:
            self._sources.pop(gone, None)
        self._listed_at = time.monotonic()

    async def _published(self) -> tuple[bool, dict[str, Key], dict[str, Any] | None]:
        """Whether the ConfigMap exists, who owns each host as last published (nothing when it cannot be
        read: publishing then fails and says why), and the ConfigMap as read."""
        try:
            live = await self._client.get(
                api_version="v1", kind="ConfigMap", namespace=self._namespace, name=builders.NAME
            )
        except kube.KubeError:
            return True, {}, None
        return live is not None, builders.owners_of(live), live

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
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        return (
            builders.configmap(namespace=self._namespace, data=data, owner_uid=owner_uid, owners=owners),
            builders.daemonset(
                namespace=self._namespace, image=self._image, resync_seconds=self._resync, owner_uid=owner_uid
            ),
        )

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
        token_key = ""
        if any(m.needs_node_credential for m in spec.mirrors):
            auth = await self._secret(namespace, child_names.htpasswd_secret)
            token_key = (_decoded(auth, htpasswd_secret.TOKEN_KEY_FILE) or "").strip()
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
            token_key=token_key,
            now=time.time(),
        )

    async def _secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._client.get(api_version="v1", kind="Secret", namespace=namespace, name=name)
