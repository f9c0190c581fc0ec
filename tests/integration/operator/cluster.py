"""Small typed helpers the operator integration tests share: the PrivateRegistry resource, reading
children, conditions and Secrets, and waiting on them (also for passes that write nothing, through the API
server's audit log: `await_passes`).

Must not: contain assertions about operator behaviour (those belong in the tests) or sleep for
a fixed time (everything waits through `kube.eventually`).
"""

from __future__ import annotations

import base64
import collections.abc
from typing import Any

import lightkube
import lightkube.generic_resource
import lightkube.models.meta_v1
import lightkube.resources.core_v1
import lightkube.resources.events_v1

from dockyard_operator import names
from tests.support import kube

GROUP, VERSION, KIND, PLURAL = names.GROUP, names.VERSION, names.KIND, names.PLURAL
CRD_NAME = f"{PLURAL}.{GROUP}"

PrivateRegistry = lightkube.generic_resource.create_namespaced_resource(GROUP, VERSION, KIND, PLURAL)
PrivateRegistryStatus = PrivateRegistry.Status

meta = lightkube.models.meta_v1
core = lightkube.resources.core_v1


def registry(name: str, namespace: str, spec: dict[str, Any]) -> Any:
    """An unsaved PrivateRegistry object."""
    return PrivateRegistry(
        apiVersion=f"{GROUP}/{VERSION}",
        kind=KIND,
        metadata=meta.ObjectMeta(name=name, namespace=namespace),
        spec=spec,
    )


def password_secret(name: str, namespace: str, password: str, *, key: str = "password") -> Any:
    """An unsaved Opaque Secret holding one password."""
    return core.Secret(
        metadata=meta.ObjectMeta(name=name, namespace=namespace), stringData={key: password}, type="Opaque"
    )


def user(name: str, secret: str, *, access: str = "pull", **extra: Any) -> dict[str, Any]:
    """A spec.auth.users entry."""
    return {"name": name, "passwordSecretRef": {"name": secret}, "access": access, **extra}


def get(client: lightkube.Client, resource: Any, name: str, namespace: str) -> Any:
    return client.get(resource, name, namespace=namespace)


def absent(client: lightkube.Client, resource: Any, name: str, namespace: str) -> bool:
    """True when the object does not exist (404); other API errors propagate."""
    try:
        client.get(resource, name, namespace=namespace)
    except lightkube.ApiError as exc:
        if exc.status.code == 404:
            return True
        raise
    return False


def secret_data(secret: Any) -> dict[str, bytes]:
    """A Secret's data, base64-decoded."""
    return {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}


def status_of(obj: Any) -> dict[str, Any]:
    status = obj.get("status") if isinstance(obj, dict) else obj.status
    return dict(status or {})


def condition(obj: Any, kind: str) -> dict[str, Any] | None:
    """The status condition of type `kind`, or None."""
    for item in status_of(obj).get("conditions") or []:
        if item.get("type") == kind:
            return dict(item)
    return None


def wait_condition(
    client: lightkube.Client,
    name: str,
    namespace: str,
    kind: str,
    status: str,
    *,
    timeout: float = 60.0,
    match: collections.abc.Callable[[dict[str, Any]], bool] = lambda _: True,
) -> dict[str, Any]:
    """Wait until condition `kind` has `status` (and satisfies `match`) for the current generation."""

    def probe() -> dict[str, Any] | None:
        obj = client.get(PrivateRegistry, name, namespace=namespace)
        found = condition(obj, kind)
        generation = obj["metadata"]["generation"]
        if (
            found
            and found.get("status") == status
            and status_of(obj).get("observedGeneration") == generation
            and match(found)
        ):
            return found
        raise AssertionError(f"{kind} condition is {found}, status {status_of(obj)}")

    return kube.eventually(probe, timeout=timeout, what=f"{kind}={status} on {namespace}/{name}")


