"""An in-memory stand-in for `kube.Kube` that behaves like the API server where the reconciler can tell.

It stores dict objects by (kind, namespace, name), assigns uids and resourceVersions, rejects a create of an
existing object with `AlreadyExists` and a replace (or an apply) with a stale resourceVersion with `Conflict`,
applies a few server defaults (so "fields the server adds" exist), and records every write so tests can assert
that a pass performed none. Server-side apply is modelled coarsely, for one field manager: maps merge, a map
key this manager applied before and no longer applies goes, lists are replaced whole (field ownership across
managers is the real API server's business: tests/integration covers it).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import itertools
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from dockyard_operator import kube, names

Key = tuple[str, str, str]


@dataclasses.dataclass
class FakeKube:
    objects: dict[Key, dict[str, Any]] = dataclasses.field(default_factory=dict)
    writes: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)  # (verb, kind, name)
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    status_patches: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    before_create: Callable[[dict[str, Any]], None] | None = None
    forbidden_kinds: set[str] = dataclasses.field(default_factory=set)
    terminating: bool = False  # the namespace is being deleted: creates are refused
    applied: dict[Key, dict[str, Any]] = dataclasses.field(default_factory=dict)  # last apply per object
    _versions: itertools.count[int] = dataclasses.field(default_factory=lambda: itertools.count(1))

    # ------------------------------------------------------------------ helpers for tests

    def put(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Store an object directly (as if created by someone else)."""
        obj = copy.deepcopy(dict(manifest))
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta["resourceVersion"] = str(next(self._versions))
        meta.setdefault("generation", 1)
        self.objects[(obj["kind"], meta["namespace"], meta["name"])] = obj
        return copy.deepcopy(obj)

    def obj(self, kind: str, name: str, namespace: str = "ns") -> dict[str, Any]:
        return self.objects[(kind, namespace, name)]

    def has(self, kind: str, name: str, namespace: str = "ns") -> bool:
        return (kind, namespace, name) in self.objects

    def remove(self, kind: str, name: str, namespace: str = "ns") -> None:
        del self.objects[(kind, namespace, name)]

    def child_writes(self) -> list[tuple[str, str, str]]:
        return [w for w in self.writes if w[1] != names.KIND]

    # ------------------------------------------------------------------ the kube.Kube surface

    async def close(self) -> None:
        return None

    def _check(self, verb: str, kind: str) -> None:
        if kind in self.forbidden_kinds:
            raise kube.Forbidden(f"forbidden: {verb} {kind}", status=403)

    async def get(self, *, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self._check("get", kind)
        found = self.objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    async def get_ours(
        self, *, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        return await self.get(api_version=api_version, kind=kind, namespace=namespace, name=name)

    async def list(
        self,
        *,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        self._check("list", kind)
        found = []
        for (k, ns, _), obj in sorted(self.objects.items()):
            have = obj.get("metadata", {}).get("labels") or {}
            if (
                k == kind
                and namespace in (None, ns)
                and all(have.get(a) == b for a, b in (labels or {}).items())
            ):
                found.append(copy.deepcopy(obj))
        return found

    async def create(self, *, manifest: Mapping[str, Any]) -> dict[str, Any]:
        self._check("create", manifest["kind"])
        if self.terminating:
            raise kube.NamespaceTerminating("forbidden: namespace is being terminated", status=403)
        if self.before_create is not None:
            self.before_create(dict(manifest))
        meta = manifest["metadata"]
        if (manifest["kind"], meta["namespace"], meta["name"]) in self.objects:
            raise kube.AlreadyExists(
                f"{manifest['kind']} {meta['name']} exists", status=409, reason="AlreadyExists"
            )
        self.writes.append(("create", manifest["kind"], meta["name"]))
        return self.put(_defaulted(manifest))

    async def replace(self, *, manifest: Mapping[str, Any]) -> dict[str, Any]:
        self._check("update", manifest["kind"])
        meta = manifest["metadata"]
        key = (manifest["kind"], meta["namespace"], meta["name"])
        live = self.objects.get(key)
        if live is None:
            raise kube.NotFound("gone", status=404)
        if meta.get("resourceVersion") != live["metadata"]["resourceVersion"]:
            raise kube.Conflict("stale resourceVersion", status=409, reason="Conflict")
        self.writes.append(("update", manifest["kind"], meta["name"]))
        obj = _defaulted(manifest)
        obj["metadata"]["uid"] = live["metadata"]["uid"]
        if obj.get("spec") != live.get("spec"):
            obj["metadata"]["generation"] = live["metadata"].get("generation", 1) + 1
        else:
            obj["metadata"]["generation"] = live["metadata"].get("generation", 1)
        obj["status"] = live.get("status", {})
        return self.put(obj)

    async def apply(self, *, manifest: Mapping[str, Any], force: bool = False) -> dict[str, Any]:
        kind, meta = manifest["kind"], manifest["metadata"]
        self._check("patch", kind)
        key = (kind, meta["namespace"], meta["name"])
        want = copy.deepcopy(dict(manifest))
        precondition = want["metadata"].pop("resourceVersion", None)
        live = self.objects.get(key)
        if live is None and precondition is not None:
            raise kube.NotFound(f"{kind} {meta['name']} not found", status=404)
        if live is None:
            if self.terminating:
                raise kube.NamespaceTerminating("forbidden: namespace is being terminated", status=403)
            if self.before_create is not None:
                self.before_create(dict(want))
            live = self.objects.get(key)
        if live is not None and precondition not in (None, live["metadata"]["resourceVersion"]):
            raise kube.Conflict("the object has been modified", status=409, reason="Conflict")
        self.applied[key], last = want, self.applied.get(key, {})
        if live is None:
            self.writes.append(("create", kind, meta["name"]))
            return self.put(_defaulted(want))
        self.writes.append(("update", kind, meta["name"]))
        merged = _merge(live, last, want)
        obj = _defaulted({k: v for k, v in merged.items() if k != "status"})
        obj["metadata"]["uid"] = live["metadata"]["uid"]
        generation = live["metadata"].get("generation", 1)
        obj["metadata"]["generation"] = generation + (obj.get("spec") != live.get("spec"))
        obj["status"] = live.get("status", {})
        return self.put(obj)

    async def patch_json(
        self, *, api_version: str, kind: str, namespace: str, name: str, operations: list[dict[str, Any]]
    ) -> dict[str, Any]:
        self._check("patch", kind)
        obj = copy.deepcopy(self.objects[(kind, namespace, name)])
        for op in operations:
            assert op["op"] == "replace", op
            *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
            target = obj
            for part in parents:
                target = target[int(part)] if isinstance(target, list) else target[part]
            target[int(last) if isinstance(target, list) else last] = copy.deepcopy(op["value"])
        self.writes.append(("update", kind, name))
        return self.put(obj)

    async def delete(self, *, api_version: str, kind: str, namespace: str, name: str) -> None:
        self._check("delete", kind)
        self.writes.append(("delete", kind, name))
        self.objects.pop((kind, namespace, name), None)

    async def patch_registry_status(self, *, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        if (names.KIND, namespace, name) not in self.objects:
            raise kube.NotFound(f"{name} not found", status=404)
        self.writes.append(("patch-status", names.KIND, name))
        self.status_patches.append(copy.deepcopy(dict(status)))
        live = self.objects[(names.KIND, namespace, name)]
        live["status"] = {**live.get("status", {}), **copy.deepcopy(dict(status))}

    async def emit_event(
        self,
        *,
        involved: Mapping[str, Any],
        type_: str,
        reason: str,
        message: str,
        now: datetime.datetime,
    ) -> None:
        self.events.append({"type": type_, "reason": reason, "message": message, "involved": dict(involved)})


def _merge(live: Any, last: Any, want: Any) -> Any:
    """Server-side apply of `want` over `live` by a manager whose previous apply was `last` (coarse)."""
    if not isinstance(want, Mapping) or not isinstance(live, Mapping):
        return copy.deepcopy(want)
    last = last if isinstance(last, Mapping) else {}
    merged = {k: copy.deepcopy(v) for k, v in live.items() if not (k in last and k not in want)}
    for key, value in want.items():
        merged[key] = _merge(live.get(key), last.get(key), value)
    return merged


def _defaulted(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A few fields the real API server fills in, so drift checks must ignore them."""
    obj = copy.deepcopy(dict(manifest))
    kind = obj["kind"]
    if kind == "Service":
        obj["spec"].setdefault("clusterIP", "10.0.0.10")
        obj["spec"].setdefault("sessionAffinity", "None")
        for port in obj["spec"].get("ports", []):
            if obj["spec"].get("type") in {"NodePort", "LoadBalancer"}:
                port.setdefault("nodePort", 31000)
    if kind == "Deployment":
        obj["spec"].setdefault("progressDeadlineSeconds", 600)
        for container in obj["spec"]["template"]["spec"]["containers"]:
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("imagePullPolicy", "IfNotPresent")
    if kind == "PersistentVolumeClaim":
        obj["spec"].setdefault("volumeMode", "Filesystem")
        # the API server canonicalizes quantities
        requests = obj["spec"].get("resources", {}).get("requests", {})
        if requests.get("storage") == "1024Mi":
            requests["storage"] = "1Gi"
    return obj


def registry(
    name: str = "demo", namespace: str = "ns", spec: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": name, "namespace": namespace, "generation": 1},
        "spec": dict(spec or {}),
    }


def password_secret(
    name: str, password: bytes, *, key: str = "password", namespace: str = "ns"
) -> dict[str, Any]:
    import base64

    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {key: base64.b64encode(password).decode()},
    }
