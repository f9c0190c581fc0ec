"""The one reconcile path of a `PrivateRegistry`: read → policies → builders → adopt → ensure → status.

Create, update, resume, the periodic timer and the watches on referenced Secrets and owned children all end
here, so there is exactly one way state converges. Each pass:
1. reads the registry fresh (a watch event may be stale) and parses its spec once;
2. gathers material: user passwords from the referenced Secrets (hashes reused when they still verify), the
   CA and serving certificate (kept, renewed or refused according to `policies`);
3. builds every child (`builders.desired_children`), adopts it (controller owner reference) and `ensure`s it:
   create when absent, rewrite when the spec hash or any owned field differs, and no write otherwise; a 409 on
   create means someone else created it, so it is re-read and compared like any other live object;
4. writes status (conditions, endpoint, CA and certificate facts) only when it changed, and posts Events for
   transitions.
A problem the schema cannot catch (missing Secret or key, unusable password or certificate) leaves every child
untouched and is reported as Ready=False/Degraded=True with a message naming it; the watch on Secrets or the
timer brings the next attempt, so nothing crash-loops.

Must not: import kopf (handlers translate `Result.retry_after` into kopf's retry), talk to the API except
through `kube.Kube`, or put a password anywhere but into bcrypt.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import hmac
import logging
import secrets
from collections.abc import Callable, Mapping
from typing import Any

import pydantic

from dockyard_operator import (
    builders,
    conditions,
    crypto,
    diff,
    hosting,
    kube,
    model,
    names,
    policies,
    pullsecrets,
    settings,
)
from dockyard_operator.builders import htpasswd_secret, inputs
from dockyard_operator.nodetrust import builders as nt_builders
from dockyard_operator.nodetrust import claims, controller, layout, rotation

log = logging.getLogger(__name__)

Clock = Callable[[], datetime.datetime]
_NEEDS_ALL_CHILDREN = {"Deployment"}
ROTATE_CA = f"{names.GROUP}/rotate-ca"
"""Annotation requesting a staged CA rotation (any new value); on the CA Secret: the request it satisfies."""
_DRAIN_SECONDS = 10.0  # how long shutdown waits for running passes


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclasses.dataclass(frozen=True)
class Result:
    """What the handler should do after a pass: nothing, or retry after `retry_after` seconds."""

    retry_after: float | None = None
    message: str = ""


@dataclasses.dataclass(frozen=True)
class Problem:
    """Something that makes the spec unusable right now (reason, message); never contains secrets."""

    reason: str
    message: str


class _Blocked(Exception):
    """Material gathering found problems: keep children untouched and report them."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


def _decode(secret: Mapping[str, Any] | None) -> dict[str, bytes] | None:
    if secret is None:
        return None
    return {key: base64.b64decode(value) for key, value in (secret.get("data") or {}).items()}


@dataclasses.dataclass
class _Pass:
    """Mutable bookkeeping of one reconcile pass."""

    events: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)  # (type, reason, message)
    degraded: list[Problem] = dataclasses.field(default_factory=list)
    certificate: policies.Verdict | None = None
    storage_problem: Problem | None = None
    ca_status: model.CaStatus | None = None
    cert_status: model.CertificateStatus | None = None
    retry_after: float | None = None
    ca_pem: bytes | None = None
    """The CA clients should trust (for node trust), when one is known."""
    server_cert_pem: bytes | None = None
    node_trust: model.NodeTrustStatus | None = None
    node_trust_verdict: policies.Verdict | None = None
    reused_key_material: set[str] = dataclasses.field(default_factory=set)
    next_ca_pem: bytes | None = None
    """A staged next CA (rotation in progress), published to nodes beside the current one."""
    """Secrets whose key material this pass read instead of generating: never recreated from memory."""


@dataclasses.dataclass(frozen=True)
class _Staged:
    """The CAs of one pass: the current one, the one that signs the serving certificate, the bundle."""

    ca: crypto.KeyPair
    signer: crypto.KeyPair
    bundle: bytes
    handled: str | None


class _NotOurs(Exception):
    """An object with a child's name exists and belongs to someone else (the message says whom)."""


class _Vanished(Exception):
    """A Secret this pass read its key material from was deleted before the pass could write it back."""


