"""The `<registry>` Service: port 443 (name https) → the nginx sidecar's 5443."""

from __future__ import annotations

from typing import Any

from dockyard_operator import names
from dockyard_operator.builders import inputs as inputs_mod

PORT = 443
TARGET_PORT = 5443


def build(inputs: inputs_mod.Inputs) -> dict[str, Any]:
    expose = inputs.spec.expose
    port: dict[str, Any] = {"name": "https", "port": PORT, "targetPort": TARGET_PORT, "protocol": "TCP"}
    if expose.node_port is not None:
        port["nodePort"] = expose.node_port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": inputs_mod.metadata(inputs, name=inputs.names.service, component="registry"),
        "spec": {
            "type": expose.type,
            "selector": names.selector_labels(inputs.registry),
            "ports": [port],
        },
    }
