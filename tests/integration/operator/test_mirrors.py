"""spec.mirrors against a real kube-apiserver and the operator: what the API accepts and what the pod gets.

Covers:
- the CRD schema (generated from the model) accepts a mirror list and refuses an upstream URL with a path
  at admission, before the operator sees it;
- a registry with a mirror gets the `<registry>-mirrors` ConfigMap (owned by it) holding the registry's
  mirrors file with mounted paths and no password, and a Deployment whose registry container passes
  `--mirrors` and mounts the file with the credential Secret's keys (a projected volume);
- the upstream password stays in the user's Secret: it is in no object the operator wrote.
"""

from __future__ import annotations

import json
from typing import Any

import lightkube
import lightkube.resources.apps_v1
import lightkube.resources.core_v1
import pytest

from dockyard_operator import names
from tests.integration.operator import cluster
from tests.integration.operator.conftest import Operator

pytestmark = pytest.mark.integration

core = lightkube.resources.core_v1
apps = lightkube.resources.apps_v1
UPSTREAM_PASSWORD = "upstream-Integration-pw-9"


def _mirror(**extra: Any) -> dict[str, Any]:
    return {"upstream": "https://registry-1.docker.io", "prefix": "hub", "nodeHost": "docker.io", **extra}


def test_the_api_refuses_an_upstream_with_a_path(kube_client: lightkube.Client, namespace: str) -> None:
    with pytest.raises(lightkube.ApiError) as caught:
        cluster.create_registry(
            kube_client,
            namespace=namespace,
            name="badmirror",
            spec={"mirrors": [_mirror(upstream="https://registry-1.docker.io/v2")]},
        )
    assert caught.value.status.code == 422
    assert "upstream" in (caught.value.status.message or "")


def test_a_registry_with_a_mirror_gets_the_file_and_the_secret_keys_mounted(
    kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    kube_client.create(
        core.Secret(
            metadata=lightkube.models.meta_v1.ObjectMeta(name="hub-login", namespace=namespace),
            stringData={"username": "mirror-user", "password": UPSTREAM_PASSWORD},
        )
    )
    spec = {"mirrors": [_mirror(credentialsSecretRef={"name": "hub-login"}, ttl="10m")]}
    registry = cluster.create_registry(kube_client, namespace=namespace, name="mirrored", spec=spec)
    n = names.Names.of("mirrored")

    configmap = cluster.wait_child(kube_client, core.ConfigMap, "mirrored-mirrors", namespace)
    assert cluster.owned_by(configmap, registry)
    doc = json.loads(configmap.data["mirrors.yaml"])
    assert doc == {
        "mirrors": [
            {
                "prefix": "hub",
                "upstream": "https://registry-1.docker.io",
                "tagTTL": 600.0,
                "usernameFile": "/etc/dockyard/mirrors/mirror-0/username",
                "passwordFile": "/etc/dockyard/mirrors/mirror-0/password",
                "anonymousPull": False,  # with credentials: closed unless the spec opens it
            }
        ]
    }

    deployment = cluster.wait_child(kube_client, apps.Deployment, n.deployment, namespace)
    pod = deployment.spec.template.spec
    (registry_container,) = [c for c in pod.containers if c.name == "registry"]
    args = list(registry_container.args or [])
    assert args[args.index("--mirrors") + 1] == "/etc/dockyard/mirrors/mirrors.yaml"
    mount = {m.name: m for m in registry_container.volumeMounts}["mirrors"]
    assert (mount.mountPath, mount.readOnly) == ("/etc/dockyard/mirrors", True)
    volume = {v.name: v for v in pod.volumes}["mirrors"]
    secrets = [s.secret for s in volume.projected.sources if s.secret is not None]
    assert [(s.name, [(i.key, i.path) for i in s.items]) for s in secrets] == [
        ("hub-login", [("username", "mirror-0/username"), ("password", "mirror-0/password")])
    ]

    written = json.dumps([configmap.to_dict(), deployment.to_dict()])
    assert UPSTREAM_PASSWORD not in written
