"""spec.auth.serviceAccounts through the operator, against the real kube-apiserver and its issuer.

Covers: the operator renders `identities.yaml` and the ServiceAccount rules into the registry's auth
Secret, and a Deployment the API server accepts with `--identities` and the registry's projected token
volume; the rendered files, given to a real `dockyard-registry` (with only the in-cluster addresses a Pod
would see replaced by the test's: the API server URL, its CA, a token of the namespace's `default`
ServiceAccount under the chart's issuer-discovery binding), let a TokenRequest token for the default
audience `dockyard.dev/<ns>/<registry>` push and pull, and refuse one for the API server's audience; the
token flow is on (`--token-realm /token`, a `token.key` in the Secret, nginx's `/token` route in the
rendered ConfigMap) and skopeo follows its Bearer challenge with the ServiceAccount token.
Short-lived pull secrets (`tokenLifetime`): the copy carries a pull-only registry token for the user's
repositories with at least half its lifetime left, never the password; the registry, given the rendered
auth Secret (`token.key`), lets skopeo pull with it and refuses a push. A ServiceAccount rule with a
namespaceSelector gains the namespace once it is labelled (the next pass lists namespaces' labels).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import lightkube
import lightkube.resources.apps_v1
import lightkube.resources.core_v1
import pytest
import yaml

from dockyard_operator import names
from tests.integration.operator import cluster
from tests.integration.operator.conftest import Operator
from tests.integration.registry import harness, images
from tests.integration.registry.clients import skopeo_pull, skopeo_push
from tests.support import kube

pytestmark = pytest.mark.integration

core = lightkube.resources.core_v1
apps = lightkube.resources.apps_v1
N = names.Names.of("demo")


def test_rendered_identities_let_a_service_account_token_push_and_pull_through_a_real_registry(
    kube_client: lightkube.Client,
    control_plane: kube.ControlPlane,
    namespace: str,
    operator: Operator,
    tmp_path: Path,
) -> None:
    spec = {
        "auth": {
            "serviceAccounts": {
                "rules": [
                    {"namespace": namespace, "name": "builder", "access": "push", "repositories": ["apps/**"]}
                ]
            }
        }
    }
    cluster.create_registry(kube_client, namespace=namespace, spec=spec)
    deployment: Any = cluster.wait_child(kube_client, apps.Deployment, N.deployment, namespace)
    pod = deployment.spec.template.spec
    registry_container = next(c for c in pod.containers if c.name == "registry")
    assert "--identities" in registry_container.args
    realm = registry_container.args[registry_container.args.index("--token-realm") + 1]
    assert realm == "/token"
    assert any(v.name == "kube-identity" and v.projected is not None for v in pod.volumes)
    nginx_conf = kube_client.get(core.ConfigMap, N.nginx_configmap, namespace=namespace).data["nginx.conf"]
    assert "location = /token {" in nginx_conf

    data = cluster.secret_data(kube_client.get(core.Secret, N.htpasswd_secret, namespace=namespace))
    token_key = tmp_path / "token.key"
    token_key.write_bytes(data["token.key"])
    identities = yaml.safe_load(data["identities.yaml"])
    (k8s,) = identities["issuers"]
    assert k8s["audience"] == f"dockyard.dev/{namespace}/demo"

    # Where the Pod would find them in-cluster, the test's control plane has them here.
    cluster.issuer_discovery_binding(control_plane)
    control_plane.kubectl("create", "serviceaccount", "builder", "-n", namespace)
    own = tmp_path / "token"
    own.write_text(
        kube.eventually(
            lambda: control_plane.kubectl("create", "token", "default", "-n", namespace).stdout.strip(),
            what="the default ServiceAccount",
        )
    )
    k8s.update(
        {
            "apiServer": control_plane.server,
            "caFile": str(control_plane.pki / "ca.crt"),
            "tokenFile": str(own),
        }
    )
    identities_file = tmp_path / "identities.yaml"
    identities_file.write_text(yaml.safe_dump(identities))
    access = data["access.yaml"].decode()
    builder = harness.Credentials(
        "builder",
        control_plane.kubectl(
            "create", "token", "builder", "-n", namespace, f"--audience={k8s['audience']}"
        ).stdout.strip(),
    )
    flow = ["--token-realm", realm, "--token-key", str(token_key), "--access-log"]
    with harness.running_registry(
        tmp=tmp_path, access_yaml=access, extra_args=["--identities", str(identities_file), *flow]
    ) as reg:
        cert_dir = harness.ca_dir(ca_file=reg.ca, into=tmp_path / "certs")
        ref = f"{reg.address}/apps/tool:v1"
        img = images.random_image(label="operator-sa", layer_count=1, layer_size=16 * 1024)
        skopeo_push(img=img, ref=ref, tmp=tmp_path, cert_dir=cert_dir, creds=builder)
        assert (
            skopeo_pull(ref=ref, into=tmp_path / "pulled", cert_dir=cert_dir, creds=builder).manifest_digest
            == img.digest
        )
        assert "GET /token?" in reg.log(), "skopeo did not follow the Bearer challenge"
        api_token = control_plane.kubectl("create", "token", "builder", "-n", namespace).stdout.strip()
        refused = reg.client(harness.Credentials("builder", api_token)).request(
            "GET", "/v2/apps/tool/tags/list"
        )
        assert refused.status == 401, refused.describe()
        assert b"audience" in refused.body


def test_short_lived_pull_secrets_carry_a_pull_only_token_the_registry_accepts_not_the_password(
    kube_client: lightkube.Client, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    password = harness.new_password()
    spec = {
        "auth": {
            "users": [cluster.user("puller", "puller-password", access="push", repositories=["apps/**"])]
        },
        "pullSecrets": {"user": "puller", "namespaces": [namespace], "tokenLifetime": "24h"},
    }
    cluster.create_registry(kube_client, namespace=namespace, spec=spec, passwords={"puller": password})
    copy = cluster.wait_child(kube_client, core.Secret, "demo-pull", namespace)
    config = json.loads(cluster.secret_data(copy)[".dockerconfigjson"])
    (entry,) = {json.dumps(v, sort_keys=True) for v in config["auths"].values()}
    token = json.loads(entry)["password"]
    assert password not in json.dumps(config)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["access"] == [{"type": "repository", "name": "apps/**", "actions": ["pull"]}]
    assert claims["exp"] - claims["iat"] == 24 * 3600
    assert claims["exp"] > time.time() + 12 * 3600  # at least half its lifetime left when written

    data = cluster.secret_data(kube_client.get(core.Secret, N.htpasswd_secret, namespace=namespace))
    deployment: Any = cluster.wait_child(kube_client, apps.Deployment, N.deployment, namespace)
    registry_args = next(c for c in deployment.spec.template.spec.containers if c.name == "registry").args
    assert "--token-key" in registry_args

    # The rendered auth files in a real registry (realm = the registry's name, as the Deployment runs it).
    auth_dir = tmp_path / "data" / "auth"
    auth_dir.mkdir(parents=True)
    for name in ("htpasswd", "token.key"):
        (auth_dir / name).write_bytes(data[name])
    with harness.running_registry(
        tmp=tmp_path,
        access_yaml=data["access.yaml"].decode(),
        extra_args=["--token-key", str(auth_dir / "token.key"), "--realm", "demo"],
    ) as reg:
        owner = harness.Credentials("puller", password)
        cert_dir = harness.ca_dir(ca_file=reg.ca, into=tmp_path / "certs")
        ref = f"{reg.address}/apps/base:v1"
        img = images.random_image(label="short-lived-pull", layer_count=1, layer_size=16 * 1024)
        skopeo_push(img=img, ref=ref, tmp=tmp_path, cert_dir=cert_dir, creds=owner)
        from_secret = harness.Credentials("puller", token)
        pulled = skopeo_pull(ref=ref, into=tmp_path / "pulled", cert_dir=cert_dir, creds=from_secret)
        assert pulled.manifest_digest == img.digest
        push = reg.client(from_secret).request("POST", "/v2/apps/base/blobs/uploads/")
        assert push.status == 403, push.describe()


def test_a_namespace_selector_rule_follows_namespace_labels(
    kube_client: lightkube.Client, control_plane: kube.ControlPlane, namespace: str, operator: Operator
) -> None:
    label = f"builders-{namespace}"[:63]
    spec = {
        "auth": {"serviceAccounts": {"rules": [{"namespaceSelector": {"dockyard-test/builders": label}}]}}
    }
    cluster.create_registry(kube_client, namespace=namespace, spec=spec)

    def rules() -> list[Any]:
        data = cluster.secret_data(kube_client.get(core.Secret, N.htpasswd_secret, namespace=namespace))
        return list(yaml.safe_load(data["access.yaml"]).get("serviceAccounts") or [])

    cluster.wait_child(kube_client, core.Secret, N.htpasswd_secret, namespace)
    assert rules() == []
    control_plane.kubectl("label", "namespace", namespace, f"dockyard-test/builders={label}")
    found = kube.eventually(lambda: rules() or None, what="a rule for the labelled namespace")
    assert [(r["namespace"], r["name"], r["access"]) for r in found] == [(namespace, "*", "pull")]
