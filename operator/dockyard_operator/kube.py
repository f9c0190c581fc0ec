"""All Kubernetes I/O of the operator, through lightkube's AsyncClient, with dict manifests in and out.

Owns: the client (kubeconfig from KUBECONFIG or in-cluster credentials), the mapping of manifest kinds to API
resources, translating API errors into our error types (404 → `NotFound`, 409 → `Conflict`, `AlreadyExists`
or `FieldConflict`, 422 → `Invalid`, 403 → `Forbidden`), server-side apply, writing the registry's status
subresource, and posting Events. Every resource and verb it uses is declared in `rbac.RBAC_RULES` (the Helm
chart's rules are checked against it), so a new call here must add its verb there.
Must not: decide anything. What to write and when lives in `reconcile/` and `writer.py`; this module only
moves bytes.
"""

from __future__ import annotations

import builtins
import datetime
import enum
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final

import httpx2 as httpx
from lightkube import ALL_NS, ApiError, AsyncClient, codecs, generic_resource
from lightkube.core.resource import NamespacedResource
from lightkube.resources import apps_v1, core_v1, networking_v1, policy_v1
from lightkube.types import PatchType

from dockyard_operator import names

PrivateRegistry = generic_resource.create_namespaced_resource(
    names.GROUP, names.VERSION, names.KIND, names.PLURAL
)

_RESOURCES: Final[dict[tuple[str, str], type[NamespacedResource]]] = {
    ("v1", "Secret"): core_v1.Secret,
    ("v1", "ConfigMap"): core_v1.ConfigMap,
    ("v1", "Service"): core_v1.Service,
    ("v1", "PersistentVolumeClaim"): core_v1.PersistentVolumeClaim,
    ("apps/v1", "Deployment"): apps_v1.Deployment,
    ("apps/v1", "DaemonSet"): apps_v1.DaemonSet,
    ("v1", "Pod"): core_v1.Pod,
    ("v1", "ServiceAccount"): core_v1.ServiceAccount,
    ("networking.k8s.io/v1", "Ingress"): networking_v1.Ingress,
    ("networking.k8s.io/v1", "NetworkPolicy"): networking_v1.NetworkPolicy,
    ("policy/v1", "PodDisruptionBudget"): policy_v1.PodDisruptionBudget,
    (names.API_VERSION, names.KIND): PrivateRegistry,
}


