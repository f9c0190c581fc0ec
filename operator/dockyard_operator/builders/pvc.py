"""The `<registry>-data` PersistentVolumeClaim (only with pvc storage, the default).

With deletionPolicy Retain (the default) the claim carries `dockyard.dev/retained-from: <registry>` and is
placed without an owner reference (`builders.retained`), so deleting the registry keeps it; a registry of the
same name finds it by name and its labels (an orphan of ours, `policies.ownership_verdict`) and uses it again.
"""

from __future__ import annotations

from typing import Any

from dockyard_operator import names
from dockyard_operator.builders import inputs as inputs_mod


def build(inputs: inputs_mod.Inputs) -> dict[str, Any]:
    claim = inputs.spec.storage.effective_pvc
    labels = names.labels(inputs.registry, component="storage")
    if claim.deletion_policy == "Retain":
        labels[names.RETAINED_FROM] = names.label_value(inputs.registry)
    spec: dict[str, Any] = {
        "accessModes": list(claim.access_modes),
        "resources": {"requests": {"storage": claim.size}},
    }
    if claim.storage_class_name:
        spec["storageClassName"] = claim.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": inputs.names.pvc, "labels": labels},
        "spec": spec,
    }
