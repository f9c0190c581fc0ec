"""The chart with `watchNamespaces`: the operator's rules hold only inside the listed namespaces.

Covers: `helm install --set watchNamespaces={...}` succeeds; the ServiceAccount (asked with its own token)
may read Secrets and write children in a watched namespace but not in any other, nor cluster-wide; the
operator started from the chart's Deployment under that token starts, joins the KopfPeering the chart put
into the watched namespace, and no request it makes is refused by RBAC.

It never creates a PrivateRegistry: the package's all-namespaces operator is running too and would
reconcile it as well.
"""

from __future__ import annotations

import collections.abc
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.install import chart, conftest
from tests.support import kube

pytestmark = pytest.mark.integration

RELEASE = "scoped"


@pytest.fixture
def scoped(control_plane: kube.ControlPlane, namespace: str) -> collections.abc.Iterator[dict[str, Any]]:
    """The chart installed watching only `namespace`; yields names and the ServiceAccount kubeconfig."""
    home = f"dockyard-scoped-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", home)
    config = f"--kubeconfig={control_plane.kubeconfig}"
    values = f"watchNamespaces={{{namespace}}}"
    chart.helm("install", RELEASE, str(chart.CHART), "-n", home, "--set", values, config, timeout=180)
    try:
        docs = chart.render(release=RELEASE, namespace=home, set_values=[values])
        account = chart.only(chart.operator_objects(docs), "ServiceAccount")["metadata"]["name"]
        token = control_plane.service_account_kubeconfig(namespace=home, name=account)
        yield {"home": home, "docs": docs, "account": account, "kubeconfig": token}
    finally:
        chart.helm("uninstall", RELEASE, "--namespace", home, config, "--wait", check=False)
        control_plane.kubectl("delete", "namespace", home, "--wait=false", check=False)


def can_i(plane: kube.ControlPlane, kubeconfig: Path, *args: str) -> bool:
    done = plane.kubectl("auth", "can-i", *args, kubeconfig=kubeconfig, check=False)
    return done.stdout.strip() == "yes"


def test_the_service_account_may_act_only_inside_the_watched_namespace(
    control_plane: kube.ControlPlane, namespace: str, scoped: dict[str, Any]
) -> None:
    token = scoped["kubeconfig"]
    needs = [("watch", "secrets"), ("create", "deployments.apps"), ("patch", "privateregistries")]
    for verb, resource in needs:
        what = f"{verb} {resource}"
        assert can_i(control_plane, token, verb, resource, "-n", namespace), f"{what} in {namespace}"
        assert not can_i(control_plane, token, verb, resource, "-n", "default"), f"{what} in default"
        assert not can_i(control_plane, token, verb, resource, "--all-namespaces"), f"{what} everywhere"
    assert can_i(control_plane, token, "patch", f"kopfpeerings.kopf.dev/{RELEASE}-dockyard", "-n", namespace)
    assert not can_i(control_plane, token, "patch", "clusterkopfpeerings.kopf.dev/any")


def test_the_operator_starts_under_the_scoped_rules_and_keeps_its_namespaced_peering_alive(
    control_plane: kube.ControlPlane, namespace: str, scoped: dict[str, Any], tmp_path: Path
) -> None:
    operator = conftest.ChartOperator(
        plane=control_plane,
        log=tmp_path / "operator.log",
        docs=scoped["docs"],
        kubeconfig=scoped["kubeconfig"],
    )
    argv, _ = conftest.deployment_command(scoped["docs"], health_port=0)
    assert f"--namespace={namespace}" in argv and "--all-namespaces" not in argv
    operator.start()
    try:

        def keepalive() -> dict[str, Any]:
            peering = yaml.safe_load(
                control_plane.kubectl(
                    "get", "kopfpeering", f"{RELEASE}-dockyard", "-n", namespace, "-o", "yaml"
                ).stdout
            )
            return dict(peering["status"][conftest.POD_ID])

        kube.eventually(keepalive, what="the keep-alive in the namespaced peering object")
    finally:
        code = operator.stop()
    assert code == 0, operator.output()[-5000:]
    username = f"system:serviceaccount:{scoped['home']}:{scoped['account']}"
    assert conftest.forbidden_requests(control_plane, username) == [], operator.output()[-5000:]
