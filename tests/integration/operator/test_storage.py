"""Storage changes the API server refuses, and what the operator reports about them.

Covers:
- resizing a claim that is not bound yet is refused by the API server; the operator reports it
  (StorageReady False with a readable message), keeps the claim as it was, and still applies
  the rest of the spec (a new user reaches the htpasswd Secret);
- shrinking a bound claim is refused and reported the same way;
- more than one replica on a ReadWriteOnce claim is reported as storage that is not shared.
"""

from __future__ import annotations

from typing import Any

import lightkube
import lightkube.resources.core_v1
import lightkube.types
import pytest
from passlib import apache

from dockyard_operator import names
from tests.integration.operator import cluster
from tests.integration.operator.conftest import Operator
from tests.support import kube

pytestmark = pytest.mark.integration

core = lightkube.resources.core_v1
MERGE = lightkube.types.PatchType.MERGE
N = names.Names.of("demo")


def _claim_size(client: lightkube.Client, namespace: str) -> str:
    claim: Any = client.get(core.PersistentVolumeClaim, N.pvc, namespace=namespace)
    return str(claim.spec.resources.requests["storage"])


def _claim_phase(client: lightkube.Client, namespace: str) -> str:
    claim: Any = client.get(core.PersistentVolumeClaim, N.pvc, namespace=namespace)
    return str(claim.status.phase)


def test_resizing_a_pending_claim_is_reported_and_the_rest_of_the_spec_still_applies(
    kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    spec = {"storage": {"pvc": {"size": "1Gi"}}}
    cluster.create_registry(
        kube_client, namespace=namespace, spec=spec, passwords={"gina": "gina-Storage-pw-21"}
    )
    cluster.wait_condition(kube_client, "demo", namespace, "StorageReady", "False")  # pending: no volume
    assert _claim_size(kube_client, namespace) == "1Gi"

    new_spec = {
        "storage": {"pvc": {"size": "2Gi"}},
        "auth": {"users": [cluster.user("gina", "gina-password")]},
    }
    kube_client.patch(
        cluster.PrivateRegistry, "demo", {"spec": new_spec}, namespace=namespace, patch_type=MERGE
    )

    storage = cluster.wait_condition(
        kube_client, "demo", namespace, "StorageReady", "False", match=lambda c: c["reason"] != "ClaimPending"
    )
    assert N.pvc in storage["message"] or "PersistentVolumeClaim" in storage["message"]
    assert _claim_size(kube_client, namespace) == "1Gi"

    def gina_added() -> bool:
        data = cluster.secret_data(kube_client.get(core.Secret, N.htpasswd_secret, namespace=namespace))
        return bool(
            apache.HtpasswdFile.from_string(data["htpasswd"]).check_password("gina", "gina-Storage-pw-21")
        )

    kube.eventually(gina_added, what="the new user despite the refused claim update")


def test_shrinking_a_bound_claim_is_reported_and_the_claim_keeps_its_size(
    control_plane: kube.ControlPlane, kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    cluster.create_registry(kube_client, namespace=namespace, spec={"storage": {"pvc": {"size": "2Gi"}}})
    control_plane.provide_volume(namespace=namespace, claim=N.pvc, size="2Gi", access_modes=["ReadWriteOnce"])
    kube.eventually(lambda: _claim_phase(kube_client, namespace) == "Bound", what="KCM to bind the claim")
    cluster.wait_condition(kube_client, "demo", namespace, "StorageReady", "True")

    kube_client.patch(
        cluster.PrivateRegistry,
        "demo",
        {"spec": {"storage": {"pvc": {"size": "1Gi"}}}},
        namespace=namespace,
        patch_type=MERGE,
    )

    storage = cluster.wait_condition(kube_client, "demo", namespace, "StorageReady", "False")
    assert storage["message"]
    assert _claim_size(kube_client, namespace) == "2Gi"


def test_more_replicas_than_a_read_write_once_claim_can_serve_are_reported(
    kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    cluster.create_registry(kube_client, namespace=namespace, spec={"replicas": 2})

    storage = cluster.wait_condition(
        kube_client,
        "demo",
        namespace,
        "StorageReady",
        "False",
        match=lambda c: c["reason"] == "StorageNotShared",
    )
    assert "ReadWriteMany" in storage["message"]
