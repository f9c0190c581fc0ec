"""Pod hygiene and metrics children against a real API server, and the operator's own metrics.

Covers:
- every registry gets a `<registry>-metrics` ClusterIP Service on port 9102 targeting the registry
  container's metrics port, while status keeps reading the main Service;
- with replicas > 1 a PodDisruptionBudget (maxUnavailable 1) selecting the pods, owned by the registry, and
  it is deleted when replicas go back to 1;
- spec.networkPolicy: the API server accepts the NetworkPolicy (nginx's port from anywhere, metrics from the
  operator's and the listed namespaces); disabling it deletes it;
- the Deployment carries the default topology spread and resource requests;
- the running operator's /metrics reports the registry (readiness, conditions, certificate expiry, reconcile
  durations) and passes `promtool check metrics`.
"""

from __future__ import annotations

import subprocess
import urllib.request
from typing import Any

import lightkube
import lightkube.resources.apps_v1
import lightkube.resources.core_v1
import lightkube.resources.networking_v1
import lightkube.resources.policy_v1
import pytest
from lightkube.types import PatchType

import tests.support
from dockyard_operator import names
from tests.integration.operator import cluster
from tests.integration.operator.conftest import Operator
from tests.support import kube

pytestmark = pytest.mark.integration

core = lightkube.resources.core_v1
apps = lightkube.resources.apps_v1
networking = lightkube.resources.networking_v1
policy = lightkube.resources.policy_v1
N = names.Names.of("demo")
SPEC: dict[str, Any] = {
    "auth": {"users": [cluster.user("alice", "alice-password", access="push")]},
    "storage": {"emptyDir": {}},
    "replicas": 2,
    "networkPolicy": {"enabled": True, "metricsFromNamespaces": ["monitoring"]},
}


@pytest.fixture
def demo(kube_client: lightkube.Client, namespace: str, operator: Operator) -> Any:
    created = cluster.create_registry(
        kube_client, namespace=namespace, spec=SPEC, passwords={"alice": "alice-Hygiene-pw-1"}
    )
    cluster.wait_child(kube_client, apps.Deployment, N.deployment, namespace)
    return created


def test_budget_policy_and_metrics_service_come_and_go_with_the_spec(
    kube_client: lightkube.Client, namespace: str, demo: Any, operator: Operator
) -> None:
    owner_uid = demo.metadata.uid
    budget = cluster.wait_child(kube_client, policy.PodDisruptionBudget, N.pod_disruption_budget, namespace)
    assert budget.spec.maxUnavailable == 1
    assert budget.spec.selector.matchLabels == names.selector_labels("demo")
    assert [r.uid for r in budget.metadata.ownerReferences] == [owner_uid]

    netpol = cluster.wait_child(kube_client, networking.NetworkPolicy, N.network_policy, namespace)
    https, metrics = netpol.spec.ingress
    assert [p.port for p in https.ports] == [5443] and not https.from_
    assert [p.port for p in metrics.ports] == [names.METRICS_PORT]
    (peer,) = metrics.from_
    (expression,) = peer.namespaceSelector.matchExpressions
    assert expression.key == "kubernetes.io/metadata.name"
    assert sorted(expression.values) == sorted([operator.home, "monitoring"])

    service = cluster.wait_child(kube_client, core.Service, N.metrics_service, namespace)
    assert service.spec.type == "ClusterIP"
    (port,) = service.spec.ports
    assert (port.port, port.targetPort) == (names.METRICS_PORT, names.METRICS_PORT_NAME)
    assert [r.uid for r in service.metadata.ownerReferences] == [owner_uid]

    pod = kube_client.get(apps.Deployment, N.deployment, namespace=namespace).spec.template.spec
    (spread,) = pod.topologySpreadConstraints
    assert (spread.topologyKey, spread.whenUnsatisfiable) == ("kubernetes.io/hostname", "ScheduleAnyway")
    registry = next(c for c in pod.containers if c.name == "registry")
    assert registry.resources.requests == {"cpu": "50m", "memory": "64Mi"}

    status = kube.eventually(
        lambda: cluster.status_of(kube_client.get(cluster.PrivateRegistry, "demo", namespace=namespace)).get(
            "endpoint"
        ),
        what="status.endpoint",
    )
    assert status == f"{N.service}.{namespace}.svc:443"

    kube_client.patch(
        cluster.PrivateRegistry,
        "demo",
        {"spec": {"replicas": 1, "networkPolicy": {"enabled": False}}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )
    kube.eventually(
        lambda: cluster.absent(kube_client, policy.PodDisruptionBudget, N.pod_disruption_budget, namespace),
        what="the budget deleted",
    )
    kube.eventually(
        lambda: cluster.absent(kube_client, networking.NetworkPolicy, N.network_policy, namespace),
        what="the network policy deleted",
    )
    assert not cluster.absent(kube_client, core.Service, N.metrics_service, namespace)


def test_the_operators_metrics_report_the_registry(
    kube_client: lightkube.Client, namespace: str, demo: Any, operator: Operator
) -> None:
    def reported() -> str | None:
        with urllib.request.urlopen(operator.metrics, timeout=10) as response:  # noqa: S310 - loopback
            text = response.read().decode()
        wanted = f'certificate="server",namespace="{namespace}",registry="demo"'
        return text if wanted in text else None

    text = kube.eventually(reported, what="the registry in the operator's metrics")
    assert f'dockyard_operator_registry_ready{{namespace="{namespace}",registry="demo"}}' in text
    assert f'condition="Ready",namespace="{namespace}",registry="demo"' in text
    assert 'dockyard_operator_reconcile_duration_seconds_count{step="children"}' in text
    checked = subprocess.run(
        [str(tests.support.tool("promtool")), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
