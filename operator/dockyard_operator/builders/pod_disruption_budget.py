"""The `<registry>` PodDisruptionBudget, only with more than one replica: a drain evicts one pod at a time.

With one replica a budget would either block every drain (minAvailable 1) or promise nothing, so there is
none; the children step deletes ours when replicas go back to 1.
"""

from __future__ import annotations

from typing import Any

from dockyard_operator import names
from dockyard_operator.builders import inputs as inputs_mod


def wanted(inputs: inputs_mod.Inputs) -> bool:
    return inputs.spec.replicas > 1


def build(inputs: inputs_mod.Inputs) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": inputs_mod.metadata(
            inputs, name=inputs.names.pod_disruption_budget, component="registry"
        ),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": names.selector_labels(inputs.registry)},
        },
    }