def wait_published(client: lightkube.Client, name: str, namespace: str, *, timeout: float = 60.0) -> None:
    """Wait until node trust's publisher has published the registry: no condition still reads `Publishing`.
    Its round then refreshes the registry's status without a pass (no GET of the registry), so a test that
    compares the registry's resourceVersion across passes must wait for it first."""

    def probe() -> bool:
        obj = client.get(PrivateRegistry, name, namespace=namespace)
        waiting = [c for c in status_of(obj).get("conditions") or [] if c.get("reason") == "Publishing"]
        if not status_of(obj).get("conditions") or waiting:
            raise AssertionError(f"still publishing: {waiting or status_of(obj)}")
        return True

    kube.eventually(probe, timeout=timeout, what=f"node trust published {namespace}/{name}")


def owned_by(obj: Any, owner: Any) -> bool:
    """True when `obj` has a controller ownerReference to `owner` (by UID)."""
    references = obj.metadata.ownerReferences or []
    return any(ref.uid == owner.metadata.uid and ref.controller for ref in references)


def events_for(client: lightkube.Client, namespace: str, name: str) -> list[Any]:
    """core/v1 Events about the PrivateRegistry `name` (kopf posts core/v1 events)."""
    return [
        event
        for event in client.list(core.Event, namespace=namespace)
        if event.involvedObject.kind == KIND and event.involvedObject.name == name
    ]


def create_registry(
    client: lightkube.Client,
    *,
    namespace: str,
    name: str = "demo",
    spec: dict[str, Any] | None = None,
    passwords: dict[str, str] | None = None,
) -> Any:
    """Create one password Secret per entry of `passwords` (named `<user>-password`), then the registry."""
    for user_name, password in (passwords or {}).items():
        client.create(password_secret(f"{user_name}-password", namespace, password))
    return client.create(registry(name, namespace, spec or {}))


def wait_child(
    client: lightkube.Client, resource: Any, name: str, namespace: str, *, timeout: float = 60.0
) -> Any:
    """Wait until a child exists and return it."""
    return kube.eventually(
        lambda: client.get(resource, name, namespace=namespace),
        timeout=timeout,
        what=f"{resource.__name__} {namespace}/{name}",
    )


def absent_cluster_scoped(client: lightkube.Client, resource: Any, name: str) -> bool:
    """True when the cluster-scoped object does not exist (404); other API errors propagate."""
    try:
        client.get(resource, name)
    except lightkube.ApiError as exc:
        if exc.status.code == 404:
            return True
        raise
    return False


def passes_started(plane: kube.ControlPlane, *, user: str, namespace: str, name: str, since: int = 0) -> int:
    """How many passes over namespace/name `user` began after the audit offset `since`.

    Every pass begins by reading the registry (`Reconciler.reconcile` GETs it under the registry's lock), so
    the API server's audit log counts passes, including those that write nothing.
    """
    count = 0
    for event in plane.audit_events(since=since):
        ref = event.get("objectRef") or {}
        if (
            event.get("verb") == "get"
            and event.get("user", {}).get("username") == user
            and (ref.get("apiGroup"), ref.get("resource")) == (GROUP, PLURAL)
            and (ref.get("namespace"), ref.get("name")) == (namespace, name)
            and not ref.get("subresource")
        ):
            count += 1
    return count


def await_passes(
    plane: kube.ControlPlane,
    *,
    user: str,
    namespace: str,
    name: str = "demo",
    count: int = 1,
    since: int | None = None,
    timeout: float = 60.0,
) -> None:
    """Wait until `count` passes over namespace/name that began after `since` (an audit offset; default:
    now) have finished.

    Passes over one registry never overlap, so the pass after them having begun proves they finished.
    """
    start = plane.audit_offset() if since is None else since
    kube.eventually(
        lambda: passes_started(plane, user=user, namespace=namespace, name=name, since=start) > count,
        timeout=timeout,
        what=f"{count} finished passes by {user} over {namespace}/{name}",
    )


def issuer_discovery_binding(plane: kube.ControlPlane) -> None:
    """What the chart's identity-rbac.yaml creates (idempotent across tests)."""
    found = plane.kubectl("get", "clusterrolebinding", "dockyard-issuer-discovery", check=False)
    if found.returncode != 0:
        plane.kubectl(
            "create",
            "clusterrolebinding",
            "dockyard-issuer-discovery",
            "--clusterrole=system:service-account-issuer-discovery",
            "--group=system:serviceaccounts",
        )
