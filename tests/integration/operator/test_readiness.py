"""Readiness as the operator reports it, driven by what KCM sees (there is no kubelet here).

Covers:
- a registry whose pods are ready (the test plays the kubelet) becomes Ready=True with
  readyReplicas in status, and `kubectl get preg` shows it in the READY and REPLICAS columns;
- with PVC storage, StorageReady stays False while the claim is pending and turns True once
  KCM binds it to a volume.
"""

from __future__ import annotations

from typing import Any

import lightkube
import lightkube.resources.apps_v1
import pytest

from dockyard_operator import names
from tests.integration.operator import cluster
from tests.integration.operator.conftest import Operator
from tests.support import kube

pytestmark = pytest.mark.integration

apps = lightkube.resources.apps_v1
N = names.Names.of("demo")


def _selector(client: lightkube.Client, namespace: str) -> str:
    deployment: Any = client.get(apps.Deployment, N.deployment, namespace=namespace)
    return ",".join(f"{key}={value}" for key, value in deployment.spec.selector.matchLabels.items())


def test_registry_becomes_ready_when_its_pods_are_ready(
    control_plane: kube.ControlPlane, kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    cluster.create_registry(kube_client, namespace=namespace, spec={"storage": {"emptyDir": {}}})
    cluster.wait_child(kube_client, apps.Deployment, N.deployment, namespace)
    not_ready = cluster.wait_condition(kube_client, "demo", namespace, "Ready", "False")
    assert not_ready["message"]

    selector = _selector(kube_client, namespace)
    kube.eventually(
        lambda: control_plane.mark_pods_ready(namespace=namespace, selector=selector),
        what="a registry Pod to mark ready",
    )

    cluster.wait_condition(kube_client, "demo", namespace, "Ready", "True")
    status = kube.eventually(
        lambda: (
            (s := cluster.status_of(kube_client.get(cluster.PrivateRegistry, "demo", namespace=namespace)))
            and s.get("readyReplicas") == 1
            and s
        ),
        what="status.readyReplicas 1",
    )
    columns = control_plane.kubectl(
        "get", "preg", "demo", "-n", namespace, "--no-headers", "-o", "wide"
    ).stdout.split()
    assert columns[:4] == ["demo", status["endpoint"], "True", "1"]


def test_storage_is_ready_once_the_claim_is_bound(
    control_plane: kube.ControlPlane, kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    spec = {"storage": {"pvc": {"size": "1Gi"}}}
    cluster.create_registry(kube_client, namespace=namespace, spec=spec)
    pending = cluster.wait_condition(kube_client, "demo", namespace, "StorageReady", "False")
    assert pending["reason"]

    control_plane.provide_volume(namespace=namespace, claim=N.pvc, size="1Gi", access_modes=["ReadWriteOnce"])

    cluster.wait_condition(kube_client, "demo", namespace, "StorageReady", "True")
