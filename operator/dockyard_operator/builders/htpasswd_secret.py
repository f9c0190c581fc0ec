"""The `<registry>-htpasswd` Secret: `htpasswd` (bcrypt lines) and `access.yaml`, as the registry reads them.

Must not: hash passwords (reconcile gathers hashes through `crypto.reuse_or_hash`) or read any Secret.
"""

from __future__ import annotations

from typing import Any

import yaml

from dockyard_operator import model
from dockyard_operator.builders import inputs as inputs_mod


def access_yaml(auth: model.Auth) -> str:
    """The registry's access.yaml for the spec's users (see the registry/operator contract)."""
    document = {
        "anonymousPull": auth.anonymous_pull,
        "users": {u.name: {"access": u.access, "repositories": list(u.repositories)} for u in auth.users},
    }
    return yaml.safe_dump(document, sort_keys=True, default_flow_style=False)


def build(inputs: inputs_mod.Inputs) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": inputs_mod.metadata(inputs, name=inputs.names.htpasswd_secret, component="auth"),
        "type": "Opaque",
        "data": {
            "htpasswd": inputs_mod.b64(inputs.htpasswd),
            "access.yaml": inputs_mod.b64(inputs.access_yaml),
        },
    }
