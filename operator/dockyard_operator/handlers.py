"""kopf wiring: the only module with kopf decorators. Every trigger ends in `Reconciler.reconcile`.

Triggers: every watch event of a `PrivateRegistry` (the listing at start included), handed to
`reconcile.Triggers`, which asks for a pass when a registry is new to this process or its generation,
labels or annotations changed, withdraws a deleted one (`Reconciler.forget`), retries failed passes, and
runs the one operator-wide resync loop (`DOCKYARD_RESYNC_SECONDS`) that corrects drift nobody told us
about; events of referenced password, TLS and object storage Secrets (found through an in-memory index of
which registry references which Secret), and events of owned children (a deleted or edited child, or a
Deployment becoming available) mapped to their owner through the controller owner reference. Node trust
runs as one publisher task started here; when a publication changes what a registry reads (agents
reporting, a staged CA rotation moving on), that registry's status follows (a refresh from its last pass,
or a pass during a rotation). With `DOCKYARD_METRICS_LISTEN` set, startup also serves the operator's
Prometheus metrics (`metrics`).

The watch-fed cache the passes read from (`cache`) gets every added or changed object of the kinds a pass
reads through index handlers (kopf runs them before any other handler, on its initial listing too) and
every deletion through the event handlers.

kopf writes nothing to a registry: only `@kopf.on.event` and `@kopf.index` handlers are registered, so it
keeps no handler progress or last-handled configuration and needs no finalizer (children are removed by
garbage collection; what a registry keeps outside its namespace goes in `forget`). The storages named at
startup stay annotations under `dockyard.dev/` should a changing handler ever come back (the CRD's structural
schema would prune `status.kopf`, and status belongs to the reconciler).

Must not: build manifests, decide anything, or call the API other than through `kube.py` (via the reconciler).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import kopf

from dockyard_operator import cache, kube, metrics, names, reconcile, settings
from dockyard_operator.nodetrust import controller

SETTINGS = settings.Settings.from_env()
LEGACY_FINALIZER = f"{names.GROUP}/timers"
"""The finalizer kopf added for the per-registry timer of earlier versions; kopf now removes it."""
_CHILD_LABELS = {names.LABEL_MANAGED_BY: names.MANAGED_BY}


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    # Only event handlers and an index: kopf keeps no handler progress and no last-handled configuration
    # (these storages are never written), and adds no finalizer. It removes the one earlier versions had it
    # add (`dockyard.dev/timers`, for the per-registry timer), once per registry, since nothing needs it.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=names.GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = LEGACY_FINALIZER
    # Our own Events already say what happened; kopf's per-handler success Events would only add noise.
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = 8
    # Without timeouts a watch silently stalled by a load balancer or an API server restart never resumes.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 30
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one INFO line per API request drowns the rest
    if SETTINGS.watch_namespaces:
        # A namespace-scoped install has Roles only: no CRD or Namespace watches (kopf then serves exactly
        # the namespaces it was given), and the client reads only those namespaces.
        settings.scanning.disabled = True
    client = kube.Kube.connect(field_manager=SETTINGS.field_manager, namespaces=SETTINGS.watch_namespaces)
    trust = controller.NodeTrust(
        client=client,
        namespace=SETTINGS.namespace,
        image=SETTINGS.node_trust_image,
        cluster_domain=SETTINGS.cluster_domain,
        resync_seconds=SETTINGS.resync_seconds,
        allowed_hosts=SETTINGS.node_trust_allowed_hosts,
    )
    measures = metrics.OperatorMetrics()
    memo.cache = cache.Cache()
    memo.reconciler = reconcile.Reconciler(
        client=client, config=SETTINGS, node_trust=trust, measures=measures, watched=memo.cache
    )
    # Every registry's passes: its events (`registry_event`), retries, and the one resync loop.
    memo.triggers = reconcile.Triggers(
        memo.reconciler, resync_seconds=SETTINGS.resync_seconds, sweep=memo.reconciler.sweep_orphans
    )
    memo.triggers.start()
    address = SETTINGS.metrics_address
    if address is not None:
        memo.metrics_server = metrics.serve(measures, host=address[0], port=address[1])
    # Node trust's one publisher; it refreshes the status of every registry whose node trust view it changed.
    memo.publisher = asyncio.create_task(trust.run(on_change=memo.reconciler.node_trust_changed))
    memo.publisher.add_done_callback(_publisher_ended)


def _publisher_ended(task: asyncio.Task[None]) -> None:
    """The publisher only ends when cancelled at shutdown; anything else is a bug that must not go unseen."""
    if not task.cancelled() and task.exception() is not None:
        logging.getLogger(__name__).error(
            "node trust's publisher stopped; node trust is no longer published", exc_info=task.exception()
        )


@kopf.on.cleanup()
async def close(memo: Any, **_: Any) -> None:
    triggers = getattr(memo, "triggers", None)
    if triggers is not None:
        triggers.stop()  # no new passes, no retries; running passes drain in `reconciler.close`
    publisher = getattr(memo, "publisher", None)
    if publisher is not None:
        publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publisher
    reconciler = getattr(memo, "reconciler", None)
    if reconciler is not None:
        await reconciler.close()
    if triggers is not None:
        await triggers.close()  # passes still waiting for a slot are cancelled
    server = getattr(memo, "metrics_server", None)
    if server is not None:
        await asyncio.to_thread(server.stop)


async def _run(memo: Any, *, namespace: str | None, name: str) -> None:
    """A pass somebody asked for (a watched Secret or child changed); failures become retries (`triggers`)."""
    if namespace is None:
        return  # PrivateRegistry is namespaced; a cluster-scoped event cannot concern us
    await memo.triggers.run(namespace=namespace, name=name)


def _primed(memo: Any) -> None:
    """Called by every event handler: kopf runs no handler but index handlers before every indexed kind's
    initial listing went through them, so the cache is complete from the first event handler on (and a new
    registry's first pass knows from memory that none of its Secrets exists yet)."""
    memo.cache.mark_primed()


@kopf.on.event(names.GROUP, names.VERSION, names.PLURAL)
async def registry_event(body: kopf.Body, memo: Any, type: str | None, **_: Any) -> None:
    """Every event of a registry, the listing at start included (what resume was): a new registry, a spec
    change (its generation), a label or annotation change, or a deletion (`forget`) gets its pass or its
    withdrawal in a task of its own (`triggers.Triggers.seen`); status writes ask for nothing."""
    _primed(memo)
    memo.triggers.seen(event=type, body=body)


def referenced_secrets(spec: Mapping[str, Any]) -> set[str]:
    """Names of the Secrets a registry spec reads (user passwords, a bring-your-own TLS Secret, object
    storage's credentials and CA)."""
    refs = {
        str(user.get("passwordSecretRef", {}).get("name"))
        for user in (spec.get("auth") or {}).get("users") or []
        if user.get("passwordSecretRef", {}).get("name")
    }
    tls = spec.get("tls") or {}
    if tls.get("mode") == "Secret" and tls.get("secretName"):
        refs.add(str(tls["secretName"]))
    s3 = (spec.get("storage") or {}).get("s3") or {}
    for field in ("credentialsSecret", "caSecret"):
        if (s3.get(field) or {}).get("name"):
            refs.add(str(s3[field]["name"]))
    return refs


@kopf.index(names.GROUP, names.VERSION, names.PLURAL)
def registries_by_secret(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[tuple[str | None, str], str]:
    return {(namespace, secret): name for secret in referenced_secrets(spec)}


def owner_registry(body: Mapping[str, Any]) -> str | None:
    """The name of the PrivateRegistry controlling this object, if any."""
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("apiVersion") == names.API_VERSION and ref.get("kind") == names.KIND:
            return str(ref.get("name"))
    return None


async def _reconcile_all(memo: Any, namespace: str | None, registries: Iterable[str]) -> None:
    for registry in sorted(set(registries)):
        await _run(memo, namespace=namespace, name=registry)


@kopf.on.event("", "v1", "secrets")
async def secret_changed(
    body: kopf.Body,
    namespace: str | None,
    name: str,
    memo: Any,
    **kwargs: Any,
) -> None:
    _primed(memo)
    if kwargs.get("type") == "DELETED":
        memo.cache.forget(body)  # additions and changes reached it through `cached` already
    if memo.reconciler.is_own_write(body, deleted=kwargs.get("type") == "DELETED"):
        return
    index: kopf.Index[tuple[str | None, str], str] = kwargs["registries_by_secret"]
    registries: Collection[str] = list(index.get((namespace, name), []))
    owner = owner_registry(body)
    await _reconcile_all(memo, namespace, [*registries, *([owner] if owner else [])])


@kopf.on.event("", "v1", "configmaps", labels=_CHILD_LABELS)
@kopf.on.event("", "v1", "services", labels=_CHILD_LABELS)
@kopf.on.event("", "v1", "persistentvolumeclaims", labels=_CHILD_LABELS)
@kopf.on.event("apps", "v1", "deployments", labels=_CHILD_LABELS)
@kopf.on.event("networking.k8s.io", "v1", "ingresses", labels=_CHILD_LABELS)
@kopf.on.event("networking.k8s.io", "v1", "networkpolicies", labels=_CHILD_LABELS)
@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=_CHILD_LABELS)
async def child_changed(
    body: kopf.Body, namespace: str | None, memo: Any, type: str | None, **_: Any
) -> None:
    _primed(memo)
    if type == "DELETED":
        memo.cache.forget(body)  # additions and changes reached it through `cached` already
    if memo.reconciler.is_own_write(body, deleted=type == "DELETED"):
        return  # the echo of our own create/update: the pass that wrote it already saw the result
    owner = owner_registry(body)
    if owner is not None:
        await _run(memo, namespace=namespace, name=owner)


@kopf.index("", "v1", "secrets", id="cache_secrets")
@kopf.index("", "v1", "configmaps", id="cache_configmaps")
@kopf.index("", "v1", "services", id="cache_services")
@kopf.index("", "v1", "persistentvolumeclaims", id="cache_persistentvolumeclaims")
@kopf.index("apps", "v1", "deployments", id="cache_deployments")
@kopf.index("networking.k8s.io", "v1", "ingresses", id="cache_ingresses")
@kopf.index("networking.k8s.io", "v1", "networkpolicies", id="cache_networkpolicies")
@kopf.index("policy", "v1", "poddisruptionbudgets", id="cache_poddisruptionbudgets")
def cached(body: kopf.Body, memo: Any, **_: Any) -> None:
    """Every added or changed object of the kinds a pass reads goes to the reconciler's cache (`cache`
    keeps what is ours or referenced, and drops an object that stopped being ours); deletions go there from
    the event handlers above. An index handler, though it indexes nothing (kopf keeps no value for None):
    kopf runs index handlers first, on its initial listing too, and any other handler only once every
    indexed kind's listing went through them, so the cache is complete when the first pass runs. Unfiltered,
    so that a child losing the operator's label leaves the cache."""
    memo.cache.observe(body)


def run(*, namespaces: Collection[str] = (), liveness_endpoint: str | None = None) -> None:
    """Run the operator in this process until it is signalled (what `dockyard-operator` does)."""
    kopf.configure(verbose=False)
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=list(namespaces),
        liveness_endpoint=liveness_endpoint,
    )
