"""spec.storage.s3 against the real kube-apiserver: what the operator writes; a missing credentials Secret.

Covers:
- a registry on S3 with two replicas and a credentials Secret: the Deployment's registry container gets the
  bucket as `--storage-driver s3 --s3-*` arguments (no --data-dir, no --accel-redirect) and the access key
  as env `secretKeyRef`s to that Secret (no value in the Deployment), no data volume, a RollingUpdate
  strategy; no PersistentVolumeClaim; a PodDisruptionBudget; nginx's config without the internal blob
  location; status.storage.location is s3://bucket/prefix and StorageReady says ObjectStorage;
- no credentials Secret: Ready False, Degraded and StorageReady naming it (spec.storage.s3.credentialsSecret,
  its name), a Warning Event naming it, no Deployment; creating the Secret (its watch) completes the
  reconcile and StorageReady turns True;
- a key missing from the credentials Secret is named the same way.
The registry's S3 driver itself is tested against a real S3 server in the registry's own tests.
"""

from __future__ import annotations

from typing import Any

import lightkube
import lightkube.resources.apps_v1
import lightkube.resources.core_v1
import lightkube.resources.policy_v1
import pytest

from dockyard_operator import names
from dockyard_operator.builders import nginx_configmap
from tests.integration.operator import cluster
from tests.integration.operator.conftest import Operator
from tests.support import kube

pytestmark = pytest.mark.integration

core = lightkube.resources.core_v1
apps = lightkube.resources.apps_v1
policy = lightkube.resources.policy_v1
N = names.Names.of("demo")
SECRET_ACCESS_KEY = "integration-s3-secret-key-never-copied"  # a test value
S3 = {
    "endpoint": "http://minio.storage.svc:9000",
    "bucket": "team-images",
    "prefix": "registries/demo",
    "credentialsSecret": {"name": "bucket-creds"},
}


def _credentials(namespace: str, **data: str) -> Any:
    values = data or {"AWS_ACCESS_KEY_ID": "AKIAINTEGRATION", "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY}
    return core.Secret(
        metadata=cluster.meta.ObjectMeta(name="bucket-creds", namespace=namespace), stringData=values
    )


def _registry_container(deployment: Any) -> dict[str, Any]:
    spec = deployment.spec.template.spec.to_dict()
    return next(c for c in spec["containers"] if c["name"] == "registry")


def test_an_s3_registry_gets_env_refs_no_claim_a_budget_and_reports_the_bucket(
    kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    kube_client.create(_credentials(namespace))
    cluster.create_registry(kube_client, namespace=namespace, spec={"replicas": 2, "storage": {"s3": S3}})

    deployment = cluster.wait_child(kube_client, apps.Deployment, N.deployment, namespace)
    registry = _registry_container(deployment)
    args = registry["args"]
    assert args[args.index("--storage-driver") + 1] == "s3"
    assert args[args.index("--s3-bucket") + 1] == "team-images"
    assert args[args.index("--s3-prefix") + 1] == "registries/demo"
    assert args[args.index("--s3-endpoint") + 1] == "http://minio.storage.svc:9000"
    assert "--s3-redirect" in args
    assert "--accel-redirect" not in args and "--data-dir" not in args
    env = {e["name"]: e for e in registry["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {
        "name": "bucket-creds",
        "key": "AWS_ACCESS_KEY_ID",
    }
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "bucket-creds"
    assert SECRET_ACCESS_KEY not in str(deployment.to_dict())
    pod = deployment.spec.template.spec
    assert "data" not in {v.name for v in pod.volumes}
    assert deployment.spec.strategy.type == "RollingUpdate"

    cluster.wait_child(kube_client, policy.PodDisruptionBudget, N.pod_disruption_budget, namespace)
    config = kube_client.get(core.ConfigMap, N.nginx_configmap, namespace=namespace)
    assert nginx_configmap.BLOB_PREFIX not in config.data[nginx_configmap.CONFIG_KEY]
    assert cluster.absent(kube_client, core.PersistentVolumeClaim, N.pvc, namespace)

    storage = cluster.wait_condition(kube_client, "demo", namespace, "StorageReady", "True")
    assert storage["reason"] == "ObjectStorage"
    status = cluster.status_of(kube_client.get(cluster.PrivateRegistry, "demo", namespace=namespace))
    assert status["storage"]["location"] == "s3://team-images/registries/demo"
    assert SECRET_ACCESS_KEY not in str(status)


def test_a_missing_credentials_secret_is_named_until_it_is_created(
    kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    cluster.create_registry(kube_client, namespace=namespace, spec={"storage": {"s3": S3}})

    degraded = cluster.wait_condition(
        kube_client, "demo", namespace, "Degraded", "True", match=lambda c: "bucket-creds" in c["message"]
    )
    assert degraded["reason"] == "SecretNotFound"
    assert "spec.storage.s3.credentialsSecret" in degraded["message"]
    ready = cluster.wait_condition(kube_client, "demo", namespace, "Ready", "False")
    assert "bucket-creds" in ready["message"]
    storage = cluster.wait_condition(kube_client, "demo", namespace, "StorageReady", "False")
    assert storage["reason"] == "SecretNotFound" and "bucket-creds" in storage["message"]
    kube.eventually(
        lambda: any(
            "bucket-creds" in (e.message or "") and e.type == "Warning"
            for e in cluster.events_for(kube_client, namespace, "demo")
        ),
        what="a Warning Event naming the missing Secret",
    )
    assert cluster.absent(kube_client, apps.Deployment, N.deployment, namespace)

    kube_client.create(_credentials(namespace))

    cluster.wait_child(kube_client, apps.Deployment, N.deployment, namespace)
    cluster.wait_condition(kube_client, "demo", namespace, "Degraded", "False")
    recovered = cluster.wait_condition(kube_client, "demo", namespace, "StorageReady", "True")
    assert recovered["reason"] == "ObjectStorage"


def test_a_key_missing_from_the_credentials_secret_is_named(
    kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    kube_client.create(_credentials(namespace, AWS_ACCESS_KEY_ID="AKIAINTEGRATION"))
    cluster.create_registry(kube_client, namespace=namespace, spec={"storage": {"s3": S3}})

    degraded = cluster.wait_condition(
        kube_client, "demo", namespace, "Degraded", "True", match=lambda c: "bucket-creds" in c["message"]
    )
    assert degraded["reason"] == "SecretKeyMissing"
    assert "'AWS_SECRET_ACCESS_KEY'" in degraded["message"]
    assert cluster.absent(kube_client, apps.Deployment, N.deployment, namespace)
