"""The CRD's schema and CEL rules, enforced by the real API server (no operator needed).

Covers:
- out-of-range numbers, unknown enum values, duplicate user names and cross-field rules are
  rejected at admission,
  with a message that names the field and says what is allowed;
- a rejected object is not stored;
- a minimal spec is accepted and the API server fills in the documented defaults;
- `kubectl explain` serves the field documentation written in model.py.
"""

from __future__ import annotations

import json
from typing import Any

import lightkube
import pytest
import yaml

from tests.integration.operator import cluster
from tests.support import kube

pytestmark = pytest.mark.integration

SECRET_REF = {"name": "alice-password"}
S3 = {"endpoint": "http://minio:9000", "bucket": "images", "credentialsSecret": {"name": "bucket-creds"}}

REJECTED: list[tuple[str, dict[str, Any], list[str]]] = [
    ("negative-replicas", {"replicas": -1}, ["spec.replicas", "greater than or equal to 0"]),
    ("too-many-replicas", {"replicas": 21}, ["spec.replicas", "less than or equal to 20"]),
    (
        "unknown-access",
        {"auth": {"users": [{"name": "alice", "passwordSecretRef": SECRET_REF, "access": "root"}]}},
        ["spec.auth.users[0].access", 'Unsupported value: "root"', '"pull"', '"push"', '"admin"'],
    ),
    (
        "unknown-tls-mode",
        {"tls": {"mode": "Magic"}},
        ["spec.tls.mode", 'Unsupported value: "Magic"', '"SelfSigned"', '"Secret"'],
    ),
    (
        "secret-mode-without-secret",
        {"tls": {"mode": "Secret"}},
        ["tls.secretName is required when tls.mode is Secret"],
    ),
    (
        "renew-before-longer-than-duration",
        {"tls": {"certDuration": "1h", "renewBefore": "2h"}},
        ["tls.renewBefore must be shorter than tls.certDuration"],
    ),
    ("bad-duration", {"tls": {"certDuration": "ninety days"}}, ["spec.tls.certDuration", "should match"]),
    (
        "two-storage-kinds",
        {"storage": {"pvc": {"size": "1Gi"}, "emptyDir": {}}},
        ["set at most one of pvc, emptyDir and s3"],
    ),
    (
        "s3-and-pvc",
        {"storage": {"pvc": {}, "s3": S3}},
        ["set at most one of pvc, emptyDir and s3"],
    ),
    (
        "s3-ca-from-two-places",
        {"storage": {"s3": {**S3, "caSecret": {"name": "a"}, "caConfigMap": {"name": "b"}}}},
        ["set at most one of caSecret and caConfigMap"],
    ),
    (
        "s3-endpoint-not-a-url",
        {"storage": {"s3": {**S3, "endpoint": "minio:9000"}}},
        ["spec.storage.s3.endpoint", "should match"],
    ),
    (
        "s3-without-credentials",
        {"storage": {"s3": {"endpoint": "http://minio:9000", "bucket": "images"}}},
        ["spec.storage.s3.credentialsSecret", "Required value"],
    ),
    (
        "node-port-on-cluster-ip",
        {"expose": {"type": "ClusterIP", "nodePort": 30500}},
        ["expose.nodePort needs expose.type NodePort or LoadBalancer"],
    ),
    (
        "duplicate-user-names",
        {
            "auth": {
                "users": [
                    {"name": "alice", "passwordSecretRef": SECRET_REF},
                    {"name": "alice", "passwordSecretRef": SECRET_REF, "access": "push"},
                ]
            }
        },
        ["spec.auth.users[1]", 'Duplicate value: {"name":"alice"}'],
    ),
    (
        "user-without-password-ref",
        {"auth": {"users": [{"name": "alice"}]}},
        ["spec.auth.users[0].passwordSecretRef", "Required value"],
    ),
    (
        "almost-full-above-the-default-max-fill",
        {"storage": {"almostFullPercent": 96}},
        ["almostFullPercent must not be above maxFillPercent"],
    ),
    (
        "unknown-deletion-policy",
        {"storage": {"pvc": {"deletionPolicy": "Orphan"}}},
        ["spec.storage.pvc.deletionPolicy", 'Unsupported value: "Orphan"', '"Retain"', '"Delete"'],
    ),
    ("schedule-not-cron-shaped", {"maintenance": {"schedule": "daily"}}, ["spec.maintenance.schedule"]),
    (
        "retention-rule-keeping-nothing",
        {"maintenance": {"retention": [{"repositories": ["**"]}]}},
        ["give keepLast, keepWithin or both"],
    ),
]


def _manifest(name: str, namespace: str, spec: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": f"{cluster.GROUP}/{cluster.VERSION}",
            "kind": cluster.KIND,
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


@pytest.mark.parametrize(("name", "spec", "expected"), REJECTED, ids=[case[0] for case in REJECTED])
def test_api_server_rejects_an_invalid_spec_with_a_message_naming_the_problem(
    control_plane: kube.ControlPlane,
    crd_installed: None,
    kube_client: lightkube.Client,
    namespace: str,
    name: str,
    spec: dict[str, Any],
    expected: list[str],
) -> None:
    done = control_plane.kubectl("apply", "-f", "-", input=_manifest(name, namespace, spec), check=False)

    assert done.returncode != 0, f"accepted: {done.stdout}"
    for fragment in expected:
        assert fragment in done.stderr
    assert cluster.absent(kube_client, cluster.PrivateRegistry, name, namespace)


def test_api_server_accepts_a_minimal_spec_and_fills_in_the_defaults(
    control_plane: kube.ControlPlane, crd_installed: None, namespace: str
) -> None:
    control_plane.kubectl("apply", "-f", "-", input=_manifest("minimal", namespace, {}))

    stored = json.loads(control_plane.kubectl("get", "preg", "minimal", "-n", namespace, "-o", "json").stdout)
    spec = stored["spec"]
    assert spec["replicas"] == 1
    assert spec["tls"]["mode"] == "SelfSigned"
    assert spec["tls"]["certDuration"] == "2160h"
    assert spec["auth"]["anonymousPull"] is False
    assert spec["expose"]["type"] == "ClusterIP"
    assert spec["maintenance"]["schedule"] == "17 3 * * *" and spec["maintenance"]["suspend"] is False
    assert spec["storage"]["almostFullPercent"] == 85 and spec["storage"]["maxFillPercent"] == 95


def test_kubectl_explain_serves_the_field_documentation(
    control_plane: kube.ControlPlane, crd_installed: None
) -> None:
    # (kubectl 1.33's explain does not expand the short name `preg`; the plural is the documented way.)
    explained = control_plane.kubectl("explain", "privateregistries.spec.auth.users.access").stdout

    assert "ENUM" in explained and "pull" in explained and "admin" in explained
    assert "pull: read only; push: pull and push; admin: pull, push and delete." in explained
