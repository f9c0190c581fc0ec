"""kopf wiring: the only module with kopf decorators. Every trigger ends in `Reconciler.reconcile`.

Triggers: create/update/resume of a `PrivateRegistry` (one handler stacked on all three), a periodic timer
(`DOCKYARD_RESYNC_SECONDS`) that corrects drift nobody told us about, events of referenced password, TLS and
object storage Secrets (found through an in-memory index of which registry references which Secret), and
events of owned children (a deleted or edited child, or a Deployment becoming available) mapped to their owner
through the controller owner reference. Deleting a registry only withdraws its CA from node trust (an optional
delete handler: no finalizer of its own). Node trust runs as one publisher task started here; when a
publication changes what a registry reads (agents reporting, a staged CA rotation moving on), that
registry's status follows (a refresh from its last pass, or a pass during a rotation). With
`DOCKYARD_METRICS_LISTEN` set, startup also serves the operator's Prometheus metrics (`metrics`).

The watch-fed cache the passes read from (`cache`) gets every added or changed object of the kinds a pass
reads through index handlers (kopf runs them before any other handler, on its initial listing too) and
every deletion through the event handlers.

kopf bookkeeping goes into `dockyard.dev/*` annotations, not into status: the CRD's structural schema would
prune `status.kopf`, and status belongs to the reconciler. kopf adds a finalizer only because timers need one
to stop cleanly; children are removed by garbage collection, never by a finalizer.

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
_CHILD_LABELS = {names.LABEL_MANAGED_BY: names.MANAGED_BY}


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=names.GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{names.GROUP}/timers"
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
    publisher = getattr(memo, "publisher", None)
    if publisher is not None:
        publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publisher
    reconciler = getattr(memo, "reconciler", None)
    if reconciler is not None:
        await reconciler.close()
    server = getattr(memo, "metrics_server", None)
    if server is not None:
        await asyncio.to_thread(server.stop)


async def _run(memo: Any, *, namespace: str | None, name: str, periodic: bool = False) -> None:
    if namespace is None:
        return  # PrivateRegistry is namespaced; a cluster-scoped event cannot concern us
    # kopf runs no handler but index handlers before every indexed kind's initial listing went through them.
    memo.cache.mark_primed()
    try:
        result = await memo.reconciler.reconcile(namespace=namespace, name=name, periodic=periodic)
    except kube.Forbidden as exc:
        raise kopf.TemporaryError(f"{exc} (check the operator's RBAC)", delay=60) from None
    except kube.KubeError as exc:
        raise kopf.TemporaryError(str(exc), delay=10) from None
    if result.retry_after is not None:
        raise kopf.TemporaryError(result.message or "retrying", delay=result.retry_after)


@kopf.on.resume(names.GROUP, names.VERSION, names.PLURAL)
@kopf.on.create(names.GROUP, names.VERSION, names.PLURAL)
@kopf.on.update(names.GROUP, names.VERSION, names.PLURAL)
async def reconcile_registry(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    await _run(memo, namespace=namespace, name=name)


@kopf.on.delete(names.GROUP, names.VERSION, names.PLURAL, optional=True)
async def registry_deleted(body: kopf.Body, memo: Any, **_: Any) -> None:
    """Withdraw the registry's CA from the nodes; its children go by garbage collection."""
    try:
        await memo.reconciler.forget(body=body)
    except kube.KubeError as exc:
        raise kopf.TemporaryError(str(exc), delay=10) from None


@kopf.timer(
    names.GROUP,
    names.VERSION,
    names.PLURAL,
    interval=SETTINGS.resync_seconds,
    initial_delay=SETTINGS.resync_seconds,
)
async def resync(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    await _run(memo, namespace=namespace, name=name, periodic=True)


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
