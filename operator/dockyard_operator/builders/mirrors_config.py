"""The `<registry>-mirrors` ConfigMap and the pod volume that gives the registry its mirrors file.

spec.mirrors becomes the registry's `serve --mirrors` file (dockyard_registry.mirrors reads it). The
upstream credentials and CA bundles are not copied anywhere: the pod mounts the keys of the user's Secrets
next to the file (one projected volume), and the file names those paths. So the operator never reads an
upstream password, and a rotated Secret reaches the running registry through the kubelet's volume update
(the registry reads the files on each upstream login).

Must not: do I/O; the Deployment builder decides where the volume goes.
"""

from __future__ import annotations

import json
from typing import Any

from dockyard_operator import model, names
from dockyard_operator.builders import inputs as inputs_mod

MIRRORS_DIR = "/etc/dockyard/mirrors"
CONFIG_KEY = "mirrors.yaml"
VOLUME = "mirrors"


def configmap_name(registry: str) -> str:
    return names.dns_label(registry, "-mirrors")


def _dir(index: int) -> str:
    return f"mirror-{index}"


def render(mirrors: list[model.Mirror]) -> str:
    """The mirrors file (JSON, which is YAML) for the registry, with the mounted file paths."""
    entries: list[dict[str, Any]] = []
    for i, mirror in enumerate(mirrors):
        entry: dict[str, Any] = {
            "prefix": mirror.prefix,
            "upstream": mirror.upstream.rstrip("/"),
            "tagTTL": model.parse_duration(mirror.ttl).total_seconds(),
            # Always explicit: the registry's own default follows its file's credentials the same way.
            "anonymousPull": mirror.effective_anonymous_pull,
        }
        if mirror.credentials_secret_ref is not None:
            entry["usernameFile"] = f"{MIRRORS_DIR}/{_dir(i)}/username"
            entry["passwordFile"] = f"{MIRRORS_DIR}/{_dir(i)}/password"
        if mirror.ca_secret_ref is not None:
            entry["caFile"] = f"{MIRRORS_DIR}/{_dir(i)}/ca.crt"
        entries.append(entry)
    return json.dumps({"mirrors": entries}, indent=2, sort_keys=True) + "\n"


def build(inputs: inputs_mod.Inputs) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": inputs_mod.metadata(inputs, name=configmap_name(inputs.registry), component="registry"),
        "data": {CONFIG_KEY: render(inputs.spec.mirrors)},
    }


def volume(inputs: inputs_mod.Inputs) -> dict[str, Any]:
    """One projected volume: the file, and each mirror's credential and CA keys under mirror-<i>/."""
    sources: list[dict[str, Any]] = [
        {
            "configMap": {
                "name": configmap_name(inputs.registry),
                "items": [{"key": CONFIG_KEY, "path": CONFIG_KEY}],
            }
        }
    ]
    for i, mirror in enumerate(inputs.spec.mirrors):
        creds = mirror.credentials_secret_ref
        if creds is not None:
            items = [
                {"key": creds.username_key, "path": f"{_dir(i)}/username"},
                {"key": creds.password_key, "path": f"{_dir(i)}/password"},
            ]
            sources.append({"secret": {"name": creds.name, "items": items}})
        if mirror.ca_secret_ref is not None:
            ca = mirror.ca_secret_ref
            sources.append(
                {"secret": {"name": ca.name, "items": [{"key": ca.key, "path": f"{_dir(i)}/ca.crt"}]}}
            )
    return {"name": VOLUME, "projected": {"sources": sources, "defaultMode": 0o440}}


def mount() -> dict[str, Any]:
    return {"name": VOLUME, "mountPath": MIRRORS_DIR, "readOnly": True}


def args() -> list[str]:
    return ["--mirrors", f"{MIRRORS_DIR}/{CONFIG_KEY}"]
