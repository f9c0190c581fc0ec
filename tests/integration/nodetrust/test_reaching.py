"""Reaching the registry from other namespaces and tools, against the real API server and operator.

Covers:
- `pullSecrets`: a kubernetes.io/dockerconfigjson Secret with the chosen user's credentials appears in every
  listed namespace and every namespace matching the selector, the ServiceAccount named gets it in its
  imagePullSecrets (keeping its others), a password change reaches every copy, a namespace that stops
  matching loses its copy, and removing `pullSecrets` (or the registry) removes them all;
- `publishLocalRegistryHosting`: kube-public/local-registry-hosting names `localhost:<nodePort>` (KEP-1755),
  a second registry asking for it is told (Degraded) and does not overwrite it, and deleting the first
  registry withdraws it;
- `status.nodeEndpoint` is `localhost:<nodePort>`.
"""

from __future__ import annotations

import base64
import collections.abc
import json
import secrets
from typing import Any

import lightkube
import lightkube.models.core_v1
import lightkube.models.meta_v1
import lightkube.resources.core_v1
import lightkube.types
import pytest
import yaml

from dockyard_operator import hosting, tenancy
from tests.integration.operator import cluster
from tests.integration.operator.conftest import Operator
from tests.support import kube

pytestmark = pytest.mark.integration

core = lightkube.resources.core_v1
meta = lightkube.models.meta_v1


@pytest.fixture
def other_namespaces(kube_client: lightkube.Client, namespace: str) -> collections.abc.Iterator[list[str]]:
    """Two namespaces to receive pull secrets: `<x>-listed` and `<x>-labelled` (label pulls=<x>), both
    accepting pull secrets from `namespace` (tenancy.opt_in_label)."""
    base = f"pull-{secrets.token_hex(3)}"
    created = [f"{base}-listed", f"{base}-labelled"]
    opt_in = {tenancy.opt_in_label(namespace): "true"}
    kube_client.create(core.Namespace(metadata=meta.ObjectMeta(name=created[0], labels=opt_in)))
    kube_client.create(
        core.Namespace(metadata=meta.ObjectMeta(name=created[1], labels={"pulls": base, **opt_in}))
    )
    yield created
    for name in created:
        kube_client.delete(core.Namespace, name)


def pull_config(client: lightkube.Client, namespace: str, name: str = "demo-pull") -> dict[str, Any]:
    secret: Any = client.get(core.Secret, name, namespace=namespace)
    assert secret.type == "kubernetes.io/dockerconfigjson"
    return dict(json.loads(base64.b64decode(secret.data[".dockerconfigjson"])))


def default_account_has(client: lightkube.Client, namespace: str, secret: str) -> bool:
    account: Any = client.get(core.ServiceAccount, "default", namespace=namespace)
    return any(ref.name == secret for ref in account.imagePullSecrets or [])


def _with_endpoints(status: dict[str, Any]) -> dict[str, Any] | None:
    """`status` once it names both endpoints (None before: "not yet")."""
    return status if status.get("nodeEndpoint") and status.get("endpoint") else None


