"""The chart's ValidatingAdmissionPolicy, enforced by the real API server against a tenant's own identity.

Covers, with the chart installed by the package fixture (default values) and a tenant ServiceAccount whose
only rights are a Role over PrivateRegistries in its own namespace:
- a spec with an ingress `*-snippet` annotation is refused at admission, the message naming the key;
- an ingress annotation the chart's allowlist does not name is refused, the message naming it;
- `docker.io` (and `*.azurecr.io` names) in spec.nodeTrust.hostnames is refused, the message naming it;
- a clean spec (allowed annotations, a host the registry serves) is accepted and the operator reconciles it;
- an update that adds a snippet annotation to an accepted registry is refused too;
- the chart's public host list is node trust's own (`claims.PUBLIC_HOSTS`), and its annotation allowlist is
  what the operator's container is told (one source: the chart values).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from dockyard_operator import tenancy
from dockyard_operator.nodetrust import claims
from tests.integration.install import chart
from tests.integration.install.conftest import ChartedOperator
from tests.support import kube

pytestmark = pytest.mark.integration

TENANT = "tenant"


@pytest.fixture
def tenant(control_plane: kube.ControlPlane, namespace: str) -> Path:
    """A kubeconfig of ServiceAccount `tenant` in `namespace`, may manage PrivateRegistries there only."""
    control_plane.kubectl("create", "serviceaccount", TENANT, "-n", namespace)
    control_plane.kubectl(
        "create", "role", "registry-owner", "-n", namespace,
        "--verb=get,list,watch,create,update,patch,delete", "--resource=privateregistries.dockyard.dev",
    )  # fmt: skip
    control_plane.kubectl(
        "create", "rolebinding", "registry-owner", "-n", namespace, "--role=registry-owner",
        f"--serviceaccount={namespace}:{TENANT}",
    )  # fmt: skip
    return control_plane.service_account_kubeconfig(namespace=namespace, name=TENANT)


def registry(name: str, namespace: str, spec: dict[str, Any]) -> str:
    return json.dumps(
        {"apiVersion": "dockyard.dev/v1alpha1", "kind": "PrivateRegistry",
         "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    )  # fmt: skip


def create(plane: kube.ControlPlane, kubeconfig: Path, manifest: str) -> tuple[bool, str]:
    done = plane.kubectl("create", "-f", "-", input=manifest, kubeconfig=kubeconfig, check=False)
    return done.returncode == 0, done.stderr


def ingress(annotations: dict[str, str]) -> dict[str, Any]:
    return {"expose": {"ingress": {"host": "registry.team.example", "annotations": annotations}}}


def test_the_tenant_may_create_registries_but_nothing_else(
    control_plane: kube.ControlPlane, namespace: str, tenant: Path, charted_operator: ChartedOperator
) -> None:
    def can_i(*args: str) -> bool:
        done = control_plane.kubectl("auth", "can-i", *args, kubeconfig=tenant, check=False)
        return done.stdout.strip() == "yes"

    assert can_i("create", "privateregistries.dockyard.dev", "-n", namespace)
    assert not can_i("create", "privateregistries.dockyard.dev", "-n", "default")
    assert not can_i("patch", "namespaces", namespace)


@pytest.mark.parametrize(
    "key",
    ["nginx.ingress.kubernetes.io/configuration-snippet", "nginx.ingress.kubernetes.io/server-snippet"],
)
def test_a_snippet_annotation_is_refused_at_admission(
    control_plane: kube.ControlPlane,
    namespace: str,
    tenant: Path,
    charted_operator: ChartedOperator,
    key: str,
) -> None:
    spec = ingress({key: "location /x { return 200; }", "cert-manager.io/cluster-issuer": "corp"})
    ok, err = create(control_plane, tenant, registry("snippet", namespace, spec))
    assert not ok
    assert "ValidatingAdmissionPolicy" in err and key in err and "snippet annotations" in err, err


def test_an_annotation_the_allowlist_does_not_name_is_refused_at_admission(
    control_plane: kube.ControlPlane, namespace: str, tenant: Path, charted_operator: ChartedOperator
) -> None:
    spec = ingress({"nginx.ingress.kubernetes.io/auth-url": "http://attacker.example/"})
    ok, err = create(control_plane, tenant, registry("authurl", namespace, spec))
    assert not ok
    assert "nginx.ingress.kubernetes.io/auth-url not allowed" in err, err


@pytest.mark.parametrize("host", ["docker.io", "DOCKER.IO:443", "corp.azurecr.io"])
def test_a_public_registry_host_in_node_trust_is_refused_at_admission(
    control_plane: kube.ControlPlane,
    namespace: str,
    tenant: Path,
    charted_operator: ChartedOperator,
    host: str,
) -> None:
    spec = {"nodeTrust": {"hostnames": ["registry.team.example", host.lower()]}}
    ok, err = create(control_plane, tenant, registry("hijack", namespace, spec))
    assert not ok
    assert f"spec.nodeTrust.hostnames: {host.lower().split(':')[0]} is a public registry" in err, err


def test_a_clean_spec_is_accepted_and_reconciled_but_a_later_snippet_is_refused(
    control_plane: kube.ControlPlane, namespace: str, tenant: Path, charted_operator: ChartedOperator
) -> None:
    spec = {
        **ingress(
            {
                "cert-manager.io/cluster-issuer": "corp",
                "nginx.ingress.kubernetes.io/proxy-read-timeout": "600",
            }
        ),
        "tls": {"dnsNames": ["registry.team.example"]},
        "nodeTrust": {"hostnames": ["registry.team.example"]},
    }
    ok, err = create(control_plane, tenant, registry("clean", namespace, spec))
    assert ok, err

    def annotations() -> dict[str, str]:
        done = control_plane.kubectl("get", "ingress", "clean", "-n", namespace, "-o", "yaml", check=False)
        assert done.returncode == 0, "no Ingress yet"
        return dict(yaml.safe_load(done.stdout)["metadata"]["annotations"])

    found = kube.eventually(annotations, what="the operator to create the registry's Ingress")
    assert found["cert-manager.io/cluster-issuer"] == "corp"
    assert found["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "600"

    patch = {
        "spec": {"expose": {"ingress": {"annotations": {"nginx.ingress.kubernetes.io/server-snippet": "x"}}}}
    }
    done = control_plane.kubectl(
        "patch", "privateregistry", "clean", "-n", namespace, "--type=merge", "-p", json.dumps(patch),
        kubeconfig=tenant, check=False,
    )  # fmt: skip
    assert done.returncode != 0 and "nginx.ingress.kubernetes.io/server-snippet" in done.stderr, done.stderr


def test_the_policy_lists_are_the_operators_own() -> None:
    docs = chart.render()
    policy = chart.only(docs, "ValidatingAdmissionPolicy")
    variables = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}
    assert tuple(json.loads(variables["publicHosts"])) == claims.PUBLIC_HOSTS
    assert tuple(json.loads(variables["allowedAnnotations"])) == tenancy.DEFAULT_INGRESS_ANNOTATIONS
    (container,) = chart.only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["DOCKYARD_INGRESS_ANNOTATIONS_ALLOWED"] == ",".join(tenancy.DEFAULT_INGRESS_ANNOTATIONS)
    binding = chart.only(docs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["validationActions"] == ["Deny"] and "matchResources" not in binding["spec"]


def test_the_policy_can_be_switched_off_and_is_scoped_with_watch_namespaces() -> None:
    off = chart.render(set_values=["tenancy.admissionPolicy.enabled=false"])
    assert not [d for d in off if d["kind"].startswith("ValidatingAdmissionPolicy")]
    scoped = chart.render(set_values=["watchNamespaces={team-a,team-b}"])
    selector = chart.only(scoped, "ValidatingAdmissionPolicyBinding")["spec"]["matchResources"]
    assert selector["namespaceSelector"]["matchExpressions"][0]["values"] == ["team-a", "team-b"]
