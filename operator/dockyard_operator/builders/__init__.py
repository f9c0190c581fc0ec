"""Pure builders: (spec, names, material) → Kubernetes manifest dicts, one module per child kind.

Owns: the exact content of every child (`htpasswd_secret`, `ca_secret`/`tls_secret`, `nginx_configmap`,
`mirrors_config`, `pvc`, `service`, `deployment`, `ingress`), `desired_children()` returning them in
apply order, and `adopt()`, which adds the owner reference that lets garbage collection delete children
with their registry.
Must not: perform I/O, read the clock, use randomness, or import kopf/lightkube/aiohttp: the same inputs
always give the same dicts, which is what makes the spec-hash comparison in `writer.py` meaningful.
"""

from __future__ import annotations

import copy
from typing import Any

from dockyard_operator.builders import (
    deployment,
    htpasswd_secret,
    ingress,
    mirrors_config,
    nginx_configmap,
    pvc,
    service,
    tls_secret,
)
from dockyard_operator.builders.inputs import Inputs, Owner

__all__ = ["Inputs", "Owner", "adopt", "desired_children"]


def desired_children(inputs: Inputs) -> list[dict[str, Any]]:
    """Every child in apply order: what the pod mounts exists before the Deployment that mounts it."""
    children: list[dict[str, Any]] = []
    if inputs.ca is not None:
        children.append(tls_secret.build_ca(inputs))
    if inputs.tls is not None:
        children.append(tls_secret.build(inputs))
    children.append(htpasswd_secret.build(inputs))
    children.append(nginx_configmap.build(inputs))
    if inputs.spec.mirrors:
        children.append(mirrors_config.build(inputs))
    if inputs.spec.storage.kind == "pvc":
        children.append(pvc.build(inputs))
    children.append(service.build(inputs))
    children.append(deployment.build(inputs))
    if inputs.spec.expose.ingress is not None:
        children.append(ingress.build(inputs))
    return children


def adopt(manifest: dict[str, Any], *, owner: Owner) -> dict[str, Any]:
    """A copy of `manifest` in the owner's namespace with a controller owner reference to it."""
    adopted = copy.deepcopy(manifest)
    meta = adopted.setdefault("metadata", {})
    meta["namespace"] = owner.namespace
    refs = [r for r in meta.get("ownerReferences", []) if r.get("uid") != owner.uid]
    refs.append(
        {
            "apiVersion": owner.api_version,
            "kind": owner.kind,
            "name": owner.name,
            "uid": owner.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    )
    meta["ownerReferences"] = refs
    return adopted
