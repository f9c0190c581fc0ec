"""`kube-public/local-registry-hosting`: how tools discover the cluster's local registry (KEP-1755).

Tilt, ctlptl, Skaffold and friends read this ConfigMap to learn where to push images so that nodes can pull
them. We publish a registry that opts in with `spec.publishLocalRegistryHosting`:
- `host`: what a developer's machine pushes to and `hostFromContainerRuntime`: what kubelet pulls by, both
  `localhost:<nodePort>` (kube-proxy forwards node ports on loopback);
- `hostFromClusterNetwork`: the Service's in-cluster name, for in-cluster builders;
- `help`: where to read more.
There is one such ConfigMap per cluster, so it records which registry wrote it (an annotation) and is only
ever changed or deleted by that registry.

Must not: perform I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NAMESPACE = "kube-public"
NAME = "local-registry-hosting"
KEY = "localRegistryHosting.v1"
OWNER_ANNOTATION = "dockyard.dev/local-registry-hosting-for"
HELP = "https://github.com/kubernetes/enhancements/tree/master/keps/sig-cluster-lifecycle/generic/1755-communicating-a-local-registry"


def owner_of(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def configmap(*, owner: str, node_endpoint: str, cluster_endpoint: str) -> dict[str, Any]:
    text = (
        f'host: "{node_endpoint}"\n'
        f'hostFromContainerRuntime: "{node_endpoint}"\n'
        f'hostFromClusterNetwork: "{cluster_endpoint}"\n'
        f'help: "{HELP}"\n'
    )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": NAME,
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/managed-by": "dockyard"},
            "annotations": {OWNER_ANNOTATION: owner},
        },
        "data": {KEY: text},
    }


def owned_by(live: Mapping[str, Any] | None, owner: str) -> bool:
    """True when the live ConfigMap was written for `owner` (another registry's or a user's is never ours)."""
    annotations = ((live or {}).get("metadata") or {}).get("annotations") or {}
    return bool(annotations.get(OWNER_ANNOTATION) == owner)
