"""The `<registry>-data` PersistentVolumeClaim (only with pvc storage, the default)."""

from __future__ import annotations

from typing import Any

from dockyard_operator.builders import inputs as inputs_mod


def build(inputs: inputs_mod.Inputs) -> dict[str, Any]:
    claim = inputs.spec.storage.effective_pvc
    spec: dict[str, Any] = {
        "accessModes": list(claim.access_modes),
        "resources": {"requests": {"storage": claim.size}},
    }
    if claim.storage_class_name:
        spec["storageClassName"] = claim.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": inputs_mod.metadata(inputs, name=inputs.names.pvc, component="storage"),
        "spec": spec,
    }
