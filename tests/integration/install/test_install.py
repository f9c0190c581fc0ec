"""The chart and the plain manifests against a real kube-apiserver, and what the chart's identity may do.

Covers: `helm install` of the chart succeeds (no --wait: there is no kubelet) and creates the operator's
Deployment, ServiceAccount, RBAC and peering object, and its NOTES tell the user the next command;
`helm uninstall` removes the cluster-scoped objects again; deploy/crds.yaml applies and
`kubectl apply --dry-run=server -f deploy/install.yaml` is accepted; every example is accepted by the
API server's CRD schema; the chart's ServiceAccount (asked through its own TokenRequest token) may do
what the operator needs and nothing an admin could (nodes, cluster RBAC, namespaces, deleting Services,
claims, Deployments, DaemonSets or Pods anywhere, other peering objects), and may run node trust's
DaemonSet and read its agents' Pods only in its own namespace; the running operator keeps its keep-alive in
the chart's peering object; the audit check the operator fixture's teardown relies on sees RBAC denials and
ignores admission refusals.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest
import yaml

from tests.integration.install import chart, conftest
from tests.integration.install.conftest import ChartedOperator
from tests.support import kube

pytestmark = pytest.mark.integration


def test_helm_install_creates_the_operator_and_its_notes_say_what_to_do_next(
    control_plane: kube.ControlPlane, namespace: str
) -> None:
    release = f"t{secrets.token_hex(3)}"
    config = f"--kubeconfig={control_plane.kubeconfig}"
    done = chart.helm("install", release, str(chart.CHART), "--namespace", namespace, config, timeout=180)
    try:
        assert "STATUS: deployed" in done.stdout
        assert "kubectl apply -f" in done.stdout and "kubectl get preg" in done.stdout, done.stdout
        assert f"rollout status deployment/{release}-dockyard" in done.stdout

        def get(*args: str) -> dict[str, Any]:
            return dict(yaml.safe_load(control_plane.kubectl("get", *args, "-o", "yaml").stdout))

        deployment = get("deployment", f"{release}-dockyard", "-n", namespace)
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == f"{release}-dockyard"
        get("serviceaccount", f"{release}-dockyard", "-n", namespace)
        get("clusterrole", f"{release}-dockyard")
        get("clusterrolebinding", f"{release}-dockyard-kopf")
        get("clusterkopfpeering", f"{release}-dockyard")
        # KCM's controllers take it from there: a ReplicaSet and a (forever Pending) Pod.
        kube.eventually(
            lambda: control_plane.kubectl(
                "get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}", "-o", "name"
            ).stdout.strip(),
            what="the operator Pod",
        )
    finally:
        chart.helm("uninstall", release, "--namespace", namespace, config, "--wait", check=False)
    gone = control_plane.kubectl("get", "clusterrole", f"{release}-dockyard", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


def test_plain_manifests_are_accepted_by_the_api_server(control_plane: kube.ControlPlane) -> None:
    control_plane.apply_crd(chart.DEPLOY / "crds.yaml")
    # A server-side dry run creates nothing, so the namespace the objects live in must exist for real.
    created = control_plane.kubectl("create", "namespace", "dockyard-system", check=False)
    try:
        done = control_plane.kubectl("apply", "--dry-run=server", "-f", str(chart.DEPLOY / "install.yaml"))
        kinds = {line.split("/")[0] for line in done.stdout.splitlines()}
        assert {
            "serviceaccount",
            "clusterrole.rbac.authorization.k8s.io",
            "clusterrolebinding.rbac.authorization.k8s.io",
            "deployment.apps",
            "clusterkopfpeering.kopf.dev",
        } <= kinds, done.stdout
    finally:
        if created.returncode == 0:
            control_plane.kubectl("delete", "namespace", "dockyard-system", "--wait=false")


@pytest.mark.parametrize("example", sorted(p.name for p in chart.EXAMPLES.glob("*.yaml")))
def test_every_example_is_accepted_by_the_api_server(
    control_plane: kube.ControlPlane, namespace: str, example: str
) -> None:
    done = control_plane.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", str(chart.EXAMPLES / example)
    )
    assert "privateregistry.dockyard.dev/" in done.stdout


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("watch", "privateregistries.dockyard.dev", True),
        ("patch", "privateregistries.dockyard.dev/status", True),
        ("create", "secrets", True),
        ("patch", "deployments.apps", True),  # children are written by server-side apply
        ("update", "deployments.apps", False),
        ("create", "events", True),
        ("delete", "services", False),
        ("delete", "persistentvolumeclaims", False),
        ("create", "namespaces", False),
        ("delete", "deployments.apps", False),
        ("create", "daemonsets.apps", False),
        ("list", "pods", True),  # the registry's Pods, for their /status (read only)
        ("get", "pods", False),  # only the node trust agents' Pods, in the release namespace
        ("delete", "privateregistries.dockyard.dev", False),
        ("get", "nodes", False),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", False),
        ("create", "pods", False),
        ("create", "customresourcedefinitions.apiextensions.k8s.io", False),
        ("patch", "clusterkopfpeerings.kopf.dev/someone-else", False),
    ],
)
def test_the_charts_service_account_may_do_what_the_operator_needs_and_nothing_an_admin_could(
    control_plane: kube.ControlPlane,
    charted_operator: ChartedOperator,
    verb: str,
    resource: str,
    allowed: bool,
) -> None:
    # Asked with the ServiceAccount's own token, so its real groups and bindings apply.
    done = control_plane.kubectl(
        "auth",
        "can-i",
        verb,
        resource,
        "--all-namespaces",
        kubeconfig=charted_operator.kubeconfig,
        check=False,
    )
    assert done.stdout.strip() == ("yes" if allowed else "no"), done.stdout + done.stderr


def test_the_operator_keeps_its_keep_alive_in_the_charts_peering_object(
    control_plane: kube.ControlPlane, charted_operator: ChartedOperator
) -> None:
    def keepalive() -> dict[str, Any]:
        peering = yaml.safe_load(
            control_plane.kubectl(
                "get", "clusterkopfpeering", f"{charted_operator.release}-dockyard", "-o", "yaml"
            ).stdout
        )
        return dict(peering["status"]["dockyard-operator-test-pod"])

    entry = kube.eventually(keepalive, what="the operator's keep-alive in the peering object")
    assert entry["priority"] == 0


def test_the_audit_check_of_the_operator_teardown_sees_an_rbac_denial_but_not_an_admission_refusal(
    control_plane: kube.ControlPlane, namespace: str
) -> None:
    # The package teardown fails on any request of the chart's ServiceAccount RBAC refused: prove that
    # check can fire, with another ServiceAccount so the operator's own record stays clean.
    control_plane.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    config = control_plane.service_account_kubeconfig(namespace=namespace, name="nobody")
    denied = control_plane.kubectl("get", "nodes", kubeconfig=config, check=False)
    assert denied.returncode != 0 and "Forbidden" in denied.stderr
    username = f"system:serviceaccount:{namespace}:nobody"
    kube.eventually(
        lambda: "list nodes" in conftest.forbidden_requests(control_plane, username),
        what="the denial in the audit log",
    )
    # Admin writes into a terminating namespace are refused by admission (403), not by RBAC.
    control_plane.kubectl("delete", "namespace", namespace, "--wait=false")
    control_plane.kubectl("create", "configmap", "late", "-n", namespace, check=False)
    assert conftest.forbidden_requests(control_plane, "admin") == []


def test_node_trusts_daemonset_and_agent_pods_are_the_operators_business_only_at_home(
    control_plane: kube.ControlPlane, charted_operator: ChartedOperator
) -> None:
    home = charted_operator.namespace
    for verb, resource in (("create", "daemonsets.apps"), ("patch", "daemonsets.apps"), ("get", "pods")):
        for where, allowed in ((home, "yes"), ("default", "no")):
            ask = ("auth", "can-i", verb, resource, "-n", where)
            done = control_plane.kubectl(*ask, kubeconfig=charted_operator.kubeconfig, check=False)
            assert done.stdout.strip() == allowed, f"{verb} {resource} in {where}: {done.stdout}{done.stderr}"
