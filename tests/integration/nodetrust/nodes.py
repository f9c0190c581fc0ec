"""Helpers for playing a node in the node trust tests: find the agent Pod the DaemonSet made for a Node,
run it locally with the pod runner (as its own ServiceAccount), and read its report.

Must not: assert behaviour (tests do) or sleep for fixed times (everything waits through `kube.eventually`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightkube
import lightkube.resources.apps_v1
import lightkube.resources.core_v1

from dockyard_operator.nodetrust import builders, layout
from tests.support import kube, podrunner

core = lightkube.resources.core_v1
apps = lightkube.resources.apps_v1


def target_nodes(pod: Any) -> set[str]:
    """The node a DaemonSet Pod is for: the controller pins it with node affinity on metadata.name (the
    scheduler, absent here, would then set spec.nodeName)."""
    found = {pod.spec.nodeName} if pod.spec.nodeName else set()
    affinity = pod.spec.affinity.nodeAffinity if pod.spec.affinity else None
    required = affinity.requiredDuringSchedulingIgnoredDuringExecution if affinity else None
    for term in required.nodeSelectorTerms if required else []:
        for field in term.matchFields or []:
            if field.key == "metadata.name":
                found.update(field.values or [])
    return found


def agent_pod(client: lightkube.Client, namespace: str, node: str, *, timeout: float = 60.0) -> Any:
    """The DaemonSet's Pod for `node`, once the controller has created it."""

    def probe() -> Any:
        for pod in client.list(core.Pod, namespace=namespace, labels=builders.SELECTOR):
            if node in target_nodes(pod) and not pod.metadata.deletionTimestamp:
                return pod
        return None

    return kube.eventually(probe, timeout=timeout, what=f"the agent Pod on {node}")


def reported(client: lightkube.Client, namespace: str, pod: str) -> layout.Report:
    """The agent's report on its Pod; KeyError while there is none."""
    obj: Any = client.get(core.Pod, pod, namespace=namespace)
    return layout.Report.from_json((obj.metadata.annotations or {})[layout.REPORT_ANNOTATION])


def agent_runner(
    *,
    plane: kube.ControlPlane,
    client: lightkube.Client,
    namespace: str,
    node: str,
    root: Path,
) -> tuple[podrunner.PodRunner, str]:
    """A pod runner for the agent Pod on `node`, authenticated as the agent's ServiceAccount; and its name."""
    pod = agent_pod(client, namespace, node)
    ds: Any = client.get(apps.DaemonSet, builders.NAME, namespace=namespace)
    sa_config = plane.service_account_kubeconfig(namespace=namespace, name=builders.NAME)
    runner = podrunner.PodRunner(
        template=ds.to_dict()["spec"]["template"],
        namespace=namespace,
        client=client,
        root=root,
        pod_name=pod.metadata.name,
        node_name=node,
        env={"KUBECONFIG": str(sa_config)},
    )
    return runner, str(pod.metadata.name)
