"""The operator's reaction to a permission it lacks, under a real RBAC authorizer.

Covers:
- run under a ServiceAccount token with the operator's declared rules (`rbac.RBAC_RULES` and
  `rbac.KOPF_RBAC_RULES`) minus `create` on Ingresses, a registry that asks for an Ingress is
  reported Degraded with reason Forbidden and a message naming the resource, while every other
  child is still created; the operator keeps running.

The session's admin operator is stopped for this test and restarted afterwards, so two
operators never reconcile the same registries.
"""

from __future__ import annotations

import collections.abc
import copy
import json
from typing import Any

import lightkube
import lightkube.resources.apps_v1
import lightkube.resources.core_v1
import pytest

from dockyard_operator import names, rbac
from tests.integration.operator import cluster
from tests.integration.operator.conftest import Operator
from tests.support import kube

pytestmark = pytest.mark.integration

core = lightkube.resources.core_v1
apps = lightkube.resources.apps_v1
N = names.Names.of("demo")


def _rules_without_ingress_create() -> list[dict[str, Any]]:
    rules = copy.deepcopy([*rbac.RBAC_RULES, *rbac.KOPF_RBAC_RULES])
    for rule in rules:
        if "ingresses" in rule["resources"]:
            rule["verbs"] = [verb for verb in rule["verbs"] if verb != "create"]
    return rules


@pytest.fixture
def restricted(
    control_plane: kube.ControlPlane,
    namespace: str,
    operator: Operator,
    tmp_path_factory: pytest.TempPathFactory,
) -> collections.abc.Iterator[Operator]:
    """An operator whose only credential is a token of a ServiceAccount lacking Ingress create."""
    role = f"{namespace}-restricted"
    documents = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "operator", "namespace": namespace},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": role},
            "rules": _rules_without_ingress_create(),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": namespace}],
        },
    ]
    control_plane.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": documents})
    )
    config = control_plane.service_account_kubeconfig(namespace=namespace, name="operator")

    assert operator.stop() == 0
    limited = Operator(
        plane=control_plane,
        log=tmp_path_factory.mktemp("restricted") / "operator.log",
        kubeconfig=config,
        username=f"system:serviceaccount:{namespace}:operator",
    )
    try:
        limited.start()
        yield limited
        limited.check_alive()
    finally:
        if limited.process is not None:
            limited.stop()
        operator.start()
        control_plane.kubectl("delete", "clusterrolebinding,clusterrole", role, check=False)


def test_a_missing_permission_is_reported_by_resource_and_the_rest_is_still_applied(
    kube_client: lightkube.Client, namespace: str, restricted: Operator
) -> None:
    spec = {"expose": {"ingress": {"host": "images.example.test"}}}
    cluster.create_registry(kube_client, namespace=namespace, spec=spec)

    degraded = cluster.wait_condition(
        kube_client,
        "demo",
        namespace,
        "Degraded",
        "True",
        match=lambda c: c["reason"] == "Forbidden",
        timeout=90,
    )
    assert "ingresses" in degraded["message"]
    for resource, name in [
        (core.Service, N.service),
        (apps.Deployment, N.deployment),
        (core.Secret, N.tls_secret),
    ]:
        cluster.wait_child(kube_client, resource, name, namespace)
    restricted.check_alive()
