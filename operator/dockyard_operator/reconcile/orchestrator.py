"""The one reconcile path of a `PrivateRegistry`, as the ordered list of what a pass does.

A registry's own events (`triggers`: new, changed, retried, the one resync loop) and the watches on referenced
Secrets and owned children all end here, so there is exactly one way state converges. A pass reads the
registry fresh (a watch event may be stale), parses its spec once into an immutable `context.Pass`, and runs
the steps in order, each returning what it adds: credentials (and object storage's references) → CA → CA
rotation → serving certificate → children → node trust → what the registry reports (storage, gc) → hosting →
pull secrets → status and Events. A problem the schema cannot catch (a missing Secret or key, an unusable
password or certificate) blocks the pass before any child is touched and is reported as
Ready=False/Degraded=True; the watch on Secrets or the resync loop brings the next attempt, so nothing
crash-loops.

When node trust's publisher changes only what a registry reads from it (status.nodeTrust, NodeTrustReady,
mirror wiring), `refresh` reports that from what the registry's last pass settled (`refresh.Refreshes`: one
status patch at most, no reads, no second pass over the children); a registry with nothing settled (a
restart, a blocked pass, a staged CA rotation, which moves on with passes) gets a pass instead.

Also here: passes (and refreshes) of one registry never overlap and bursts coalesce (`turns`); the periodic
resync skips a registry that had a pass within the last half period or has one running or waiting (drift is
still corrected within two periods); at most `concurrent_passes` run at once, passes somebody asked for before
the resync loop's (the rest wait their turn holding nothing but their registry's name); shutdown drains
running passes; a deleted registry's outside traces are removed (`forget`), and those of a registry deleted
while no operator watched by the resync loop's orphan sweep (`sweep_orphans`).
Must not: import kopf (`triggers` turns `Result.retry_after` into a retry), talk to the API except
through the steps, or hold per-pass state in fields (everything a pass knows is in local, immutable values;
the one per-registry memory is the small record of its last settled pass, in `refresh`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import pydantic

from dockyard_operator import cache, kube, metrics, model, names, registry_status, settings, tenancy, writer
from dockyard_operator.builders import inputs
from dockyard_operator.cached_client import CachedClient, fresh
from dockyard_operator.conditions import Reason
from dockyard_operator.nodetrust import controller
from dockyard_operator.reconcile import (
    ca_rotation,
    children,
    context,
    credentials,
    exposure,
    object_storage,
    observe,
    orphans,
    refresh,
    status,
    tls,
    trust,
    turns,
)

log = logging.getLogger(__name__)

Clock = Callable[[], datetime.datetime]
_DRAIN_SECONDS = 10.0  # how long shutdown waits for running passes


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclasses.dataclass(frozen=True)
class Result:
    """What the handler should do after a pass: nothing, or retry after `retry_after` seconds."""

    retry_after: float | None = None
    message: str = ""
    gone: bool = False
    """The registry no longer exists (or is being deleted): nothing more to ask for it."""


class Reconciler:
    """The steps, wired once per operator process, and the per-registry serialisation of passes."""

    def __init__(
        self,
        *,
        client: kube.Kube,
        config: settings.Settings,
        clock: Clock = utc_now,
        cache_key: bytes | None = None,
        node_trust: controller.NodeTrust | None = None,
        measures: metrics.OperatorMetrics | None = None,
        status_reader: observe.Fetch | None = None,
        watched: cache.Cache | None = None,
    ) -> None:
        self._kube = client
        self.metrics = measures if measures is not None else metrics.OperatorMetrics()
        """Reconcile durations and errors, and each registry's reported status, for /metrics."""
        # `watched`: the watch-fed cache the steps and the writer read children and referenced Secrets from.
        self._watched = watched
        reads: kube.Kube | CachedClient = client
        if watched is not None:
            reads = CachedClient(client, watched, answered=self.metrics.cache_answered)
            self.metrics.cache_objects.set_function(watched.size)
        self._settings = config
        self._clock = clock
        # At most `concurrent_passes` passes at once; passes and status refreshes of a registry never overlap.
        self._turns = turns.Turns(slots=config.concurrent_passes)
        self._finished: dict[tuple[str, str], float] = {}  # monotonic end of each registry's last pass
        self._closed = False
        self.node_trust = node_trust
        """Node trust's publisher, whose task the handlers run (None: an operator without a namespace)."""
        self._fanout = asyncio.Semaphore(8)  # passes started by node trust at once (kopf runs as many)
        self._writer = writer.Writer(reads)
        self._credentials = credentials.Credentials(reader=reads, config=config, cache_key=cache_key)
        self._object_storage = object_storage.ObjectStorage(reader=reads)
        self._certificates = tls.Certificates(reader=reads, config=config)
        self._rotation = ca_rotation.CaRotation(reader=reads, writes=self._writer, plans=node_trust)
        self._children = children.Children(reader=reads, writes=self._writer)
        self._trust = trust.NodeTrustHandOff(node_trust=node_trust, config=config)
        self._exposure = exposure.Exposure(reader=reads, writes=self._writer, config=config)
        # The sweep reads the API itself, not the cache: it removes only what a fresh GET says is gone.
        self._orphans = orphans.Orphans(
            client=client, writes=self._writer, exposed=self._exposure, config=config
        )
        self._observe = observe.Observe(
            reader=reads, fetch=status_reader or registry_status.StatusReader(), config=config
        )
        self._status = status.Status(client=client)
        # What each registry's last finished pass settled: a node trust change refreshes status from it.
        self._refreshes = refresh.Refreshes(
            reports=self._status, views=self._trust, measures=self.metrics, clock=clock
        )

    async def _pass(self, body: Mapping[str, Any]) -> Result:
        """One pass over a registry that exists: the ordered list of what reconciling means."""
        meta = body["metadata"]
        now, previous = self._clock(), status.previous_conditions(body)
        try:
            spec = model.parse_spec(body.get("spec") or {})
        except pydantic.ValidationError as exc:
            problem = context.Problem(Reason.INVALID_SPEC, model.spec_error_message(exc))
            return await self._blocked(body, previous, [problem], now=now)
        owner = inputs.Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
        run = context.Pass(
            body=body, spec=spec, owner=owner, names=names.Names.of(owner.name), now=now, previous=previous
        )
        self._refer(owner.namespace, owner.name, context.referenced_secrets(spec))
        told = context.Findings()  # what steps before a blocking one found (a CA created) is still told
        step = self.metrics.step
        try:
            with step("credentials"):
                users = await self._credentials.users(run)
                bucket = await self._object_storage.check(run)
            with step("tls"):
                chosen = await self._certificates.choose_ca(run)
            if isinstance(chosen, context.CaChoice):
                told = chosen.findings
                with step("ca_rotation"):
                    staged = await self._rotation.stage(run, chosen)
                told += staged.findings
                with step("tls"):
                    chosen = await self._certificates.serve(run, choice=chosen, staged=staged)
            material = chosen
        except context.Blocked as blocked:
            return await self._blocked(body, previous, blocked.problems, now=now, told=told)
        with step("children"):
            applied = await self._children.apply(
                run,
                self._inputs(run, users, material, bucket),
                reused=material.reused,
                read={**users.read, **material.read},
            )
        with step("trust"):
            nodes = await self._trust.hand_off(run, tls=material, applied=applied, token_key=users.token_key)
        with step("observe"):
            observed = await self._observe.registry(run, applied=applied)
        with step("exposure"):
            exposed = [
                await self._exposure.local_registry_hosting(run, applied=applied),
                await self._exposure.pull_secrets(
                    run, tls=material, applied=applied, token_key=users.token_key
                ),
            ]
        findings = context.total(
            [
                material.findings,
                applied.findings,
                observed.findings,
                *exposed,
                _refused_annotations(run, allowed=self._settings.ingress_annotations_allowed),
            ]
        )
        with step("status"):
            settled, findings = self._status.settle(
                run, tls=material, applied=applied, observed=observed, findings=findings
            )
            reported = self._status.report(settled, trust=nodes, previous=previous, now=now)
            await self._status.write(body, reported, previous=previous, now=now, events=findings.events)
        if material.next_ca_pem is None:  # a staged rotation moves on with passes, not with refreshes
            self._refreshes.remember((run.namespace, run.name), settled, reported, uid=run.owner.uid)
        self.metrics.observe(namespace=run.namespace, name=run.name, status=reported)
        if findings.problems:
            self.metrics.problem(findings.problems[0].reason)
        return Result(
            retry_after=findings.retry_after, message="; ".join(p.message for p in findings.problems)
        )

    def _inputs(
        self,
        run: context.Pass,
        users: context.Users,
        material: context.Tls,
        bucket: inputs.ObjectStorage | None,
    ) -> inputs.Inputs:
        return inputs.Inputs(
            registry=run.name,
            namespace=run.namespace,
            spec=run.spec,
            names=run.names,
            registry_image=self._settings.registry_image,
            nginx_image=self._settings.nginx_image,
            htpasswd=users.htpasswd,
            access_yaml=users.access_yaml,
            token_key=users.token_key,
            ingress_annotations_allowed=self._settings.ingress_annotations_allowed,
            operator_namespace=self._settings.namespace,
            tls_secret_name=material.secret_name,
            tls_digest=material.digest,
            tls=material.material,
            ca=material.ca,
            ca_annotations=material.ca_annotations,
            object_storage=bucket,
        )

    async def _blocked(
        self,
        body: Mapping[str, Any],
        previous: tuple[model.Condition, ...],
        problems: tuple[context.Problem, ...] | list[context.Problem],
        *,
        now: datetime.datetime,
        told: context.Findings | None = None,
    ) -> Result:
        """Report the problems; children are left exactly as they are."""
        blocked = self._status.blocked(body, previous, problems, now=now)
        events = told.events if told is not None else ()
        with self.metrics.step("status"):
            await self._status.write(body, blocked, previous=previous, now=now, events=events)
        meta = body["metadata"]
        self.metrics.observe(namespace=meta["namespace"], name=meta["name"], status=blocked)
        self.metrics.problem(problems[0].reason)
        return Result(message="; ".join(p.message for p in problems))

    # -------------------------------------------------------------------- scheduling and lifecycle

    async def reconcile(self, *, namespace: str, name: str, periodic: bool = False) -> Result:
        """Bring one registry's children and status in line with its spec (serialized per registry).

        Passes for one registry never overlap. Bursts coalesce: a pass admitted but not begun yet (waiting for
        a slot or for its registry) covers later ones, because it reads the registry fresh when it begins. A
        `periodic` pass (the resync loop's) is skipped when the registry's last pass ended less than half a
        resync period ago (it would read what that pass just read) or while the registry has a pass running
        or waiting, and it gets a slot only after the passes somebody asked for: a thousand registries created
        together would otherwise queue their periodic passes in front of the passes they still need.
        """
        if self._closed:
            return Result()  # shutting down: the next operator process resumes every registry
        key = (namespace, name)
        recent = time.monotonic() - self._finished.get(key, -math.inf) < self._settings.resync_seconds / 2
        if periodic and (recent or self._turns.busy(key)):
            return Result()
        async with self._turns.pass_turn(key, urgent=not periodic) as mine:
            if not mine or self._closed:
                return Result()  # covered by a pass that has not begun, or shutting down while waiting
            self._refreshes.forget(key)  # until this pass settles: a refresh waits for it or passes
            body = await self._kube.get(
                api_version=names.API_VERSION, kind=names.KIND, namespace=namespace, name=name
            )
            if body is None or body.get("metadata", {}).get("deletionTimestamp"):
                self.metrics.forget(namespace=namespace, name=name)
                self._finished.pop(key, None)
                self._refer(namespace, name, ())
                return Result(gone=True)  # deleted: garbage collection removes the children
            try:
                # The timer's pass re-reads what the cache has not had confirmed for a while: drift no event
                # told the cache about is corrected.
                older = cache.RECHECK_PERIODS * self._settings.resync_seconds
                with (
                    self.metrics.step("pass"),
                    fresh(older_than=older) if periodic else contextlib.nullcontext(),
                ):
                    result = await self._pass(body)
                if result.retry_after is None:  # a pass that asks for a retry does not count as done
                    self._finished[key] = time.monotonic()
                return result
            except kube.NamespaceTerminating:
                # The namespace is being deleted, children first: recreating them is neither possible
                # nor wanted, and the registry itself goes next.
                log.debug("namespace %s is terminating; not reconciling %s", namespace, name)
                return Result()

    async def node_trust_changed(self, keys: set[tuple[str, str]]) -> None:
        """Node trust published something these registries read: each one's status follows (`refresh`)."""

        async def one(namespace: str, name: str) -> None:
            async with self._fanout:
                try:
                    await self.refresh(namespace=namespace, name=name)
                except kube.KubeError as exc:  # the resync loop brings the next attempt
                    log.warning("status of %s/%s after a node trust change: %s", namespace, name, exc)

        await asyncio.gather(*(one(namespace, name) for namespace, name in sorted(keys)))

    async def refresh(self, *, namespace: str, name: str) -> None:
        """Only node trust's view of this registry changed: report it in status, from what the registry's
        last pass settled (`status.report`, as a pass does; one status patch at most, no reads).

        A registry with no settled pass in this process (after a restart, a blocked pass, a staged CA
        rotation, which moves on with passes) gets a pass instead; a queued pass covers a refresh."""
        key = (namespace, name)
        async with self._turns.refresh_turn(key) as mine:
            if not mine or self._closed:
                return  # a queued pass reads the new view
            if await self._refreshes.report(key):
                return
        await self.reconcile(namespace=namespace, name=name)

    def is_own_write(self, body: Mapping[str, Any], *, deleted: bool) -> bool:
        """Whether a watch event only echoes this process's last write of that object (no pass needed)."""
        return self._writer.is_own_write(body, deleted=deleted)

    async def forget(self, *, body: Mapping[str, Any]) -> None:
        """A registry is being deleted: the nodes stop trusting its CA for its hosts (if they did), and what
        it keeps outside its namespace (pull secret copies, kube-public/local-registry-hosting) goes."""
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        # A pass that started before the deletion could otherwise re-create what is removed here (a pull
        # secret copy, the KEP-1755 ConfigMap, the CA on the nodes) after we removed it: wait for it. Later
        # passes read the registry fresh, see the deletion and stop.
        async with self._turns.exclusive((namespace, name)):
            self.metrics.forget(namespace=namespace, name=name)
            self._finished.pop((namespace, name), None)
            self._refreshes.forget((namespace, name))
            self._refer(namespace, name, ())
            spec = body.get("spec") or {}
            await self._exposure.forget(namespace=namespace, name=name, spec=spec)
            used = (spec.get("nodeTrust") or {}).get("enabled") or (body.get("status") or {}).get("nodeTrust")
            if not self._closed and used:
                await self._trust.forget(namespace=namespace, name=name)

    def _refer(self, namespace: str, name: str, secrets: frozenset[str] | tuple[()]) -> None:
        if self._watched is not None:
            self._watched.refer(namespace=namespace, registry=name, secrets=secrets)

    async def sweep_orphans(self, known: set[tuple[str, str]]) -> None:
        """What registries deleted while no operator watched left outside their namespace goes (`orphans`)."""
        if not self._closed:
            await self._orphans.sweep(known)

    async def close(self) -> None:
        """Stop taking passes, let running ones finish (bounded), then close the client."""
        self._closed = True
        running = self._turns.held()

        async def drain() -> None:
            for lock in running:
                async with lock:
                    pass

        try:
            await asyncio.wait_for(drain(), timeout=_DRAIN_SECONDS)
        except TimeoutError:
            log.warning("closing the API client with reconcile passes still running")
        await self._kube.close()


def _refused_annotations(run: context.Pass, *, allowed: tuple[str, ...]) -> context.Findings:
    """Ingress annotations the builder left out (`tenancy`): Degraded names them."""
    if run.spec.expose.ingress is None:
        return context.Findings()
    _, verdict = tenancy.ingress_annotations(run.spec.expose.ingress.annotations, allowed=allowed)
    return context.Findings() if verdict.ok else context.problem(verdict.reason, verdict.message)
