"""The `<registry>-metrics` Service: ClusterIP port 9102 (metrics) → the registry container's metrics port.

Apart from the `<registry>` Service on purpose: that one is what clients, node trust and status read, and
/metrics and /status are never reachable through nginx. A ServiceMonitor selects this Service by its
component label (`metrics`).
"""

from __future__ import annotations

from typing import Any

from dockyard_operator import names
from dockyard_operator.builders import inputs as inputs_mod

COMPONENT = "metrics"


def build(inputs: inputs_mod.Inputs) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": inputs_mod.metadata(inputs, name=inputs.names.metrics_service, component=COMPONENT),
        "spec": {
            "type": "ClusterIP",
            "selector": names.selector_labels(inputs.registry),
            "ports": [
                {
                    "name": names.METRICS_PORT_NAME,
                    "port": names.METRICS_PORT,
                    "targetPort": names.METRICS_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }
