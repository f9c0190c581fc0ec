"""Pull secrets and KEP-1755 local-registry-hosting through the reconcile pass (in-memory API).

Covers:
- `pullSecrets`: a copy per listed namespace and per namespace matching the selector, only where the namespace
  opted in for the registry's namespace (label `pull-secrets-from.dockyard.dev/<ns>: "true"`; a listed one
  that did not is named in Degraded, a selected one is not; withdrawing the label removes the copy;
  terminating ones skipped), each a dockerconfigjson with the user's current password for the node endpoint
  and the Service endpoint, the ServiceAccount gaining it once; a password change rewrites the copies; a
  foreign Secret of the same name is never overwritten (Degraded); an unknown user is Degraded; removing
  `pullSecrets` deletes the copies and the ServiceAccount entries they added; extra hostnames only as far as
  node trust would publish them (never docker.io or a name the registry does not serve); registries that never
  used pull secrets make no list call; a deletion waits for a pass in flight, so nothing it removes is
  re-created;
- `publishLocalRegistryHosting`: published for `localhost:<nodePort>`, refused (Degraded HostingTaken) for a
  second registry, withdrawn when the spec stops asking; without a node port it is Degraded;
- `status.nodeEndpoint` is `localhost:<nodePort>` and absent for ClusterIP;
- `forget` (registry deletion) removes copies and the ConfigMap it published.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
import yaml

from dockyard_operator import hosting, names, reconcile, settings
from tests.operator import fakes

PASSWORD = "puller-Secret-pw1"
OPT_IN = "pull-secrets-from.dockyard.dev/ns"  # the namespace accepts pull secrets from registries in "ns"


class Api(fakes.FakeKube):
    """The fake API plus the cluster-scoped Namespace list the pull secrets step uses."""

    def __init__(self) -> None:
        super().__init__()
        self.namespaces: list[dict[str, Any]] = []
        self.lists: list[str] = []

    async def list_namespaces(self) -> list[dict[str, Any]]:
        self.lists.append("Namespace")
        return list(self.namespaces)

    async def list(self, **kwargs: Any) -> list[dict[str, Any]]:
        self.lists.append(kwargs["kind"])
        return await super().list(**kwargs)


@pytest.fixture
def api() -> Api:
    api = Api()
    api.put(fakes.password_secret("puller-pw", PASSWORD.encode()))
    for name in ("apps", "ci"):
        api.put(
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": name}}
        )
    api.namespaces = [
        {"metadata": {"name": "apps", "labels": {OPT_IN: "true"}}},
        {"metadata": {"name": "ci", "labels": {"pulls": "demo", OPT_IN: "true"}}},
        {
            "metadata": {"name": "gone", "labels": {"pulls": "demo", OPT_IN: "true"}},
            "status": {"phase": "Terminating"},
        },
        {"metadata": {"name": "private", "labels": {"pulls": "demo"}}},
        {"metadata": {"name": "kube-system", "labels": {}}},
    ]
    return api


@pytest.fixture
def reconciler(api: Api) -> reconcile.Reconciler:
    return reconcile.Reconciler(
        client=api,  # type: ignore[arg-type]  # duck-typed stand-in
        config=settings.Settings(bcrypt_rounds=4),
    )


PULL = {
    "user": "puller",
    "namespaces": ["apps"],
    "namespaceSelector": {"pulls": "demo"},
    "serviceAccount": "default",
}
BASE = {
    "expose": {"type": "NodePort"},
    "storage": {"emptyDir": {}},
    "auth": {"users": [{"name": "puller", "passwordSecretRef": {"name": "puller-pw"}}]},
}


def with_node_port(api: Api, port: int = 30555) -> None:
    service = api.obj("Service", names.Names.of("demo").service)
    service["spec"]["ports"][0]["nodePort"] = port  # what the API server allocates
    api.put(service)


async def run(reconciler: reconcile.Reconciler, name: str = "demo") -> None:
    await reconciler.reconcile(namespace="ns", name=name)


def config(api: Api, namespace: str) -> dict[str, Any]:
    secret = api.obj("Secret", "demo-pull", namespace=namespace)
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    return dict(json.loads(base64.b64decode(secret["data"][".dockerconfigjson"])))


def conditions(api: Api, name: str = "demo") -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in api.status_patches[-1]["conditions"]} if name == "demo" else {}


def last_status(api: Api) -> dict[str, Any]:
    return dict(api.status_patches[-1])


async def test_pull_secrets_go_to_listed_and_selected_namespaces_and_follow_the_password(
    api: Api, reconciler: reconcile.Reconciler
) -> None:
    api.put(fakes.registry(spec={**BASE, "pullSecrets": PULL}))
    await run(reconciler)
    with_node_port(api)
    await run(reconciler)
    first = config(api, "apps")

    api.put(fakes.password_secret("puller-pw", b"another-Secret-pw2"))
    await run(reconciler)
    second = config(api, "ci")
    account = api.obj("ServiceAccount", "default", namespace="apps")

    assert set(first["auths"]) == {"localhost:30555", "demo.ns.svc:443"}
    assert first["auths"]["localhost:30555"]["password"] == PASSWORD
    assert base64.b64decode(first["auths"]["localhost:30555"]["auth"]) == f"puller:{PASSWORD}".encode()
    assert not api.has("Secret", "demo-pull", namespace="gone")
    assert not api.has("Secret", "demo-pull", namespace="private")  # matches the selector, did not opt in
    assert second["auths"]["localhost:30555"]["password"] == "another-Secret-pw2"
    assert account["imagePullSecrets"] == [{"name": "demo-pull"}]
    assert last_status(api)["nodeEndpoint"] == "localhost:30555"
    assert PASSWORD not in json.dumps(api.status_patches) and PASSWORD not in json.dumps(api.events)


async def test_pull_secrets_carry_only_hostnames_node_trust_would_publish(
    api: Api, reconciler: reconcile.Reconciler
) -> None:
    spec = {
        **BASE,
        "tls": {"dnsNames": ["registry.example.com"]},
        "nodeTrust": {
            "enabled": False,
            "hostnames": ["docker.io", "registry.example.com:5000", "elsewhere.example"],
        },
        "pullSecrets": PULL,
    }
    api.put(fakes.registry(spec=spec))
    await run(reconciler)

    auths = config(api, "apps")["auths"]

    assert "registry.example.com:5000" in auths
    assert "docker.io" not in auths and "elsewhere.example" not in auths, (
        "the password stays with the registry"
    )


async def test_removing_pull_secrets_deletes_every_copy(api: Api, reconciler: reconcile.Reconciler) -> None:
    api.put(fakes.registry(spec={**BASE, "pullSecrets": PULL}))
    await run(reconciler)
    assert api.has("Secret", "demo-pull", namespace="ci")

    body = api.obj(names.KIND, "demo")
    del body["spec"]["pullSecrets"]
    api.put(body)
    await run(reconciler)
    await run(reconciler)

    assert not api.has("Secret", "demo-pull", namespace="apps")
    assert not api.has("Secret", "demo-pull", namespace="ci")
    assert api.obj("ServiceAccount", "default", namespace="apps")["imagePullSecrets"] == []


async def test_a_deletion_waits_for_a_pass_in_flight_so_nothing_is_recreated_after_it(
    api: Api, reconciler: reconcile.Reconciler
) -> None:
    api.put(fakes.registry(spec={**BASE, "pullSecrets": PULL}))
    await run(reconciler)
    release = asyncio.Event()
    started = asyncio.Event()
    original = api.list_namespaces

    async def slow_list_namespaces() -> list[dict[str, Any]]:
        started.set()
        await release.wait()  # the pass is in the middle of placing pull secrets
        return await original()

    api.list_namespaces = slow_list_namespaces  # type: ignore[method-assign]
    pass_in_flight = asyncio.create_task(run(reconciler))
    await started.wait()
    body = api.obj(names.KIND, "demo")
    body["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    api.put(body)
    forgetting = asyncio.create_task(reconciler.forget(body=body))
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(pass_in_flight, forgetting)

    assert not api.has("Secret", "demo-pull", namespace="apps")
    assert not api.has("Secret", "demo-pull", namespace="ci")


async def test_a_foreign_secret_is_left_alone_and_an_unknown_user_is_reported(
    api: Api, reconciler: reconcile.Reconciler
) -> None:
    api.put({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "demo-pull", "namespace": "apps"},
             "data": {"x": "eQ=="}})  # fmt: skip
    api.put(fakes.registry(spec={**BASE, "pullSecrets": {"user": "puller", "namespaces": ["apps"]}}))
    await run(reconciler)
    foreign = conditions(api)["Degraded"]

    body = api.obj(names.KIND, "demo")
    body["spec"]["pullSecrets"] = {"user": "nobody", "namespaces": ["apps"]}
    api.put(body)
    await run(reconciler)
    unknown = conditions(api)["Degraded"]

    assert api.obj("Secret", "demo-pull", namespace="apps")["data"] == {"x": "eQ=="}
    assert (foreign["status"], foreign["reason"]) == ("True", "PullSecretsFailed")
    assert "not ours" in foreign["message"]
    assert (unknown["status"], unknown["reason"]) == ("True", "PullSecretUserUnknown")


async def test_a_listed_namespace_that_did_not_opt_in_gets_nothing_and_is_named(
    api: Api, reconciler: reconcile.Reconciler
) -> None:
    api.put(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": "kube-system"},
        }
    )
    pull = {"user": "puller", "namespaces": ["apps", "kube-system"], "serviceAccount": "default",
            "namespaceSelector": {"pulls": "demo"}}  # fmt: skip
    api.put(fakes.registry(spec={**BASE, "pullSecrets": pull}))
    await run(reconciler)
    degraded = conditions(api)["Degraded"]

    assert api.has("Secret", "demo-pull", namespace="apps")
    assert not api.has("Secret", "demo-pull", namespace="kube-system")
    assert not api.has("Secret", "demo-pull", namespace="private")
    assert not api.obj("ServiceAccount", "default", namespace="kube-system").get("imagePullSecrets")
    assert (degraded["status"], degraded["reason"]) == ("True", "PullSecretNamespaceNotOptedIn")
    assert "kube-system" in degraded["message"] and OPT_IN in degraded["message"]
    assert "private" not in degraded["message"]


async def test_a_namespace_that_withdraws_its_opt_in_loses_the_copy(
    api: Api, reconciler: reconcile.Reconciler
) -> None:
    api.put(fakes.registry(spec={**BASE, "pullSecrets": {"user": "puller", "namespaces": ["apps"]}}))
    await run(reconciler)
    assert api.has("Secret", "demo-pull", namespace="apps")

    api.namespaces[0]["metadata"]["labels"] = {}
    await run(reconciler)

    assert not api.has("Secret", "demo-pull", namespace="apps")


async def test_registries_without_pull_secrets_or_hosting_make_no_extra_calls(
    api: Api, reconciler: reconcile.Reconciler
) -> None:
    api.put(fakes.registry(spec=BASE))
    await run(reconciler)
    await run(reconciler)

    assert "Namespace" not in api.lists and "Secret" not in api.lists
    assert not api.has("ConfigMap", hosting.NAME, namespace=hosting.NAMESPACE)


async def test_local_registry_hosting_is_published_by_one_registry_and_withdrawn(
    api: Api, reconciler: reconcile.Reconciler
) -> None:
    api.put(fakes.registry(spec={**BASE, "publishLocalRegistryHosting": True}))
    await run(reconciler)
    with_node_port(api)
    await run(reconciler)
    published = api.obj("ConfigMap", hosting.NAME, namespace=hosting.NAMESPACE)
    api.put(fakes.registry(name="second", spec={**BASE, "publishLocalRegistryHosting": True}))
    await run(reconciler, "second")
    second = {c["type"]: c for c in api.status_patches[-1]["conditions"]}

    body = api.obj(names.KIND, "demo")
    body["spec"]["publishLocalRegistryHosting"] = False
    api.put(body)
    await run(reconciler)

    assert yaml.safe_load(published["data"][hosting.KEY])["host"] == "localhost:30555"
    assert hosting.owned_by(published, hosting.owner_of("ns", "demo"))
    assert (second["Degraded"]["status"], second["Degraded"]["reason"]) == ("True", "HostingTaken")
    assert not api.has("ConfigMap", hosting.NAME, namespace=hosting.NAMESPACE)


async def test_deleting_a_registry_removes_what_it_keeps_outside_its_namespace(
    api: Api, reconciler: reconcile.Reconciler
) -> None:
    api.put(fakes.registry(spec={**BASE, "pullSecrets": PULL, "publishLocalRegistryHosting": True}))
    await run(reconciler)
    with_node_port(api)
    await run(reconciler)
    assert api.has("Secret", "demo-pull", namespace="ci") and api.has(
        "ConfigMap", hosting.NAME, hosting.NAMESPACE
    )

    await reconciler.forget(body=api.obj(names.KIND, "demo"))

    assert not api.has("Secret", "demo-pull", namespace="apps") and not api.has("Secret", "demo-pull", "ci")
    assert not api.has("ConfigMap", hosting.NAME, namespace=hosting.NAMESPACE)


async def test_a_clusterip_registry_has_no_node_endpoint_and_cannot_publish_hosting(
    api: Api, reconciler: reconcile.Reconciler
) -> None:
    api.put(
        fakes.registry(spec={**BASE, "expose": {"type": "ClusterIP"}, "publishLocalRegistryHosting": True})
    )
    await run(reconciler)

    status = last_status(api)
    assert "nodeEndpoint" not in status
    degraded = {c["type"]: c for c in status["conditions"]}["Degraded"]
    assert degraded["reason"] == "HostingNeedsNodePort"