class KubeError(Exception):
    """An API request failed; `status` is the HTTP status code (0 when the server was unreachable)."""

    def __init__(self, message: str, *, status: int, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class NotFound(KubeError):
    pass


class Conflict(KubeError):
    """409: a stale resourceVersion, or (as `AlreadyExists`) a create of an existing object."""


class AlreadyExists(Conflict):
    pass


class FieldConflict(Conflict):
    """409 on a server-side apply: another field manager owns fields this apply sets (`managers` says who)."""

    def __init__(
        self, message: str, *, status: int, reason: str = "", managers: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message, status=status, reason=reason)
        self.managers = managers


class Invalid(KubeError):
    """422: the server rejected the object (an immutable field, a bad value)."""


class Forbidden(KubeError):
    """403: the operator's ServiceAccount lacks a permission; the message names verb and resource."""


class NamespaceTerminating(KubeError):
    """403 on create because the namespace is being deleted: nothing to repair, everything is going away."""


class Unavailable(KubeError):
    """The API server could not be reached or answered 5xx/429."""


class StatusReason(enum.StrEnum):
    """Reasons of the API server's Status answers that `_translate` tells apart (Kubernetes names them)."""

    ALREADY_EXISTS = "AlreadyExists"
    FIELD_MANAGER_CONFLICT = "FieldManagerConflict"


def _translate(exc: ApiError, *, verb: str, what: str) -> KubeError:
    status = exc.status.code or 0
    reason = exc.status.reason or ""
    message = f"{verb} {what}: {exc.status.message or reason or status}"
    if status == 404:
        return NotFound(message, status=status, reason=reason)
    if status == 409 and reason == StatusReason.ALREADY_EXISTS:
        return AlreadyExists(message, status=status, reason=reason)
    causes = (exc.status.details.causes if exc.status.details is not None else None) or []
    conflicting = tuple(c.message or "" for c in causes if c.reason == StatusReason.FIELD_MANAGER_CONFLICT)
    if status == 409 and conflicting:
        return FieldConflict(message, status=status, reason=reason, managers=conflicting)
    if status == 409:
        return Conflict(message, status=status, reason=reason)
    if status == 422:
        return Invalid(message, status=status, reason=reason)
    if status == 403 and "being terminated" in (exc.status.message or ""):
        return NamespaceTerminating(message, status=status, reason=reason)
    if status == 403:
        return Forbidden(f"forbidden: {message}", status=status, reason=reason)
    if status == 429 or status >= 500:
        return Unavailable(message, status=status, reason=reason)
    return KubeError(message, status=status, reason=reason)


def resource_for(api_version: str, kind: str) -> type[NamespacedResource]:
    try:
        return _RESOURCES[(api_version, kind)]
    except KeyError:
        raise ValueError(f"the operator does not manage {kind} ({api_version})") from None


def describe(manifest: Mapping[str, Any]) -> str:
    meta = manifest.get("metadata", {})
    return f"{manifest.get('kind')} {meta.get('namespace')}/{meta.get('name')}"


class Kube:
    """A thin async facade over lightkube; every method takes keyword arguments and returns plain dicts."""

    def __init__(
        self, client: AsyncClient, *, field_manager: str, namespaces: builtins.list[str] | None = None
    ) -> None:
        self._client = client
        self._field_manager = field_manager
        self._namespaces = sorted(set(namespaces)) if namespaces else None

    @classmethod
    def connect(cls, *, field_manager: str, namespaces: Collection[str] = ()) -> Kube:
        """A client from KUBECONFIG (or ~/.kube/config) or the in-cluster ServiceAccount.

        `namespaces` (a namespace-scoped install): "every namespace" means these. A list across all
        namespaces becomes one list per namespace, and `list_namespaces` reads these Namespaces one by one,
        so nothing needs a ClusterRole.
        """
        client = AsyncClient(field_manager=field_manager)
        return cls(client, field_manager=field_manager, namespaces=list(namespaces))

    async def close(self) -> None:
        await self._client.close()

    async def _call(self, coro: Any, *, verb: str, what: str) -> Any:
        try:
            return await coro
        except ApiError as exc:
            raise _translate(exc, verb=verb, what=what) from None
        except httpx.TransportError as exc:
            raise Unavailable(f"{verb} {what}: {exc}", status=0) from None

    async def get(self, *, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as a dict, or None when it does not exist."""
        res = resource_for(api_version, kind)
        try:
            obj = await self._call(
                self._client.get(res, name, namespace=namespace),
                verb="get",
                what=f"{kind} {namespace}/{name}",
            )
        except NotFound:
            return None
        return _to_dict(obj)

    async def get_ours(
        self, *, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        """`get` for a caller that acts only on the operator's own object (`cached_client.CachedClient` may
        answer "none of ours" from memory); the API's answer is exact."""
        return await self.get(api_version=api_version, kind=kind, namespace=namespace, name=name)

    async def list(
        self,
        *,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        labels: Mapping[str, str | None] | None = None,
    ) -> list[dict[str, Any]]:
        """Every object of a kind in `namespace` (all namespaces when None), optionally selected by labels
        (a value: that value; None: any value, the label exists)."""
        if namespace is None and self._namespaces is not None:
            found: list[dict[str, Any]] = []
            for each in self._namespaces:
                found += await self.list(api_version=api_version, kind=kind, namespace=each, labels=labels)
            return found
        res = resource_for(api_version, kind)
        where = namespace if namespace is not None else ALL_NS

        async def collect() -> list[dict[str, Any]]:
            return [
                _to_dict(obj)
                async for obj in self._client.list(
                    res, namespace=where, labels=dict(labels) if labels else None
                )
            ]

        result: list[dict[str, Any]] = await self._call(collect(), verb="list", what=f"{kind} in {where}")
        return result

    async def list_namespaces(self) -> builtins.list[dict[str, Any]]:
        """Every Namespace (cluster-scoped, so not through `list`); only the watched ones (those that exist)
        when the client is limited to some namespaces."""
        if self._namespaces is not None:
            watched = []
            for name in self._namespaces:
                try:
                    obj = await self._call(
                        self._client.get(core_v1.Namespace, name), verb="get", what=f"namespace {name}"
                    )
                except NotFound:
                    continue
                watched.append(_to_dict(obj))
            return watched

        async def collect() -> builtins.list[dict[str, Any]]:
            return [_to_dict(obj) async for obj in self._client.list(core_v1.Namespace)]

        found: builtins.list[dict[str, Any]] = await self._call(collect(), verb="list", what="namespaces")
        return found

    async def create(self, *, manifest: Mapping[str, Any]) -> dict[str, Any]:
        obj = codecs.from_dict(dict(manifest))
        return _to_dict(await self._call(self._client.create(obj), verb="create", what=describe(manifest)))

    async def replace(self, *, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """PUT the whole object; `metadata.resourceVersion` must be set (optimistic concurrency)."""
        obj = codecs.from_dict(dict(manifest))
        return _to_dict(await self._call(self._client.replace(obj), verb="update", what=describe(manifest)))

    async def apply(self, *, manifest: Mapping[str, Any], force: bool = False) -> dict[str, Any]:
        """Server-side apply `manifest` as this client's field manager; creates the object when absent.

        A set `metadata.resourceVersion` is a precondition (409 `Conflict` when the object moved on, 404 when
        it is gone). Without `force`, fields another manager owns raise `FieldConflict`.
        """
        res = resource_for(str(manifest["apiVersion"]), str(manifest["kind"]))
        meta = manifest["metadata"]
        return _to_dict(
            await self._call(
                self._client.patch(
                    res,
                    meta["name"],
                    dict(manifest),
                    namespace=meta["namespace"],
                    patch_type=PatchType.APPLY,
                    field_manager=self._field_manager,
                    force=force,
                ),
                verb="patch",
                what=describe(manifest),
            )
        )

    async def patch_json(
        self,
        *,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        operations: Sequence[Mapping[str, Any]],
    ) -> dict[str, Any]:
        """Apply a JSON patch (RFC 6902) to an object."""
        res = resource_for(api_version, kind)
        return _to_dict(
            await self._call(
                self._client.patch(
                    res, name, list(operations), namespace=namespace, patch_type=PatchType.JSON
                ),
                verb="patch",
                what=f"{kind} {namespace}/{name}",
            )
        )

    async def delete(self, *, api_version: str, kind: str, namespace: str, name: str) -> None:
        """Delete an object; an already missing object is fine."""
        res = resource_for(api_version, kind)
        try:
            await self._call(
                self._client.delete(res, name, namespace=namespace),
                verb="delete",
                what=f"{kind} {namespace}/{name}",
            )
        except NotFound:
            return

    async def patch_registry_status(self, *, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge-patch the status subresource of a PrivateRegistry."""
        await self._call(
            self._client.patch(
                PrivateRegistry.Status,
                name,
                {"status": dict(status)},
                namespace=namespace,
                patch_type=PatchType.MERGE,
            ),
            verb="patch",
            what=f"{names.KIND} {namespace}/{name} status",
        )

    async def emit_event(
        self,
        *,
        involved: Mapping[str, Any],
        type_: str,
        reason: str,
        message: str,
        now: datetime.datetime,
    ) -> None:
        """Post a core/v1 Event about `involved` (a dict with apiVersion, kind, namespace, name, uid)."""
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        event = core_v1.Event.from_dict(
            {
                "metadata": {"generateName": f"{involved['name']}.", "namespace": involved["namespace"]},
                "involvedObject": dict(involved),
                "type": type_,
                "reason": reason,
                "message": message[:1024],
                "source": {"component": self._field_manager},
                "reportingComponent": self._field_manager,
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
            }
        )
        await self._call(
            self._client.create(event), verb="create", what=f"Event for {involved['kind']} {involved['name']}"
        )


def _to_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return dict(obj)
    result = obj.to_dict()
    assert isinstance(result, dict)
    return result
