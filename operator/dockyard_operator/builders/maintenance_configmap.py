"""The `<registry>-maintenance` ConfigMap: the retention file the registry's online gc reads.

The registry re-reads this file before every gc run (`dockyard_registry.maintenance`), and the kubelet
refreshes a ConfigMap volume in place, so a change to spec.maintenance.retention reaches the running pod
without a restart: the file is deliberately left out of the pod's config hash. The schedule and the other
switches are `serve` arguments (`deployment.registry_args`) and do roll the pod.

Owns: the file's text in the registry's retention grammar (JSON, which its YAML reader takes; stable key
order, so an unchanged spec gives the same bytes).
Must not: read files or know about the pod beyond the mount path.
"""

from __future__ import annotations

import json
from typing import Any

from dockyard_operator import model
from dockyard_operator.builders import inputs as inputs_mod

RETENTION_KEY = "retention.json"
MOUNT_DIR = "/etc/dockyard/maintenance"
RETENTION_PATH = f"{MOUNT_DIR}/{RETENTION_KEY}"


def render(maintenance: model.Maintenance) -> str:
    """The retention file: `{"rules": [...]}`; no rules keeps every tag."""
    rules: list[dict[str, Any]] = []
    for rule in maintenance.retention or []:
        out: dict[str, Any] = {"repositories": list(rule.repositories)}
        if rule.tags:
            out["tags"] = list(rule.tags)
        if rule.keep_last is not None:
            out["keepLast"] = rule.keep_last
        if rule.keep_within is not None:
            out["keepWithin"] = rule.keep_within
        rules.append(out)
    return json.dumps({"rules": rules}, indent=2) + "\n"


def build(inputs: inputs_mod.Inputs) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": inputs_mod.metadata(
            inputs, name=inputs.names.maintenance_configmap, component="maintenance"
        ),
        "data": {RETENTION_KEY: render(inputs.spec.maintenance)},
    }
