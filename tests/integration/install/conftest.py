"""The chart installed into the session's control plane, and the operator running under its ServiceAccount.

`charted_operator` (package scope) does what a user's cluster does with the chart, minus the kubelet:
`helm install` (no --wait: no Pod ever runs), then a TokenRequest token for the chart's ServiceAccount, then
the operator process started with exactly the arguments and environment of the chart's Deployment (only the
health port moves to a reserved loopback port) and that token as its only credential: not admin. It is exposed
to tests as the `operator` fixture, so the operator integration scenarios imported by test_rbac_*.py run
unchanged under the chart's RBAC.

Teardown fails the package when the operator died, exited non-zero, or the audit log shows a single request
of the ServiceAccount that was forbidden.

Ordering: tests/integration/operator starts its own admin operator once per session. The two must never
run at once, or both would reconcile the same registries: when the admin operator is running, this
package's fixture stops it for the package and starts it again afterwards, whichever directory runs first.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import secrets
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.install import chart
from tests.integration.operator import conftest as operator_conftest
from tests.integration.operator.conftest import Operator
from tests.support import kube, procs

OPERATOR_START_TIMEOUT = 90.0
# What the Pod's downward API would give as POD_ID: kopf's identity in the peering object.
POD_ID = "dockyard-operator-test-pod"


class ChartOperator(Operator):
    """The operator scenarios' `Operator`, started the way the chart's Deployment starts it.

    Same log file, health check and stop as the admin one; `start()` runs the chart container's command and
    arguments instead (health port moved to a reserved loopback port), and the only credential is a kubeconfig
    holding a token of the chart's ServiceAccount.
    """

    def __init__(
        self,
        *,
        plane: kube.ControlPlane,
        log: Path,
        docs: list[dict[str, Any]],
        kubeconfig: Path,
        username: str = "",
        pod_id: str = POD_ID,
    ) -> None:
        super().__init__(plane=plane, log=log, kubeconfig=kubeconfig, username=username)
        self.docs = docs
        self.pod_id = pod_id

    def start(self, *, entrypoint: bool = False) -> None:
        """Start as the chart does (`entrypoint` is ignored: the chart's command is the entry point)."""
        assert self.process is None or not self.process.alive(), "the operator is already running"
        port = procs.reserve_port()
        self.liveness = f"http://127.0.0.1:{port.number}/healthz"
        metrics_port = procs.reserve_port()
        self.metrics = f"http://127.0.0.1:{metrics_port.number}/metrics"
        argv, env = deployment_command(self.docs, health_port=port.number, metrics_port=metrics_port.number)
        env = {**self.env, **env, "POD_ID": self.pod_id}
        self.home = env["DOCKYARD_NAMESPACE"]
        with self.log.open("a") as out:
            out.write(f"--- start (chart RBAC): {' '.join(argv)}\n")
        process = self.process = procs.Process(
            name="dockyard-operator (chart)", argv=argv, log=self.log, env=env, ports=[port, metrics_port]
        )

        def up() -> bool:
            process.check_alive()
            return self.healthy()

        try:
            kube.eventually(
                up, timeout=OPERATOR_START_TIMEOUT, interval=0.5, what="the operator's liveness probe"
            )
        except BaseException:
            process.stop()
            raise


@dataclasses.dataclass
class ChartedOperator:
    """The operator started from the chart's Deployment, with its release and identity."""

    operator: ChartOperator
    release: str
    namespace: str
    service_account: str
    kubeconfig: Path
    docs: list[dict[str, Any]]

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


def deployment_command(
    docs: list[dict[str, Any]], *, health_port: int, metrics_port: int | None = None
) -> tuple[list[str], dict[str, str]]:
    """argv and environment of the chart's operator container, as they would run in the Pod.

    `python` is this virtualenv's interpreter, where the image has its own; values the Pod takes from the
    downward API (POD_ID, the namespace) are filled in here. The health and metrics ports become the given
    loopback ports: on this shared machine the chart's fixed ports may be taken.
    """
    (container,) = chart.only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    args = [
        f"--liveness=http://127.0.0.1:{health_port}/healthz" if arg.startswith("--liveness=") else arg
        for arg in container["args"]
    ]
    env = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        elif item["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name":
            env[item["name"]] = POD_ID
        elif item["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace":
            env[item["name"]] = chart.only(docs, "Deployment")["metadata"]["namespace"]
    if "DOCKYARD_METRICS_LISTEN" in env and metrics_port is not None:
        env["DOCKYARD_METRICS_LISTEN"] = f"127.0.0.1:{metrics_port}"
    command = list(container["command"])
    assert command[0] == "python", f"the chart's command is not a python invocation: {command}"
    return [sys.executable, *command[1:], *args], env


def forbidden_requests(plane: kube.ControlPlane, username: str) -> list[str]:
    """`verb resource[/subresource] name` of every request by `username` that RBAC refused.

    Only the authorizer's verdict counts: a 403 from admission (e.g. writing into a namespace that is
    being deleted, which the scenarios do on purpose) is not about the chart's rules.
    """
    refused = []
    for event in plane.audit_events():
        if event.get("user", {}).get("username") != username:
            continue
        if (event.get("annotations") or {}).get("authorization.k8s.io/decision") != "forbid":
            continue
        ref = event.get("objectRef", {})
        resource = "/".join(filter(None, [ref.get("resource"), ref.get("subresource")]))
        refused.append(f"{event.get('verb')} {resource} {ref.get('name', '')}".strip())
    return refused


@pytest.fixture(scope="package")
def charted_operator(
    request: pytest.FixtureRequest, control_plane: kube.ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> collections.abc.Iterator[ChartedOperator]:
    with operator_conftest.admin_operator_stopped(request.session):
        yield from _charted_operator(control_plane, tmp_path_factory)


def _charted_operator(
    control_plane: kube.ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> collections.abc.Iterator[ChartedOperator]:
    namespace = f"dockyard-rbac-{secrets.token_hex(3)}"
    release = "rbac-proof"
    control_plane.kubectl("create", "namespace", namespace)
    kubeconfig_flag = f"--kubeconfig={control_plane.kubeconfig}"
    chart.helm("install", release, str(chart.CHART), "--namespace", namespace, kubeconfig_flag, timeout=180)
    try:
        docs = chart.render(release=release, namespace=namespace)
        account = chart.only(chart.operator_objects(docs), "ServiceAccount")["metadata"]["name"]
        token_config = control_plane.service_account_kubeconfig(namespace=namespace, name=account)
        log = tmp_path_factory.mktemp("charted-operator") / "operator.log"
        operator = ChartOperator(
            plane=control_plane,
            log=log,
            docs=docs,
            kubeconfig=token_config,
            username=f"system:serviceaccount:{namespace}:{account}",
        )
        operator.start()
        charted = ChartedOperator(
            operator=operator,
            release=release,
            namespace=namespace,
            service_account=account,
            kubeconfig=token_config,
            docs=docs,
        )
        try:
            yield charted
        finally:
            assert operator.process is not None
            alive_at_end = operator.process.alive()
            code = operator.stop()
            assert alive_at_end, f"the operator died:\n{procs.tail(log, lines=80)}"
            assert code == 0, f"the operator exited {code} on SIGTERM:\n{procs.tail(log, lines=80)}"
            refused = forbidden_requests(control_plane, charted.username)
            assert not refused, f"the chart's RBAC refused the operator: {sorted(set(refused))}"
    finally:
        chart.helm("uninstall", release, "--namespace", namespace, kubeconfig_flag, "--wait", check=False)
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture
def operator(charted_operator: ChartedOperator) -> Operator:
    """The operator under the chart's ServiceAccount, in the shape the operator scenarios expect."""
    charted_operator.operator.check_alive()
    return charted_operator.operator


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> collections.abc.Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    charted = item.funcargs.get("charted_operator") if hasattr(item, "funcargs") else None
    if report.failed and isinstance(charted, ChartedOperator):
        report.sections.append(("operator log (chart RBAC)", charted.operator.output()[-30000:]))
    return report
