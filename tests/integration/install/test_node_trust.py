"""Node trust under the chart's RBAC: the operator publishes into its own namespace with the home Role only.

Covers: a registry with `nodeTrust.enabled` makes the operator (running under the chart's ServiceAccount)
create the node-trust ConfigMap and DaemonSet in the release namespace; the DaemonSet runs as the agent
ServiceAccount the chart ships and the operator's own image (DOCKYARD_NODE_TRUST_IMAGE); the ConfigMap
carries the registry's CA; the registry's NodeTrustReady condition never reports a publishing failure.
There are no nodes here, so no agent ever reports (tests/e2e covers a real node).
"""

from __future__ import annotations

from typing import Any

import lightkube
import lightkube.resources.apps_v1
import lightkube.resources.core_v1
import pytest

from dockyard_operator import names
from dockyard_operator.nodetrust import builders
from tests.integration.install import chart, conftest
from tests.integration.operator import cluster
from tests.support import kube

pytestmark = pytest.mark.integration

apps = lightkube.resources.apps_v1
core = lightkube.resources.core_v1


def test_the_operator_publishes_node_trust_in_its_own_namespace_with_the_charts_identity(
    kube_client: lightkube.Client, namespace: str, charted_operator: conftest.ChartedOperator
) -> None:
    spec = {
        "nodeTrust": {"enabled": True},
        "storage": {"emptyDir": {}},
        "auth": {"users": [cluster.user("alice", "alice-password", access="push")]},
    }
    cluster.create_registry(
        kube_client, namespace=namespace, spec=spec, passwords={"alice": "alice-Trust-pw-1"}
    )
    home = charted_operator.namespace
    daemonset: Any = cluster.wait_child(
        kube_client, lightkube.resources.apps_v1.DaemonSet, builders.NAME, home
    )
    pod = daemonset.spec.template.spec
    assert pod.serviceAccountName == builders.NAME
    (container,) = pod.containers
    assert (
        container.image
        == chart.only(charted_operator.docs, "Deployment")["spec"]["template"]["spec"]["containers"][0][
            "image"
        ]
    )

    tls: Any = cluster.wait_child(
        kube_client, lightkube.resources.core_v1.Secret, names.Names.of("demo").tls_secret, namespace
    )
    ca = cluster.secret_data(tls)["ca.crt"].decode().strip()

    def published() -> bool:
        configmap = kube_client.get(core.ConfigMap, builders.NAME, namespace=home)
        return any(ca in value for value in (configmap.data or {}).values())

    kube.eventually(published, what="the registry's CA in the node-trust ConfigMap")
    registry = kube_client.get(cluster.PrivateRegistry, "demo", namespace=namespace)
    trust = cluster.condition(registry, "NodeTrustReady")
    assert trust is not None and trust["reason"] != "PublishFailed", trust
