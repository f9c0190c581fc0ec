"""kopf peering as the chart sets it up: a second operator replica waits instead of double-reconciling.

Covers: a second operator started from the chart's Deployment (same ServiceAccount, same peering object,
another Pod identity) starts paused and makes the first pause too, as kopf does for equal priorities; a
registry created meanwhile is reconciled by neither; once the second one stops (removing itself from the
peering object), the first resumes and reconciles the registry, and the second never touched it.
"""

from __future__ import annotations

from pathlib import Path

import lightkube
import lightkube.resources.apps_v1
import pytest

from dockyard_operator import names
from tests.integration.install import conftest
from tests.integration.operator import cluster
from tests.integration.operator.conftest import Operator
from tests.support import kube

pytestmark = pytest.mark.integration

PAUSED = "Pausing all operators, including self"
# A starting operator is paused until its first look at the peering object, so it only says this:
CONFLICT = "Possibly conflicting operators with the same priority"
RESUMED = "Resuming operations after the pause"


def logged(operator: Operator, phrase: str, *, since: int = 0) -> bool:
    """True once `phrase` is in the operator's log; otherwise fails with the log's tail (shown on timeout)."""
    text = operator.output(since=since)
    if phrase not in text:
        raise AssertionError(f"{phrase!r} not logged yet; log tail:\n{text[-3000:]}")
    return True


def test_a_second_replica_pauses_both_until_it_is_gone_and_never_reconciles(
    control_plane: kube.ControlPlane,
    kube_client: lightkube.Client,
    namespace: str,
    charted_operator: conftest.ChartedOperator,
    tmp_path: Path,
) -> None:
    first = charted_operator.operator
    since = first.offset()
    second = conftest.ChartOperator(
        plane=control_plane,
        log=tmp_path / "second.log",
        docs=charted_operator.docs,
        kubeconfig=charted_operator.kubeconfig,
        pod_id="dockyard-operator-second-pod",
    )
    second.start()
    try:
        kube.eventually(lambda: logged(second, CONFLICT), what="the second operator to see the first")
        kube.eventually(lambda: logged(first, PAUSED, since=since), what="the first operator to pause")

        cluster.create_registry(
            kube_client,
            namespace=namespace,
            spec={"auth": {"users": [cluster.user("alice", "alice-password", access="push")]}},
            passwords={"alice": "alice-Peering-pw-1"},
        )
    finally:
        code = second.stop()
    assert code == 0, second.output()[-5000:]

    kube.eventually(lambda: logged(first, RESUMED, since=since), what="the first operator to resume")
    deployment = names.Names.of("demo").deployment
    cluster.wait_child(kube_client, lightkube.resources.apps_v1.Deployment, deployment, namespace)
    assert RESUMED not in second.output(), "the second replica ran while the first was alive"
    assert f"[{namespace}/demo]" not in second.output(), "the paused second replica reconciled the registry"
    log = first.output(since=since)
    first_handled = log.index(f"[{namespace}/demo]")
    assert first_handled > log.index(RESUMED), "the first operator reconciled while it was paused"
