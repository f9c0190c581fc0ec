"""kopf peering as the chart sets it up: a second operator replica waits instead of double-reconciling.

Covers: a second operator started from the chart's Deployment (same ServiceAccount, same peering object,
another Pod identity) joins the chart's peering object beside the first, which makes both pause, as kopf does
for equal priorities; a registry created meanwhile is reconciled by neither; once the second one stops
(removing itself from the peering object), the first resumes and reconciles the registry, and the second never
touched it.

The test waits on the peering object and the registry's children (API state). Which replica did what is read
from their logs afterwards: both authenticate as the one ServiceAccount, so the API cannot tell them apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightkube
import lightkube.resources.apps_v1
import pytest

from dockyard_operator import names
from tests.integration.install import chart, conftest
from tests.integration.operator import cluster
from tests.support import kube

pytestmark = pytest.mark.integration

RESUMED = "Resuming operations after the pause"


def peers(plane: kube.ControlPlane, docs: list[dict[str, Any]]) -> set[str]:
    """The identities (Pod names) in the chart's cluster-wide peering object."""
    name = chart.only(docs, "ClusterKopfPeering")["metadata"]["name"]
    peering = plane.api_json(f"/apis/kopf.dev/v1/clusterkopfpeerings/{name}")
    return set(peering.get("status") or {})


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
        username=charted_operator.username,
        pod_id="dockyard-operator-second-pod",
    )
    both = {first.pod_id, second.pod_id}
    second.start()
    try:
        # Both in one peering object with equal priority: kopf pauses each of them on seeing the other (the
        # second starts paused until its first look at it; the first pauses on the same watch event).
        kube.eventually(
            lambda: peers(control_plane, charted_operator.docs) >= both, what=f"{both} in the peering"
        )
        cluster.create_registry(
            kube_client,
            namespace=namespace,
            spec={"auth": {"users": [cluster.user("alice", "alice-password", access="push")]}},
            passwords={"alice": "alice-Peering-pw-1"},
        )
    finally:
        code = second.stop()
    assert code == 0, second.output()[-5000:]
    assert second.pod_id not in peers(control_plane, charted_operator.docs), "the second left its entry"

    deployment = names.Names.of("demo").deployment
    cluster.wait_child(kube_client, lightkube.resources.apps_v1.Deployment, deployment, namespace)
    assert RESUMED not in second.output(), "the second replica ran while the first was alive"
    assert f"[{namespace}/demo]" not in second.output(), "the paused second replica reconciled the registry"
    log = first.output(since=since)
    assert RESUMED in log, "the first operator never paused"
    first_handled = log.index(f"[{namespace}/demo]")
    assert first_handled > log.index(RESUMED), "the first operator reconciled while it was paused"
