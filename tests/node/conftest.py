"""The real node for the tests in this directory: one `tests.support.cluster.Cluster`, stopped after them.

The images the cluster runs are built here, without Docker or any outside registry, by `hack/images.sh`
(cached; seconds when warm) and imported into containerd before the kubelet starts. A machine that lacks
a kernel feature or a binary fails here with the missing piece named; nothing is skipped. The kubelet runs
with Dockyard's image credential provider for one registry host (`pod_identity.py`, used by
test_pod_identity_pull.py; no other test pulls from that host).

When a test that uses the node fails, its report carries what a person would look at first: every
component's log tail (kubelet, containerd, kube-proxy, …), the cluster's events, the Pods, and the logs
of every container that ran in them (the operator, the node-trust agent, the registry and its nginx).
"""

from __future__ import annotations

import collections.abc
import subprocess

import pytest

from tests.node import pod_identity
from tests.support import cluster


@pytest.fixture(scope="package")
def node() -> collections.abc.Iterator[cluster.Cluster]:
    """The node, for this directory only: stopped (and cleaned up) once its last test ran."""
    missing = cluster.preflight()
    if missing:
        pytest.fail("this machine cannot run the real node: " + "; ".join(missing), pytrace=False)
    try:
        images = cluster.image_list()
    except cluster.ClusterError as exc:  # names hack/images.sh's exit code and its stderr
        pytest.fail(str(exc), pytrace=False)
    with cluster.Cluster(  # another run's node: wait for it
        images=images, wait=1800, credential_providers=pod_identity.credential_providers()
    ) as running:
        yield running


def _diagnostics(node: cluster.Cluster) -> list[tuple[str, str]]:
    sections = [(f"node: {name} log", text) for name, text in node.logs().items()]

    def kubectl(*args: str) -> str:
        try:
            done = node.kubectl(*args, check=False, timeout=30)
        except subprocess.TimeoutExpired:
            return "(timed out)"
        return done.stdout + done.stderr

    sections.append(("node: events", kubectl("get", "events", "-A", "--sort-by=.lastTimestamp")))
    sections.append(("node: pods", kubectl("get", "pods", "-A", "-o", "wide")))
    for line in kubectl(
        "get", "pods", "-A", "--no-headers", "-o", "custom-columns=NS:.metadata.namespace,N:.metadata.name"
    ).splitlines():
        parts = line.split()
        if len(parts) == 2:
            logs = kubectl("logs", "-n", parts[0], parts[1], "--all-containers", "--prefix", "--tail=60")
            sections.append((f"node: logs of pod {parts[0]}/{parts[1]}", logs))
    return sections


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> collections.abc.Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and "node" in getattr(item, "fixturenames", ()):
        running = item.funcargs.get("node") if hasattr(item, "funcargs") else None  # type: ignore[attr-defined]
        if isinstance(running, cluster.Cluster) and running.components:
            for title, text in _diagnostics(running):
                report.sections.append((title, text))
    return report
