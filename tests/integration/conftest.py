"""Fixtures shared by the integration tests: one real control plane per session, a namespace per test.

The control plane (etcd, kube-apiserver, kube-controller-manager; see tests/support/kube.py)
starts once, lazily, for the first test that asks for it, with every CRD in `crds/` applied
before the controller manager starts. A missing binary fails the test with the command that
builds it; nothing is skipped.
"""

from __future__ import annotations

import collections.abc
import os
import re
import secrets
from pathlib import Path

import lightkube
import lightkube.models.meta_v1
import lightkube.resources.core_v1
import pytest

import tests.support
from tests.integration.operator import cluster
from tests.integration.operator.conftest import ADMIN_OPERATOR, Operator
from tests.support import kube, procs


@pytest.fixture(scope="session")
def control_plane() -> collections.abc.Iterator[kube.ControlPlane]:
    # DOCKYARD_TEST_CRDS points at another directory of CRDs, to try a schema change before
    # committing it; by default the tests use the committed files, which the chart ships.
    crd_dir = Path(os.environ.get("DOCKYARD_TEST_CRDS") or tests.support.ROOT / "crds")
    crds = sorted(crd_dir.glob("*.yaml"))
    with kube.ControlPlane(crds=crds) as plane:
        yield plane


@pytest.fixture(scope="session")
def kube_client(control_plane: kube.ControlPlane) -> collections.abc.Iterator[lightkube.Client]:
    """A client with the admin (system:masters) identity."""
    client = lightkube.Client(
        config=lightkube.KubeConfig.from_file(control_plane.kubeconfig), field_manager="dockyard-tests"
    )
    yield client
    client.close()


@pytest.fixture
def namespace(request: pytest.FixtureRequest, kube_client: lightkube.Client) -> collections.abc.Iterator[str]:
    """A fresh namespace named after the test; deleted afterwards (KCM finishes it in the background)."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{slug}-{secrets.token_hex(3)}"
    kube_client.create(
        lightkube.resources.core_v1.Namespace(metadata=lightkube.models.meta_v1.ObjectMeta(name=name))
    )
    yield name
    kube_client.delete(lightkube.resources.core_v1.Namespace, name)


# The operator fixtures live here, once: a session fixture defined (or imported) in two directories' conftests
# is two session fixtures, and a second admin operator would keep reconciling behind the tests' backs.
_LOG_OFFSET = pytest.StashKey[tuple[Operator, int]]()


@pytest.fixture(scope="session")
def crd_installed(control_plane: kube.ControlPlane) -> None:
    """The PrivateRegistry CRD, applied by the control plane fixture from `crds/`."""
    found = control_plane.kubectl("get", "crd", cluster.CRD_NAME, check=False)
    if found.returncode != 0:
        pytest.fail(
            f"CRD {cluster.CRD_NAME} is not installed: crds/{cluster.CRD_NAME}.yaml is missing "
            "or invalid (regenerate it with `make crds`)"
        )


@pytest.fixture(scope="session")
def operator_session(
    request: pytest.FixtureRequest,
    control_plane: kube.ControlPlane,
    crd_installed: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> collections.abc.Iterator[Operator]:
    operator = Operator(plane=control_plane, log=tmp_path_factory.mktemp("operator") / "operator.log")
    operator.start()
    request.session.stash[ADMIN_OPERATOR] = operator  # for fixtures that must stop it for a while
    yield operator
    assert operator.process is not None
    alive_at_end = operator.process.alive()
    code = operator.stop()
    assert alive_at_end, f"the operator died during the session:\n{procs.tail(operator.log, lines=80)}"
    assert code == 0, f"the operator exited {code} on SIGTERM:\n{procs.tail(operator.log, lines=80)}"


@pytest.fixture
def operator(request: pytest.FixtureRequest, operator_session: Operator) -> Operator:
    """The session's operator, checked alive; its log lines from this test go into a failure report."""
    operator_session.check_alive()
    request.node.stash[_LOG_OFFSET] = (operator_session, operator_session.offset())
    return operator_session


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> collections.abc.Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and _LOG_OFFSET in item.stash:
        operator, offset = item.stash[_LOG_OFFSET]
        # The HTTP client's wire-level debug lines drown kopf's and ours; the file keeps them all.
        lines = [line for line in operator.output(since=offset).splitlines() if "] httpcore" not in line]
        report.sections.append(("operator log (this test, last 200 lines)", "\n".join(lines[-200:])))
    return report