class Reconciler:
    """Holds the client, settings and clock; one instance per operator process."""

    def __init__(
        self,
        *,
        client: kube.Kube,
        config: settings.Settings,
        clock: Clock = utc_now,
        cache_key: bytes | None = None,
        node_trust: controller.NodeTrust | None = None,
    ) -> None:
        self._kube = client
        self._settings = config
        self._clock = clock
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._waiting: dict[tuple[str, str], int] = {}
        self._closed = False
        # Passwords already proven to match their hash, remembered as keyed HMACs (the key never leaves this
        # process, so the tags are useless to anyone reading memory dumps without it).
        self._cache_key = cache_key if cache_key is not None else secrets.token_bytes(32)
        self._verified: dict[tuple[str, str, str], tuple[bytes, str]] = {}
        self._node_trust = node_trust
        # Whether a registry published the KEP-1755 ConfigMap / pull secrets on an earlier pass of this
        # process, so registries that never use them cost no API call (and no cluster-wide list that a
        # namespaced install may not hold). Known gap: a feature switched off while the operator was down
        # is withdrawn only when the registry is deleted.
        self._published_hosting: dict[str, bool] = {}
        self._had_pull_secrets: dict[tuple[str, str], bool] = {}
        # uid -> resourceVersion of every child this process last wrote: the watch echo of our own write
        # carries exactly that version and needs no new pass (each pass re-reads every child).
        self._written: dict[str, str] = {}

    async def close(self) -> None:
        """Stop taking passes, let running ones finish (bounded), then close the client."""
        self._closed = True
        running = [lock for lock in list(self._locks.values()) if lock.locked()]

        async def drain() -> None:
            for lock in running:
                async with lock:
                    pass

        try:
            await asyncio.wait_for(drain(), timeout=_DRAIN_SECONDS)
        except TimeoutError:
            log.warning("closing the API client with reconcile passes still running")
        await self._kube.close()

    def is_own_write(self, body: Mapping[str, Any], *, deleted: bool) -> bool:
        """Whether a watch event only echoes this process's last write of that object (no pass needed).

        A deletion is never an echo (the child must be restored), and any later change by someone else
        carries another resourceVersion.
        """
        meta = body.get("metadata", {})
        uid = meta.get("uid")
        if deleted:
            self._written.pop(uid, None)
            return False
        return uid is not None and self._written.get(uid) == meta.get("resourceVersion")

    def _remember_write(self, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata", {})
        if meta.get("uid") and meta.get("resourceVersion"):
            self._written[meta["uid"]] = meta["resourceVersion"]

    async def reconcile(self, *, namespace: str, name: str) -> Result:
        """Bring one registry's children and status in line with its spec (serialized per registry).

        Passes for one registry never overlap. Bursts coalesce: a pass that would only queue behind another
        queued pass returns at once, because that queued pass reads the registry fresh and covers it.
        """
        if self._closed:
            return Result()  # shutting down: the next operator process resumes every registry
        key = (namespace, name)
        lock = self._locks.setdefault(key, asyncio.Lock())
        if lock.locked() and self._waiting.get(key, 0) > 0:
            return Result()
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            async with lock:
                self._waiting[key] -= 1
                body = await self._kube.get(
                    api_version=names.API_VERSION, kind=names.KIND, namespace=namespace, name=name
                )
                if body is None or body.get("metadata", {}).get("deletionTimestamp"):
                    return Result()  # deleted: garbage collection removes the children
                try:
                    return await self._reconcile_body(body)
                except kube.NamespaceTerminating:
                    # The namespace is being deleted, children first: recreating them is neither possible
                    # nor wanted, and the registry itself goes next.
                    log.debug("namespace %s is terminating; not reconciling %s", namespace, name)
                    return Result()
        finally:
            if self._waiting.get(key) == 0 and not lock.locked():
                self._waiting.pop(key, None)
                self._locks.pop(key, None)

    # ----------------------------------------------------------------------------------------- pass

    async def _reconcile_body(self, body: dict[str, Any]) -> Result:
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        generation = meta.get("generation")
        now = self._clock()
        state = _Pass()
        previous = _parse_conditions(body)
        try:
            spec = model.parse_spec(body.get("spec") or {})
        except pydantic.ValidationError as exc:
            problem = Problem("InvalidSpec", model.spec_error_message(exc))
            return await self._report_blocked(body, previous, [problem], now=now)

        child_names = names.Names.of(name)
        owner = inputs.Owner(name=name, namespace=namespace, uid=meta["uid"])
        try:
            htpasswd, access = await self._users(
                spec=spec, namespace=namespace, child_names=child_names, owner=owner
            )
            tls_fields = await self._tls(
                spec=spec,
                namespace=namespace,
                child_names=child_names,
                owner=owner,
                now=now,
                state=state,
                requested_rotation=(meta.get("annotations") or {}).get(ROTATE_CA),
            )
        except _Blocked as blocked:
            return await self._report_blocked(body, previous, blocked.problems, now=now, state=state)

        desired_inputs = inputs.Inputs(
            registry=name,
            namespace=namespace,
            spec=spec,
            names=child_names,
            registry_image=self._settings.registry_image,
            nginx_image=self._settings.nginx_image,
            htpasswd=htpasswd,
            access_yaml=access,
            **tls_fields,
        )
        applied = await self._apply(desired_inputs, owner=owner, state=state)
        if spec.expose.ingress is None:
            await self._remove_ingress(namespace=namespace, child_names=child_names, owner=owner, state=state)

        await self._sync_node_trust(body=body, spec=spec, applied=applied, state=state)
        await self._local_registry_hosting(
            spec=spec, owner=owner, service=applied.get("Service"), state=state
        )
        await self._pull_secrets(spec=spec, owner=owner, service=applied.get("Service"), state=state)
        status = self._status(
            body=body,
            spec=spec,
            previous=previous,
            state=state,
            deployment=applied.get("Deployment"),
            pvc=applied.get("PersistentVolumeClaim"),
            now=now,
            generation=generation,
            service=applied.get("Service"),
        )
        await self._write_status(body, status, previous=previous, now=now, state=state)
        return Result(retry_after=state.retry_after, message="; ".join(p.message for p in state.degraded))

    async def _apply(
        self, desired_inputs: inputs.Inputs, *, owner: inputs.Owner, state: _Pass
    ) -> dict[str, dict[str, Any]]:
        """Ensure every child in apply order; returns the live objects by kind (for status).

        Problems with one child are recorded on `state` and the others are still applied, except that the
        Deployment is left alone while another child's name belongs to someone else.
        """
        namespace = owner.namespace
        applied: dict[str, dict[str, Any]] = {}
        conflicts = False
        for child in builders.desired_children(desired_inputs):
            adopted = builders.adopt(child, owner=owner)
            meta = adopted["metadata"]
            if conflicts and adopted["kind"] in _NEEDS_ALL_CHILDREN:
                # Its pods would mount someone else's object: leave the running Deployment as it is.
                current = await self._kube.get(
                    api_version=adopted["apiVersion"],
                    kind=adopted["kind"],
                    namespace=namespace,
                    name=meta["name"],
                )
                if current is not None:
                    applied[adopted["kind"]] = current
                continue
            # A key Secret deleted while this pass ran must be decided afresh (reissue, or refuse for the CA)
            # by the next pass, not silently restored from what this pass happened to read before.
            may_create = not (
                adopted["kind"] == "Secret" and adopted["metadata"]["name"] in state.reused_key_material
            )
            try:
                applied[adopted["kind"]] = await self._ensure(
                    adopted, owner=owner, state=state, may_create=may_create
                )
            except _NotOurs as exc:
                state.degraded.append(Problem("NameConflict", str(exc)))
                conflicts = True
            except _Vanished:
                state.retry_after = 1.0
            except kube.Invalid as exc:
                problem = Problem("ChildRejected", str(exc))
                if adopted["kind"] == "PersistentVolumeClaim":
                    state.storage_problem = Problem("ClaimUpdateRejected", str(exc))
                else:
                    state.degraded.append(problem)
            except kube.Forbidden as exc:
                state.degraded.append(Problem("Forbidden", str(exc)))
                state.retry_after = 60.0
            except (kube.Conflict, kube.Unavailable) as exc:
                state.degraded.append(Problem("ApplyFailed", str(exc)))
                state.retry_after = 5.0
        return applied

    # ---------------------------------------------------------------------------------- node trust

    async def forget(self, *, body: Mapping[str, Any]) -> None:
        """A registry is being deleted: the nodes stop trusting its CA for its hosts (if they did), and what
        it keeps outside its namespace (pull secret copies, kube-public/local-registry-hosting) goes."""
        meta = body.get("metadata") or {}
        registry_ns, registry = str(meta.get("namespace")), str(meta.get("name"))
        # A pass that started before the deletion could otherwise re-create what is removed here (a pull
        # secret copy, the KEP-1755 ConfigMap, the CA on the nodes) after we removed it: wait for it. Later
        # passes read the registry fresh, see the deletion and stop.
        key = (registry_ns, registry)
        async with self._locks.setdefault(key, asyncio.Lock()):
            await self._forget(body=body)

    async def _forget(self, *, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        registry_ns, registry = str(meta.get("namespace")), str(meta.get("name"))
        spec_raw = body.get("spec") or {}
        if spec_raw.get("pullSecrets"):
            for copy in await self._pull_secret_copies(namespace=registry_ns, name=registry):
                await self._remove_pull_secret(copy)
        if spec_raw.get("publishLocalRegistryHosting"):
            live = await self._kube.get(
                api_version="v1", kind="ConfigMap", namespace=hosting.NAMESPACE, name=hosting.NAME
            )
            if hosting.owned_by(live, hosting.owner_of(registry_ns, registry)):
                await self._kube.delete(
                    api_version="v1", kind="ConfigMap", namespace=hosting.NAMESPACE, name=hosting.NAME
                )
        used = ((body.get("spec") or {}).get("nodeTrust") or {}).get("enabled") or (
            (body.get("status") or {}).get("nodeTrust")
        )
        if self._node_trust is not None and not self._closed and used:
            await self._node_trust.forget(str(meta.get("namespace")), str(meta.get("name")))

    # ------------------------------------------------------------------ reaching the registry from outside

    async def _local_registry_hosting(
        self,
        *,
        spec: model.PrivateRegistrySpec,
        owner: inputs.Owner,
        service: Mapping[str, Any] | None,
        state: _Pass,
    ) -> None:
        """Publish (or withdraw) kube-public/local-registry-hosting for this registry (KEP-1755).

        One per cluster: the first registry keeps it; another asking for it is told (Degraded) and never
        overwrites it. Withdrawn when the spec stops asking for it (and by `forget` on deletion).
        """
        me = hosting.owner_of(owner.namespace, owner.name)
        ref = {"api_version": "v1", "kind": "ConfigMap", "namespace": hosting.NAMESPACE, "name": hosting.NAME}
        endpoint = _node_endpoint(spec, service)
        try:
            if not spec.publish_local_registry_hosting or endpoint is None:
                if spec.publish_local_registry_hosting:
                    state.degraded.append(
                        Problem(
                            "HostingNeedsNodePort", "publishLocalRegistryHosting needs expose.type NodePort"
                        )
                    )
                live = await self._kube.get(**ref) if self._published_hosting.get(me, False) else None
                if live is not None and hosting.owned_by(live, me):
                    await self._kube.delete(**ref)
                    state.events.append(("Normal", "Deleted", "withdrew kube-public/local-registry-hosting"))
                self._published_hosting[me] = False
                return
            live = await self._kube.get(**ref)
            if live is not None and not hosting.owned_by(live, me):
                holder = ((live.get("metadata") or {}).get("annotations") or {}).get(hosting.OWNER_ANNOTATION)
                state.degraded.append(
                    Problem(
                        "HostingTaken",
                        f"kube-public/local-registry-hosting is published for {holder or 'someone else'}; "
                        "not overwritten",
                    )
                )
                return
            want = diff.with_spec_hash(
                hosting.configmap(
                    owner=me,
                    node_endpoint=endpoint,
                    cluster_endpoint=_endpoint(spec, names.Names.of(owner.name), owner.namespace),
                )
            )
            if live is None:
                await self._kube.create(manifest=want)
                state.events.append(("Normal", "Created", "published kube-public/local-registry-hosting"))
            elif diff.needs_update(want, live):
                await self._kube.replace(manifest=diff.replacement(want, live))
            self._published_hosting[me] = True
        except kube.KubeError as exc:
            state.degraded.append(Problem("HostingFailed", f"kube-public/local-registry-hosting: {exc}"))
            state.retry_after = 10.0

    async def _pull_secret_copies(self, *, namespace: str, name: str) -> list[dict[str, Any]]:
        return await self._kube.list(
            api_version="v1",
            kind="Secret",
            labels={pullsecrets.FOR_LABEL: pullsecrets.owner_label(namespace, name)},
        )

    def _claimable(
        self,
        *,
        spec: model.PrivateRegistrySpec,
        owner: inputs.Owner,
        service: Mapping[str, Any] | None,
        state: _Pass,
    ) -> list[str]:
        """`nodeTrust.hostnames` node trust would publish (`claims`): the user's password must not go to
        docker.io or another team's host either (NodeTrustReady names the others)."""
        served = controller.served(
            spec=spec,
            name=owner.name,
            namespace=owner.namespace,
            service=service,
            server_cert_pem=state.server_cert_pem.decode() if state.server_cert_pem else None,
            cluster_domain=self._settings.cluster_domain,
        )
        allowed = self._settings.node_trust_allowed_hosts
        return [h for h in spec.node_trust.hostnames if claims.verdict(h, served=served, allowed=allowed).ok]

    async def _pull_secrets(
        self,
        *,
        spec: model.PrivateRegistrySpec,
        owner: inputs.Owner,
        service: Mapping[str, Any] | None,
        state: _Pass,
    ) -> None:
        """Keep one dockerconfigjson Secret per chosen namespace, in sync with the user's password; remove
        copies no longer wanted. They live in other namespaces, so our label (not an owner reference) finds
        them again. A registry that never asked for pull secrets costs no API call here."""
        chosen = spec.pull_secrets
        me = (owner.namespace, owner.name)
        if chosen is None and not self._had_pull_secrets.get(me, False):
            return
        wanted: dict[str, dict[str, Any]] = {}
        try:
            if chosen is not None:
                user = next((u for u in spec.auth.users if u.name == chosen.user), None)
                if user is None:
                    state.degraded.append(
                        Problem(
                            "PullSecretUserUnknown", f"pullSecrets.user {chosen.user!r} is not in auth.users"
                        )
                    )
                    return
                ref = user.password_secret_ref
                password = ((await self._secret(namespace=owner.namespace, name=ref.name)) or {}).get(ref.key)
                if password is None:
                    return  # the users step already reports the missing Secret or key
                hosts = [
                    host
                    for host in (
                        _node_endpoint(spec, service),
                        _endpoint(spec, names.Names.of(owner.name), owner.namespace),
                        *self._claimable(spec=spec, owner=owner, service=service, state=state),
                    )
                    if host
                ]
                config = pullsecrets.dockerconfigjson(hosts=hosts, username=user.name, password=password)
                secret_name = chosen.secret_name or names.dns_label(owner.name, "-pull")
                targets: list[str] = list(chosen.namespaces)
                if chosen.namespace_selector:
                    targets = pullsecrets.selected(
                        await self._kube.list_namespaces(),
                        listed=chosen.namespaces,
                        match_labels=chosen.namespace_selector,
                    )
                for target in sorted(set(targets)):
                    wanted[target] = pullsecrets.secret(
                        name=secret_name,
                        namespace=target,
                        registry_namespace=owner.namespace,
                        registry=owner.name,
                        config=config,
                    )
                    if chosen.service_account:
                        # Remembered on the copy, so removing it later also removes the entry it added.
                        wanted[target]["metadata"]["annotations"] = {
                            pullsecrets.ACCOUNT_ANNOTATION: chosen.service_account
                        }
            for target, desired in wanted.items():
                try:
                    await self._ensure_foreign(desired)
                    if chosen is not None and chosen.service_account:
                        await self._add_pull_secret(
                            namespace=target,
                            account=chosen.service_account,
                            secret=desired["metadata"]["name"],
                        )
                except (kube.NotFound, kube.NamespaceTerminating):
                    continue  # no such namespace (yet): a later pass (the timer) brings the Secret
            for copy in await self._pull_secret_copies(namespace=owner.namespace, name=owner.name):
                where = copy["metadata"]
                keep = wanted.get(where["namespace"])
                if keep is None or keep["metadata"]["name"] != where["name"]:
                    await self._remove_pull_secret(copy)
            self._had_pull_secrets[me] = chosen is not None
        except kube.KubeError as exc:
            state.degraded.append(Problem("PullSecretsFailed", f"pull secrets: {exc}"))
            state.retry_after = 10.0

    async def _ensure_foreign(self, desired: dict[str, Any]) -> None:
        """Create or correct an object we keep in another namespace; one that is not ours is left alone."""
        want = diff.with_spec_hash(desired)
        meta = want["metadata"]
        ref = {"api_version": want["apiVersion"], "kind": want["kind"], "namespace": meta["namespace"],
               "name": meta["name"]}  # fmt: skip
        live = await self._kube.get(**ref)
        if live is None:
            await self._kube.create(manifest=want)
            return
        labels = (live.get("metadata") or {}).get("labels") or {}
        if labels.get(pullsecrets.FOR_LABEL) != meta["labels"][pullsecrets.FOR_LABEL]:
            raise kube.Conflict(f"{kube.describe(want)} exists and is not ours; left alone", status=409)
        if diff.needs_update(want, live):
            await self._kube.replace(manifest=diff.replacement(want, live))

    async def _remove_pull_secret(self, copy: Mapping[str, Any]) -> None:
        """Delete one pull secret copy and the ServiceAccount entry it was added to (if any)."""
        where = copy["metadata"]
        account = (where.get("annotations") or {}).get(pullsecrets.ACCOUNT_ANNOTATION)
        if account:
            live = await self._kube.get(
                api_version="v1", kind="ServiceAccount", namespace=where["namespace"], name=account
            )
            updated = pullsecrets.without_pull_secret(live, where["name"]) if live is not None else None
            if updated is not None:
                await self._kube.replace(manifest=updated)
        await self._kube.delete(
            api_version="v1", kind="Secret", namespace=where["namespace"], name=where["name"]
        )

    async def _add_pull_secret(self, *, namespace: str, account: str, secret: str) -> None:
        live = await self._kube.get(
            api_version="v1", kind="ServiceAccount", namespace=namespace, name=account
        )
        if live is None:
            return  # e.g. `default` before its controller made it: the next pass adds the Secret
        updated = pullsecrets.with_pull_secret(live, secret)
        if updated is not None:
            await self._kube.replace(manifest=updated)

    async def _sync_node_trust(
        self,
        *,
        body: Mapping[str, Any],
        spec: model.PrivateRegistrySpec,
        applied: Mapping[str, Mapping[str, Any]],
        state: _Pass,
    ) -> None:
        """Hand this registry's CA and hosts to node trust and record what the nodes report.

        Registries without node trust cost nothing here, except one pass after it was switched off, which
        withdraws their CA from the nodes. During a staged rotation the next CA is handed in beside the
        current one; the plan this sync computes drives the next pass (`_staged_rotation`).
        """
        if self._node_trust is None:
            # nodeTrust.enabled is the default, so an operator run without a namespace (no node trust
            # controller) says so on the registry instead of leaving the default silently unserved.
            if spec.node_trust.enabled:
                state.node_trust_verdict = policies.Verdict(
                    False,
                    "NotConfigured",
                    "node trust is not configured for this operator (no operator namespace)",
                )
            return
        enabled = spec.node_trust.enabled
        if not enabled and not (body.get("status") or {}).get("nodeTrust"):
            return
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        update = None
        if enabled:
            update = controller.source(
                spec=spec,
                name=name,
                namespace=namespace,
                service=applied.get("Service"),
                current_pem=state.ca_pem.decode() if state.ca_pem else None,
                next_pem=state.next_ca_pem.decode() if state.next_ca_pem else None,
                server_cert_pem=state.server_cert_pem.decode() if state.server_cert_pem else None,
                cluster_domain=self._settings.cluster_domain,
                deployment=applied.get("Deployment"),
                created=str(meta.get("creationTimestamp") or ""),
            )
        try:
            observed = await self._node_trust.sync(key=(namespace, name), update=update)
        except kube.KubeError as exc:
            if enabled:
                state.node_trust_verdict = policies.Verdict(False, "PublishFailed", str(exc))
            return
        view = observed.view(namespace, name)
        verdict = observed.verdict(namespace, name)
        if not enabled or view is None or verdict is None:
            return
        state.node_trust_verdict = policies.Verdict(verdict.ok, verdict.reason, verdict.message)
        state.node_trust = model.NodeTrustStatus(
            hosts=list(view.hosts),
            desired=observed.nodes.desired,
            ready=observed.nodes.ready,
            trusting=observed.trusted(namespace, name),
            ca_fingerprint_on_nodes=[
                fp
                for fp in view.fingerprints
                if observed.nodes.desired
                and rotation.everywhere(observed.nodes, hosts=view.hosts, fingerprint=fp)
            ],
        )

    async def _staged_rotation(
        self,
        *,
        spec: model.PrivateRegistrySpec,
        owner: inputs.Owner,
        ca: crypto.KeyPair,
        handled: str | None,
        requested: str | None,
        now: datetime.datetime,
        state: _Pass,
        permitted: crypto.Constraints | None = None,
    ) -> _Staged:
        """Staged CA rotation, driven by node trust (see `nodetrust.rotation`).

        A new value of the `dockyard.dev/rotate-ca` annotation creates a next CA in `<name>-ca-next`; node
        trust publishes it beside the current one; once every node trusts it the serving certificate is
        reissued from it; once every pod serves that certificate it is promoted into `<name>-ca` (recording
        the request it satisfied), and the staged Secret, now a copy of the CA, means "no rotation" (so the
        operator needs no right to delete Secrets). Clients get `ca.crt` with both CAs meanwhile. Without
        node trust there is nobody to stage for: the request waits.
        """
        stable = _Staged(ca=ca, signer=ca, bundle=ca.cert_pem, handled=handled)
        if self._node_trust is None or not spec.node_trust.enabled:
            return stable
        next_name = nt_builders.next_ca_name(owner.name)
        staged_object = await self._own_secret_object(owner=owner, name=next_name)
        data = _decode(staged_object)
        staged = crypto.KeyPair(data["ca.crt"], data["ca.key"]) if data and "ca.key" in data else None
        staged_for = ((staged_object or {}).get("metadata", {}).get("annotations") or {}).get(ROTATE_CA)
        if staged is not None and layout.fingerprint(staged.cert_pem.decode()) == layout.fingerprint(
            ca.cert_pem.decode()
        ):
            # Already promoted: the staged Secret stays as an identical copy (no rotation in progress)
            # instead of being deleted, so the operator needs no right to delete Secrets.
            staged = None
        if staged is None:
            if not requested or requested == handled:
                return stable
            staged = await asyncio.to_thread(
                crypto.new_ca,
                common_name=f"Dockyard CA {owner.namespace}/{owner.name} ({requested})"[:64],
                now=now,
                duration=model.parse_duration(spec.tls.ca_duration),
                permitted=permitted,
            )
            manifest = nt_builders.next_ca_secret(
                registry=owner.name, cert_pem=staged.cert_pem, key_pem=staged.key_pem
            )
            manifest["metadata"]["annotations"] = {ROTATE_CA: requested}
            staged_for = requested
            adopted = builders.adopt(manifest, owner=owner)
            found = None
            if staged_object is None:
                found = await self._create_staged(adopted, owner=owner, current=ca, state=state)
            if found is None:
                await self._ensure(adopted, owner=owner, state=state)  # created, or replaces a copy of the CA
                state.events.append(
                    ("Normal", "CARotationStarted", f"staged a next CA for rotation {requested!r}")
                )
            else:
                staged, staged_for = found
                state.reused_key_material.add(next_name)
        else:
            state.reused_key_material.add(next_name)
        plan = self._node_trust.plan_for(owner.namespace, owner.name)
        staged_pem = staged.cert_pem.decode()
        publishes_staged = plan is not None and any(
            layout.fingerprint(pem) == layout.fingerprint(staged_pem) for pem in plan.publish
        )
        if plan is not None and publishes_staged and plan.promote:
            state.events.append(
                ("Normal", "CARotated", "the next CA is now the CA; the previous one is retired")
            )
            return _Staged(ca=staged, signer=staged, bundle=staged.cert_pem, handled=staged_for or requested)
        state.next_ca_pem = staged.cert_pem
        signer = staged if plan is not None and publishes_staged and plan.serve_with_next else ca
        return _Staged(ca=ca, signer=signer, bundle=ca.cert_pem + staged.cert_pem, handled=handled)

    async def _create_staged(
        self, adopted: dict[str, Any], *, owner: inputs.Owner, current: crypto.KeyPair, state: _Pass
    ) -> tuple[crypto.KeyPair, str | None] | None:
        """Create the staged next CA Secret that this pass read as absent; never replace one that exists.

        It can exist unseen: an earlier create whose answer was lost was still in flight at the API server
        when this pass read. Its CA may already be published to the nodes, so overwriting it (as `_ensure`
        does after AlreadyExists) would stage a second next CA for one request. Returns that Secret's CA
        and the request it was staged for, or None when ours was created or the Secret found is only the
        promoted copy of the current CA (then the caller replaces it as usual).
        """
        try:
            created = await self._kube.create(manifest=diff.with_spec_hash(adopted))
        except kube.AlreadyExists:
            live = await self._own_secret_object(owner=owner, name=adopted["metadata"]["name"])
            data = _decode(live)
            if live is None or not data or "ca.key" not in data:
                return None
            kept = crypto.KeyPair(data["ca.crt"], data["ca.key"])
            if layout.fingerprint(kept.cert_pem.decode()) == layout.fingerprint(current.cert_pem.decode()):
                return None
            annotations = live.get("metadata", {}).get("annotations") or {}
            return kept, annotations.get(ROTATE_CA)
        state.events.append(("Normal", "Created", f"created Secret {adopted['metadata']['name']}"))
        self._remember_write(created)
        return None

    # ------------------------------------------------------------------------------------ material

    async def _own_secret(self, *, owner: inputs.Owner, name: str) -> dict[str, bytes] | None:
        """One of our Secrets, decoded; None when absent.

        Someone else's Secret of that name blocks the pass: its key material must neither be used (a foreign
        CA signing our certificate) nor overwritten.
        """
        return _decode(await self._own_secret_object(owner=owner, name=name))

    async def _own_secret_object(self, *, owner: inputs.Owner, name: str) -> dict[str, Any] | None:
        live = await self._kube.get(api_version="v1", kind="Secret", namespace=owner.namespace, name=name)
        if live is None:
            return None
        verdict = policies.ownership_verdict(live, owner_uid=owner.uid, registry=owner.name)
        if not verdict.ok:
            raise _Blocked([Problem(verdict.reason, verdict.message)])
        return live

    async def _secret(self, *, namespace: str, name: str) -> dict[str, bytes] | None:
        return _decode(await self._kube.get(api_version="v1", kind="Secret", namespace=namespace, name=name))

    async def _users(
        self,
        *,
        spec: model.PrivateRegistrySpec,
        namespace: str,
        child_names: names.Names,
        owner: inputs.Owner,
    ) -> tuple[str, str]:
        """(htpasswd, access.yaml); hashes are reused for passwords that did not change."""
        problems: list[Problem] = []
        secrets: dict[str, dict[str, bytes] | None] = {}
        passwords: dict[str, bytes] = {}
        for user in spec.auth.users:
            ref = user.password_secret_ref
            if ref.name not in secrets:
                secrets[ref.name] = await self._secret(namespace=namespace, name=ref.name)
            data = secrets[ref.name]
            if data is None:
                problems.append(Problem("SecretNotFound", f"user {user.name}: Secret {ref.name!r} not found"))
                continue
            if ref.key not in data:
                problems.append(
                    Problem(
                        "SecretKeyMissing", f"user {user.name}: Secret {ref.name!r} has no key {ref.key!r}"
                    )
                )
                continue
            try:
                crypto.check_password(data[ref.key])
            except crypto.CryptoError as exc:
                problems.append(
                    Problem(
                        "InvalidPassword", f"user {user.name}: Secret {ref.name!r} key {ref.key!r}: {exc}"
                    )
                )
                continue
            passwords[user.name] = data[ref.key]
        if problems:
            raise _Blocked(problems)
        current = await self._own_secret(owner=owner, name=child_names.htpasswd_secret) or {}
        existing = crypto.parse_htpasswd(current.get("htpasswd", b"").decode("utf-8", "replace"))
        rounds = self._settings.bcrypt_rounds
        hashes: dict[str, str] = {}
        for user_name, password in passwords.items():
            key = (namespace, child_names.registry, user_name)
            tag = hmac.digest(self._cache_key, password, "sha256")
            current_hash = existing.get(user_name)
            if current_hash is not None and self._verified.get(key) == (tag, current_hash):
                # Verified on an earlier pass: bcrypt costs as much to verify as to hash, and the timer
                # would otherwise pay it for every user on every resync.
                hashes[user_name] = current_hash
                continue
            # bcrypt is deliberately slow: keep it off the event loop that serves every other registry.
            hashes[user_name] = await asyncio.to_thread(
                crypto.reuse_or_hash, user=user_name, password=password, existing=existing, rounds=rounds
            )
            self._verified[key] = (tag, hashes[user_name])
        return crypto.render_htpasswd(hashes), htpasswd_secret.access_yaml(spec.auth)

    async def _tls(
        self,
        *,
        spec: model.PrivateRegistrySpec,
        namespace: str,
        child_names: names.Names,
        owner: inputs.Owner,
        now: datetime.datetime,
        state: _Pass,
        requested_rotation: str | None = None,
    ) -> dict[str, Any]:
        """The TLS-related `Inputs` fields, issuing or renewing certificates as the policies say."""
        if spec.tls.mode == "Secret":
            return await self._byo_tls(spec=spec, namespace=namespace, now=now, state=state)
        ca_object = await self._own_secret_object(owner=owner, name=child_names.ca_secret)
        ca_data = _decode(ca_object)
        tls_data = await self._own_secret(owner=owner, name=child_names.tls_secret)
        action, verdict = policies.ca_action(ca_secret=ca_data, tls_secret=tls_data)
        if action is policies.CaAction.REFUSE:
            state.degraded.append(Problem(verdict.reason, verdict.message))
            state.certificate = verdict
            # Keep serving whatever the pod mounts today; never touch either Secret.
            existing = tls_data or {}
            if existing.get("ca.crt"):
                state.ca_status = _ca_status(existing["ca.crt"], child_names.tls_secret)
                state.ca_pem = existing["ca.crt"]
            if existing.get("tls.crt"):
                state.cert_status = _cert_status(existing["tls.crt"], child_names.tls_secret)
                state.server_cert_pem = existing["tls.crt"]
            return {
                "tls_secret_name": child_names.tls_secret,
                # The same digest a normal pass computes for this material: the pods must not roll.
                "tls_digest": _tls_digest(
                    existing.get("tls.crt", b""), existing.get("tls.key", b""), existing.get("ca.crt", b"")
                ),
            }
        dns, ips = policies.desired_sans(
            spec=spec,
            child_names=child_names,
            namespace=namespace,
            cluster_domain=self._settings.cluster_domain,
        )
        if action is policies.CaAction.CREATE:
            ca = await asyncio.to_thread(
                crypto.new_ca,
                common_name=f"Dockyard CA {namespace}/{child_names.registry}",
                now=now,
                duration=model.parse_duration(spec.tls.ca_duration),
                permitted=policies.ca_constraints(dns, ips),
            )
            state.events.append(
                ("Normal", "CACreated", f"created CA {crypto.inspect(ca.cert_pem).fingerprint_sha256}")
            )
        else:
            assert ca_data is not None
            ca = crypto.KeyPair(ca_data["ca.crt"], ca_data["ca.key"])
            state.reused_key_material.add(child_names.ca_secret)
        handled = ((ca_object or {}).get("metadata", {}).get("annotations") or {}).get(ROTATE_CA)
        if action is policies.CaAction.CREATE:
            handled = requested_rotation  # a request older than the CA is already satisfied by it
        staged = await self._staged_rotation(
            spec=spec,
            owner=owner,
            ca=ca,
            handled=handled,
            requested=requested_rotation,
            now=now,
            state=state,
            permitted=policies.ca_constraints(dns, ips),
        )
        ca, signer, bundle = staged.ca, staged.signer, staged.bundle
        ca_annotations = {ROTATE_CA: staged.handled} if staged.handled else {}
        # A CA made with name constraints vouches only for the names the spec had then (older CAs have none).
        dns, ips, outside = policies.within_constraints(
            crypto.inspect(signer.cert_pem).permitted, dns_names=dns, ip_addresses=ips
        )
        if outside:
            state.degraded.append(
                Problem(
                    "NamesOutsideCA",
                    f"the CA may only vouch for the names the registry had when it was created, so "
                    f"{', '.join(outside)} are left out of the serving certificate; request a CA rotation "
                    f"(annotation {ROTATE_CA}) to include them",
                )
            )
        verdict = policies.server_cert_verdict(
            tls_secret=tls_data,
            ca_pem=signer.cert_pem,
            ca_bundle=bundle,
            dns_names=dns,
            ip_addresses=ips,
            now=now,
            renew_before=model.parse_duration(spec.tls.renew_before),
        )
        if verdict.ok:
            assert tls_data is not None
            server = crypto.KeyPair(tls_data["tls.crt"], tls_data["tls.key"])
            state.reused_key_material.add(child_names.tls_secret)
        else:
            server = await asyncio.to_thread(
                crypto.issue_server_cert,
                ca=signer,
                common_name=dns[0],
                dns_names=dns,
                ip_addresses=ips,
                now=now,
                duration=model.parse_duration(spec.tls.cert_duration),
            )
            state.events.append(
                ("Normal", "CertificateIssued", f"issued the serving certificate ({verdict.reason})")
            )
        info = crypto.inspect(server.cert_pem)
        ca_info = crypto.inspect(ca.cert_pem)
        if ca_info.not_after <= now:
            state.certificate = policies.Verdict(
                False,
                "CAExpired",
                f"the CA expired at {ca_info.not_after.isoformat()}; delete both TLS Secrets to rotate",
            )
            state.degraded.append(Problem("CAExpired", state.certificate.message))
        elif verdict.ok:
            state.certificate = verdict  # Valid, or LimitedByCA when the CA expires first
        else:
            # Same reason and message as the next pass's "kept" verdict, so status does not flap; the
            # issuance itself is told by the CertificateIssued Event.
            state.certificate = policies.Verdict(True, "Valid", f"valid until {info.not_after.isoformat()}")
        state.ca_status = _ca_status(ca.cert_pem, child_names.tls_secret)
        state.cert_status = _cert_status(server.cert_pem, child_names.tls_secret)
        state.ca_pem, state.server_cert_pem = ca.cert_pem, server.cert_pem
        return {
            "tls_secret_name": child_names.tls_secret,
            "tls_digest": _tls_digest(server.cert_pem, server.key_pem, bundle),
            "tls": inputs.TlsMaterial(cert_pem=server.cert_pem, key_pem=server.key_pem, ca_pem=bundle),
            "ca": ca,
            "ca_annotations": ca_annotations,
        }

    async def _byo_tls(
        self, *, spec: model.PrivateRegistrySpec, namespace: str, now: datetime.datetime, state: _Pass
    ) -> dict[str, Any]:
        secret_name = spec.tls.secret_name or ""
        data = await self._secret(namespace=namespace, name=secret_name)
        verdict = policies.byo_cert_verdict(secret=data, secret_name=secret_name, now=now)
        if not verdict.ok:
            raise _Blocked([Problem(verdict.reason, verdict.message)])
        assert data is not None
        state.certificate = verdict
        state.cert_status = _cert_status(data["tls.crt"], secret_name)
        state.server_cert_pem = data["tls.crt"]
        if data.get("ca.crt"):
            try:
                state.ca_status = _ca_status(data["ca.crt"], secret_name)
                state.ca_pem = data["ca.crt"]
            except crypto.CryptoError:
                state.ca_status = None
        return {
            "tls_secret_name": secret_name,
            "tls_digest": _tls_digest(data["tls.crt"], data["tls.key"], data.get("ca.crt", b"")),
        }

    # -------------------------------------------------------------------------------------- ensure

    async def _ensure(
        self, desired: dict[str, Any], *, owner: inputs.Owner, state: _Pass, may_create: bool = True
    ) -> dict[str, Any]:
        """Create or correct one child; no write when every owned field already matches."""
        want = diff.with_spec_hash(desired)
        meta = want["metadata"]
        ref = {
            "api_version": want["apiVersion"],
            "kind": want["kind"],
            "namespace": meta["namespace"],
            "name": meta["name"],
        }
        live = await self._kube.get(**ref)
        if live is None and not may_create:
            raise _Vanished(kube.describe(want))
        if live is None:
            try:
                created = await self._kube.create(manifest=want)
            except kube.AlreadyExists:
                live = await self._kube.get(**ref)  # created behind our back: compare like any live object
                if live is None:
                    raise kube.Conflict(f"{kube.describe(want)} appeared and vanished", status=409) from None
            else:
                state.events.append(("Normal", "Created", f"created {want['kind']} {meta['name']}"))
                self._remember_write(created)
                return created
        verdict = policies.ownership_verdict(live, owner_uid=owner.uid, registry=owner.name)
        if not verdict.ok:
            raise _NotOurs(verdict.message)
        for attempt in range(2):
            reasons = diff.needs_update(want, live)
            if not reasons:
                return live
            try:
                updated = await self._kube.replace(manifest=diff.replacement(want, live))
            except kube.NotFound:
                # deleted between read and write: create it (unless it held key material we only read)
                return await self._ensure(desired, owner=owner, state=state, may_create=may_create)
            except kube.Conflict:
                if attempt:
                    raise
                live = await self._kube.get(**ref)  # lost a race with another writer: re-read and retry once
                if live is None:
                    return await self._ensure(desired, owner=owner, state=state, may_create=may_create)
                continue
            log.info("updated %s (%s)", kube.describe(want), ", ".join(reasons[:5]))
            state.events.append(
                ("Normal", "Updated", f"updated {want['kind']} {meta['name']}: {', '.join(reasons[:3])}")
            )
            self._remember_write(updated)
            return updated
        raise AssertionError("unreachable")

    async def _remove_ingress(
        self, *, namespace: str, child_names: names.Names, owner: inputs.Owner, state: _Pass
    ) -> None:
        """Delete our Ingress when spec.expose.ingress was removed (only if we own it)."""
        ref = {
            "api_version": "networking.k8s.io/v1",
            "kind": "Ingress",
            "namespace": namespace,
            "name": child_names.ingress,
        }
        try:
            live = await self._kube.get(**ref)
            if live is None:
                return
            owners = live.get("metadata", {}).get("ownerReferences") or []
            if any(o.get("uid") == owner.uid for o in owners):
                await self._kube.delete(**ref)
                state.events.append(("Normal", "Deleted", f"deleted Ingress {child_names.ingress}"))
        except kube.Forbidden as exc:
            state.degraded.append(Problem("Forbidden", str(exc)))

    # -------------------------------------------------------------------------------------- status

    def _status(
        self,
        *,
        body: Mapping[str, Any],
        spec: model.PrivateRegistrySpec,
        previous: list[model.Condition],
        state: _Pass,
        deployment: Mapping[str, Any] | None,
        pvc: Mapping[str, Any] | None,
        now: datetime.datetime,
        generation: int | None,
        service: Mapping[str, Any] | None = None,
    ) -> model.PrivateRegistryStatus:
        child_names = names.Names.of(body["metadata"]["name"])
        ready = policies.deployment_verdict(deployment, replicas=spec.replicas)
        pvc_phase = ((pvc or {}).get("status") or {}).get("phase")
        storage = policies.storage_verdict(spec, pvc_phase=pvc_phase)
        if state.storage_problem is not None:
            storage = policies.Verdict(False, state.storage_problem.reason, state.storage_problem.message)
        if storage.reason in {"StorageNotShared", "ClaimUpdateRejected", "ClaimLost"}:
            state.degraded.append(Problem(storage.reason, storage.message))

        conds = list(previous)

        def put(type_: str, ok: bool, reason: str, message: str) -> None:
            nonlocal conds
            conds = conditions.set_condition(
                conds,
                type_=type_,
                status=conditions.TRUE if ok else conditions.FALSE,
                reason=reason,
                message=message,
                now=now,
                generation=generation,
            )

        put(conditions.READY, ready.ok, ready.reason, ready.message)
        progressing = not ready.ok or ready.reason == "RollingOut"
        put(
            conditions.PROGRESSING,
            progressing and ready.reason not in {"ScaledToZero"},
            ready.reason if progressing else "ReconcileComplete",
            ready.message if progressing else "all children are up to date",
        )
        if state.degraded:
            put(
                conditions.DEGRADED,
                True,
                state.degraded[0].reason,
                "; ".join(p.message for p in state.degraded),
            )
        else:
            put(conditions.DEGRADED, False, "AsExpected", "no problems found")
        if state.certificate is not None:
            put(
                conditions.CERTIFICATE_READY,
                state.certificate.ok,
                state.certificate.reason,
                state.certificate.message,
            )
        put(conditions.STORAGE_READY, storage.ok, storage.reason, storage.message)
        if state.node_trust_verdict is not None:
            verdict = state.node_trust_verdict
            put(conditions.NODE_TRUST_READY, verdict.ok, verdict.reason, verdict.message)
        elif not spec.node_trust.enabled:
            conds = [c for c in conds if c.type != conditions.NODE_TRUST_READY]

        dep_status = (deployment or {}).get("status") or {}
        return model.PrivateRegistryStatus(
            observed_generation=generation,
            conditions=conds,
            endpoint=_endpoint(spec, child_names, body["metadata"]["namespace"]),
            ca=state.ca_status,
            certificate=state.cert_status,
            replicas=spec.replicas,
            ready_replicas=dep_status.get("readyReplicas") or 0,
            node_endpoint=_node_endpoint(spec, service),
            node_trust=state.node_trust,
        )

    async def _report_blocked(
        self,
        body: Mapping[str, Any],
        previous: list[model.Condition],
        problems: list[Problem],
        *,
        now: datetime.datetime,
        state: _Pass | None = None,
    ) -> Result:
        """Ready=False, Degraded=True naming the problems; children are left exactly as they are."""
        generation = body["metadata"].get("generation")
        message = "; ".join(p.message for p in problems)
        conds = previous
        for type_, ok, reason, text in (
            (conditions.READY, False, problems[0].reason, message),
            (conditions.PROGRESSING, False, problems[0].reason, "waiting for the problem to be fixed"),
            (conditions.DEGRADED, True, problems[0].reason, message),
        ):
            conds = conditions.set_condition(
                conds,
                type_=type_,
                status=conditions.TRUE if ok else conditions.FALSE,
                reason=reason,
                message=text,
                now=now,
                generation=generation,
            )
        if (
            problems[0].reason
            in {"SecretNotFound", "SecretIncomplete", "KeyMismatch", "InvalidCertificate", "Expired"}
            and (body.get("spec") or {}).get("tls", {}).get("mode") == "Secret"
        ):
            conds = conditions.set_condition(
                conds,
                type_=conditions.CERTIFICATE_READY,
                status=conditions.FALSE,
                reason=problems[0].reason,
                message=message,
                now=now,
                generation=generation,
            )
        old_status = body.get("status") or {}
        status = model.PrivateRegistryStatus.model_validate(
            {**{k: v for k, v in old_status.items() if k != "conditions"}, "observedGeneration": generation}
        ).model_copy(update={"conditions": conds})
        await self._write_status(body, status, previous=previous, now=now, state=state or _Pass())
        return Result(message=message)

    async def _write_status(
        self,
        body: Mapping[str, Any],
        status: model.PrivateRegistryStatus,
        *,
        previous: list[model.Condition],
        now: datetime.datetime,
        state: _Pass,
    ) -> None:
        meta = body["metadata"]
        rendered = status.model_dump(by_alias=True, exclude_none=True, mode="json")
        patch = dict(rendered)
        if "nodeTrust" not in rendered and (body.get("status") or {}).get("nodeTrust"):
            patch["nodeTrust"] = None  # a merge patch only removes what it names
        involved = {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": meta["uid"],
        }
        before = conditions.find(previous, conditions.DEGRADED)
        after = conditions.find(status.conditions or [], conditions.DEGRADED)
        if (
            after is not None
            and after.status == conditions.TRUE
            and (
                before is None
                or (before.status, before.reason, before.message)
                != (after.status, after.reason, after.message)
            )
        ):
            state.events.append(("Warning", after.reason, after.message))
        elif (
            after is not None
            and before is not None
            and before.status == conditions.TRUE
            and after.status != conditions.TRUE
        ):
            state.events.append(("Normal", "Recovered", "the registry is no longer degraded"))
        if rendered != _comparable_status(body.get("status") or {}):
            try:
                await self._kube.patch_registry_status(
                    namespace=meta["namespace"], name=meta["name"], status=patch
                )
            except kube.NotFound:
                return  # deleted during the pass: no status to write, no one to tell
        for type_, reason, message in state.events:
            try:
                await self._kube.emit_event(
                    involved=involved, type_=type_, reason=reason, message=message, now=now
                )
            except kube.KubeError as exc:  # an Event is best effort; the condition already says it
                log.warning("could not post event %s: %s", reason, exc)


def _tls_digest(cert_pem: bytes, key_pem: bytes, ca_pem: bytes) -> str:
    """The served TLS material's digest: one formula everywhere, so unchanged material never rolls pods."""
    return inputs.digest(cert_pem, key_pem, ca_pem)


def _comparable_status(status: Mapping[str, Any]) -> dict[str, Any]:
    try:
        parsed = model.PrivateRegistryStatus.model_validate(status)
    except pydantic.ValidationError:
        return {}
    return parsed.model_dump(by_alias=True, exclude_none=True, mode="json")


def _parse_conditions(body: Mapping[str, Any]) -> list[model.Condition]:
    parsed: list[model.Condition] = []
    for raw in (body.get("status") or {}).get("conditions") or []:
        try:
            parsed.append(model.Condition.model_validate(raw))
        except pydantic.ValidationError:
            continue  # a hand-edited condition we cannot read is rewritten from scratch
    return parsed


def _ca_status(ca_pem: bytes, secret_name: str) -> model.CaStatus:
    info = crypto.inspect(ca_pem)
    return model.CaStatus(
        secret_name=secret_name, fingerprint_sha256=info.fingerprint_sha256, not_after=info.not_after
    )


def _cert_status(cert_pem: bytes, secret_name: str) -> model.CertificateStatus:
    info = crypto.inspect(cert_pem)
    return model.CertificateStatus(
        secret_name=secret_name,
        not_after=info.not_after,
        dns_names=list(info.dns_names),
        ip_addresses=list(info.ip_addresses),
    )


def _node_endpoint(spec: model.PrivateRegistrySpec, service: Mapping[str, Any] | None) -> str | None:
    """`localhost:<nodePort>`: what kubelet pulls by on every node (kube-proxy forwards it on loopback)."""
    if spec.expose.type == "ClusterIP":
        return None
    for port in ((service or {}).get("spec") or {}).get("ports") or []:
        if port.get("nodePort"):
            return f"localhost:{port['nodePort']}"
    return None


def _endpoint(spec: model.PrivateRegistrySpec, child_names: names.Names, namespace: str) -> str:
    if spec.expose.ingress is not None:
        return f"{spec.expose.ingress.host}:443"
    return f"{child_names.service}.{namespace}.svc:443"
