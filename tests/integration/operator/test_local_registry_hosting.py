"""spec.publishLocalRegistryHosting: the cluster's one `kube-public/local-registry-hosting` (KEP-1755).

Covers:
- a registry that opts in publishes the ConfigMap: node-side host `localhost:<nodePort>`, the
  in-cluster Service name, and which registry wrote it;
- a second registry asking for it is reported (Degraded, naming the ConfigMap) and never
  overwrites the first one's;
- deleting the publishing registry withdraws its ConfigMap.
"""

from __future__ import annotations

from typing import Any

import lightkube
import lightkube.resources.core_v1
import pytest
import yaml

from tests.integration.operator import cluster
from tests.integration.operator.conftest import Operator
from tests.support import kube

pytestmark = pytest.mark.integration

core = lightkube.resources.core_v1
NAMESPACE, NAME, KEY = "kube-public", "local-registry-hosting", "localRegistryHosting.v1"
OWNER = "dockyard.dev/local-registry-hosting-for"


def _published(client: lightkube.Client) -> tuple[str, dict[str, Any]]:
    """(the registry that wrote it, the parsed document)."""
    configmap: Any = client.get(core.ConfigMap, NAME, namespace=NAMESPACE)
    return configmap.metadata.annotations[OWNER], yaml.safe_load(configmap.data[KEY])


def test_one_registry_publishes_local_registry_hosting_and_withdraws_it_on_deletion(
    kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    spec = {"publishLocalRegistryHosting": True, "expose": {"type": "NodePort", "nodePort": 30611}}
    cluster.create_registry(kube_client, namespace=namespace, spec=spec)

    owner, document = kube.eventually(lambda: _published(kube_client), what="the published ConfigMap")
    assert owner == f"{namespace}/demo"
    assert document["host"] == "localhost:30611"
    assert document["hostFromContainerRuntime"] == "localhost:30611"
    assert document["hostFromClusterNetwork"] == f"demo.{namespace}.svc:443"

    second = {"publishLocalRegistryHosting": True, "expose": {"type": "NodePort", "nodePort": 30612}}
    cluster.create_registry(kube_client, namespace=namespace, name="second", spec=second)
    degraded = cluster.wait_condition(
        kube_client, "second", namespace, "Degraded", "True", match=lambda c: NAME in c["message"]
    )
    assert degraded["reason"]
    assert _published(kube_client)[0] == f"{namespace}/demo"

    kube_client.delete(cluster.PrivateRegistry, "demo", namespace=namespace)

    def withdrawn() -> bool:
        try:
            owner, _ = _published(kube_client)
        except lightkube.ApiError as exc:
            return exc.status.code == 404
        return owner != f"{namespace}/demo"

    kube.eventually(withdrawn, timeout=90, what="the deleted registry's ConfigMap to be withdrawn")
    # The ConfigMap is cluster-wide: do not leave it to the second registry for later tests.
    kube_client.delete(cluster.PrivateRegistry, "second", namespace=namespace)
