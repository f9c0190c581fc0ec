"""The `<registry>` NetworkPolicy (only with `spec.networkPolicy.enabled`): who may reach the registry pods.

Two rules, ingress only: nginx's HTTPS port from anywhere, because pulls arrive from every node (kubelet by
the node port, forwarded by kube-proxy with the node's address), from an ingress controller in any namespace
and from clients; and the metrics port only from the operator's namespace (the operator reads /status there)
and the listed namespaces, selected by the `kubernetes.io/metadata.name` label the API server sets on every
Namespace. Every other port of the pods (the registry's loopback listener is not one) is closed.
"""

from __future__ import annotations

from typing import Any

from dockyard_operator import names
from dockyard_operator.builders import inputs as inputs_mod
from dockyard_operator.builders import nginx_configmap

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def wanted(inputs: inputs_mod.Inputs) -> bool:
    return inputs.spec.network_policy.enabled


def build(inputs: inputs_mod.Inputs) -> dict[str, Any]:
    scrapers = sorted({inputs.operator_namespace, *inputs.spec.network_policy.metrics_from_namespaces})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": inputs_mod.metadata(inputs, name=inputs.names.network_policy, component="registry"),
        "spec": {
            "podSelector": {"matchLabels": names.selector_labels(inputs.registry)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"ports": [{"protocol": "TCP", "port": nginx_configmap.LISTEN_PORT}]},
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchExpressions": [
                                    {"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": scrapers}
                                ]
                            }
                        }
                    ],
                    "ports": [{"protocol": "TCP", "port": names.METRICS_PORT}],
                },
            ],
        },
    }
