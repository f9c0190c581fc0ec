"""The namespace-scoped install (`watchNamespaces`) reconciles a registry with Roles only.

Covers, with no other operator running (this package sorts after tests/integration/install, whose
all-namespaces operator stops with that package, and refuses to run once the scenarios' admin operator
started): the chart installed with `watchNamespaces={<ns>}` grants no ClusterRole; the operator started from
the chart's Deployment under its ServiceAccount token reconciles a PrivateRegistry in the watched namespace
(certificate, Deployment, the pull secret in its own namespace, its CA published by node trust in the
release namespace); a registry in a namespace it does not watch is left alone; and the API server's audit
log shows not one of its requests refused by RBAC. The install's admission policy binds the watched namespace
and follows its `nodeTrust.allowedHosts`: a tenant may name `docker.io` there because the installer allowed it
by name, but not `ghcr.io`.
"""

from __future__ import annotations

import collections.abc
import json
import secrets
import subprocess
from pathlib import Path
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
RELEASE = "scoped-reconcile"


def admin_operator_started_earlier(session: pytest.Session) -> bool:
    """Whether a test collected before this package used the scenarios' session-wide admin operator."""
    here = Path(__file__).parent
    for item in session.items:
        if here in Path(item.path).parents:
            return False
        if "operator_session" in getattr(item, "fixturenames", ()):
            return True
    return False


@pytest.fixture
def scoped(
    request: pytest.FixtureRequest, control_plane: kube.ControlPlane, namespace: str, tmp_path: Path
) -> collections.abc.Iterator[dict[str, Any]]:
    """The chart installed watching only `namespace`, and its operator running under the chart's token."""
    if admin_operator_started_earlier(request.session):
        pytest.fail("the scenarios' admin operator is running: it would reconcile the registry as well")
    home = f"dockyard-scoped-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", home)
    config = f"--kubeconfig={control_plane.kubeconfig}"
    values = [f"watchNamespaces={{{namespace}}}", "nodeTrust.allowedHosts={docker.io}"]
    flags = [arg for value in values for arg in ("--set", value)]
    chart.helm("install", RELEASE, str(chart.CHART), "-n", home, *flags, config, timeout=180)
    try:
        docs = chart.render(release=RELEASE, namespace=home, set_values=values)
        account = chart.only(chart.operator_objects(docs), "ServiceAccount")["metadata"]["name"]
        token = control_plane.service_account_kubeconfig(namespace=home, name=account)
        operator = conftest.ChartOperator(
            plane=control_plane, log=tmp_path / "operator.log", docs=docs, kubeconfig=token
        )
        operator.start()
        try:
            yield {"home": home, "docs": docs, "operator": operator}
        finally:
            code = operator.stop()
            assert code == 0, operator.output()[-5000:]
            username = f"system:serviceaccount:{home}:{account}"
            refused = conftest.forbidden_requests(control_plane, username)
            assert refused == [], f"RBAC refused the scoped operator: {refused}\n{operator.output()[-5000:]}"
    finally:
        chart.helm("uninstall", RELEASE, "--namespace", home, config, "--wait", check=False)
        control_plane.kubectl("delete", "namespace", home, "--wait=false", check=False)


@pytest.fixture
def unwatched(kube_client: lightkube.Client, namespace: str) -> collections.abc.Iterator[str]:
    name = f"{namespace}-other"
    kube_client.create(core.Namespace(metadata=lightkube.models.meta_v1.ObjectMeta(name=name)))
    yield name
    kube_client.delete(core.Namespace, name)


def test_the_scoped_install_reconciles_a_registry_in_its_namespace_with_roles_only(
    kube_client: lightkube.Client, namespace: str, unwatched: str, scoped: dict[str, Any]
) -> None:
    docs = scoped["docs"]
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    spec = {
        "storage": {"emptyDir": {}},
        "auth": {"users": [cluster.user("puller", "puller-password")]},
        "pullSecrets": {"user": "puller", "namespaces": [namespace]},
    }
    cluster.create_registry(
        kube_client, namespace=namespace, spec=spec, passwords={"puller": "puller-Scoped-pw-1"}
    )
    cluster.create_registry(kube_client, namespace=unwatched, spec={"storage": {"emptyDir": {}}})

    cluster.wait_condition(kube_client, "demo", namespace, "CertificateReady", "True", timeout=90)
    cluster.wait_child(kube_client, apps.Deployment, names.Names.of("demo").deployment, namespace)
    cluster.wait_child(kube_client, core.Secret, "demo-pull", namespace)
    tls: Any = cluster.wait_child(kube_client, core.Secret, names.Names.of("demo").tls_secret, namespace)
    ca = cluster.secret_data(tls)["ca.crt"].decode().strip()

    def published() -> bool:
        configmap = kube_client.get(core.ConfigMap, builders.NAME, namespace=scoped["home"])
        return any(ca in value for value in (configmap.data or {}).values())

    kube.eventually(published, what="the registry's CA in the node-trust ConfigMap of the release namespace")
    registry = kube_client.get(cluster.PrivateRegistry, "demo", namespace=namespace)
    trust = cluster.condition(registry, "NodeTrustReady")
    assert trust is not None and trust["reason"] != "PublishFailed", trust
    degraded = cluster.condition(registry, "Degraded")
    assert degraded is not None and degraded["status"] == "False", degraded

    other = kube_client.get(cluster.PrivateRegistry, "demo", namespace=unwatched)
    assert not (other.get("status") or {}).get("conditions"), "a registry outside the watched namespace"
    assert cluster.absent(kube_client, apps.Deployment, names.Names.of("demo").deployment, unwatched)


def test_the_scoped_policy_lets_a_tenant_name_only_the_public_hosts_the_installer_allowed(
    control_plane: kube.ControlPlane, namespace: str, scoped: dict[str, Any]
) -> None:
    control_plane.kubectl("create", "serviceaccount", "tenant", "-n", namespace)
    control_plane.kubectl(
        "create", "role", "registry-owner", "-n", namespace, "--verb=create",
        "--resource=privateregistries.dockyard.dev",
    )  # fmt: skip
    control_plane.kubectl(
        "create", "rolebinding", "registry-owner", "-n", namespace, "--role=registry-owner",
        f"--serviceaccount={namespace}:tenant",
    )  # fmt: skip
    tenant = control_plane.service_account_kubeconfig(namespace=namespace, name="tenant")

    def create(host: str) -> subprocess.CompletedProcess[str]:
        manifest = json.dumps(
            {"apiVersion": "dockyard.dev/v1alpha1", "kind": "PrivateRegistry",
             "metadata": {"name": "mirror", "namespace": namespace},
             "spec": {"nodeTrust": {"hostnames": [host]}}}
        )  # fmt: skip
        return control_plane.kubectl(
            "create", "--dry-run=server", "-f", "-", input=manifest, kubeconfig=tenant, check=False
        )

    def refused() -> str:
        done = create("ghcr.io")
        assert done.returncode != 0, "ghcr.io accepted"
        return done.stderr

    message = kube.eventually(refused, what="the scoped admission policy to refuse ghcr.io")
    assert "spec.nodeTrust.hostnames: ghcr.io is a public registry" in message, message
    allowed = create("docker.io")
    assert allowed.returncode == 0, allowed.stderr