def test_pull_secrets_follow_namespaces_passwords_and_the_spec(
    kube_client: lightkube.Client, namespace: str, operator: Operator, other_namespaces: list[str]
) -> None:
    listed, labelled = other_namespaces
    label = kube_client.get(core.Namespace, labelled).metadata.labels["pulls"]
    kube.eventually(
        lambda: kube_client.get(core.ServiceAccount, "default", namespace=listed), what="default SA"
    )
    kube_client.patch(
        core.ServiceAccount, "default", {"imagePullSecrets": [{"name": "theirs"}]}, namespace=listed,
        patch_type=lightkube.types.PatchType.MERGE,
    )  # fmt: skip
    spec = {
        "expose": {"type": "NodePort"},
        "storage": {"emptyDir": {}},
        "auth": {"users": [cluster.user("puller", "puller-password")]},
        "pullSecrets": {
            "user": "puller",
            "namespaces": [listed],
            "namespaceSelector": {"pulls": label},
            "serviceAccount": "default",
        },
    }
    cluster.create_registry(
        kube_client, namespace=namespace, spec=spec, passwords={"puller": "first-Pass-word1"}
    )

    first = kube.eventually(
        lambda: pull_config(kube_client, listed), what="the pull secret in the listed namespace"
    )
    labelled_config = kube.eventually(
        lambda: pull_config(kube_client, labelled), what="the labelled namespace's copy"
    )
    kube.eventually(lambda: default_account_has(kube_client, listed, "demo-pull"), what="the SA to use it")
    account: Any = kube_client.get(core.ServiceAccount, "default", namespace=listed)
    # The pass writes status after the pull secrets and the ServiceAccount: wait for it too.
    status = kube.eventually(
        lambda: _with_endpoints(
            cluster.status_of(kube_client.get(cluster.PrivateRegistry, "demo", namespace=namespace))
        ),
        what="the registry's endpoints in its status",
    )

    kube_client.replace(cluster.password_secret("puller-password", namespace, "second-Pass-word2"))
    kube.eventually(
        lambda: all(
            e["password"] == "second-Pass-word2" for e in pull_config(kube_client, labelled)["auths"].values()
        ),
        what="the new password in every copy",
    )
    kube_client.patch(core.Namespace, labelled, {"metadata": {"labels": {"pulls": "no"}}},
                      patch_type=lightkube.types.PatchType.MERGE)  # fmt: skip
    kube.eventually(
        lambda: cluster.absent(kube_client, core.Secret, "demo-pull", labelled),
        what="the unlabelled copy to go",
    )
    kube_client.patch(cluster.PrivateRegistry, "demo", {"spec": {"pullSecrets": None}}, namespace=namespace,
                      patch_type=lightkube.types.PatchType.MERGE)  # fmt: skip
    kube.eventually(
        lambda: cluster.absent(kube_client, core.Secret, "demo-pull", listed), what="every copy to go"
    )

    node_endpoint = status["nodeEndpoint"]
    assert node_endpoint.startswith("localhost:3")
    assert set(first["auths"]) >= {node_endpoint, status["endpoint"]}
    entry = first["auths"][node_endpoint]
    assert (entry["username"], entry["password"]) == ("puller", "first-Pass-word1")
    assert base64.b64decode(entry["auth"]) == b"puller:first-Pass-word1"
    assert labelled_config == first
    assert [ref.name for ref in account.imagePullSecrets] == ["theirs", "demo-pull"]
    assert "first-Pass-word1" not in json.dumps(status)


def test_local_registry_hosting_is_published_once_and_withdrawn_with_its_registry(
    kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    spec = {"expose": {"type": "NodePort"}, "storage": {"emptyDir": {}}, "publishLocalRegistryHosting": True}
    cluster.create_registry(kube_client, namespace=namespace, name="first", spec=spec)
    published: Any = kube.eventually(
        lambda: kube_client.get(core.ConfigMap, hosting.NAME, namespace=hosting.NAMESPACE),
        what="the ConfigMap",
    )
    cluster.create_registry(kube_client, namespace=namespace, name="second", spec=spec)
    refused = cluster.wait_condition(kube_client, "second", namespace, "Degraded", "True")
    status = cluster.status_of(kube_client.get(cluster.PrivateRegistry, "first", namespace=namespace))
    document = yaml.safe_load(published.data[hosting.KEY])
    still: Any = kube_client.get(core.ConfigMap, hosting.NAME, namespace=hosting.NAMESPACE)

    kube_client.delete(cluster.PrivateRegistry, "first", namespace=namespace)
    kube.eventually(
        lambda: (
            cluster.absent(kube_client, core.ConfigMap, hosting.NAME, hosting.NAMESPACE)
            or hosting.owned_by(
                kube_client.get(core.ConfigMap, hosting.NAME, namespace=hosting.NAMESPACE).to_dict(),
                hosting.owner_of(namespace, "second"),
            )
        ),
        what="the first registry's ConfigMap to be withdrawn",
    )
    kube_client.delete(cluster.PrivateRegistry, "second", namespace=namespace)
    kube.eventually(
        lambda: cluster.absent(kube_client, core.ConfigMap, hosting.NAME, hosting.NAMESPACE),
        what="no ConfigMap once no registry asks for it",
    )

    assert document["host"] == document["hostFromContainerRuntime"] == status["nodeEndpoint"]
    assert refused["reason"] == "HostingTaken"
    assert hosting.owned_by(still.to_dict(), hosting.owner_of(namespace, "first"))
