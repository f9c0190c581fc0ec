"""Pure builders: (spec, names, material) → Kubernetes manifest dicts, one module per child kind.

Owns: the exact content of every child (`htpasswd_secret`, `ca_secret`/`tls_secret`, `nginx_configmap`,
`maintenance_configmap`, `mirrors_config`, `pvc`, `service`, `metrics_service`, `deployment`,
`pod_disruption_budget`, `network_policy`, `ingress`), `desired_children()` returning them in apply
order, `optional_children()` naming those a spec may also not want (so the children step deletes ours),
and `adopt()`, which adds the owner reference that lets garbage collection delete children with their
registry, except for a child that must outlive it (`retained()`: a claim with deletionPolicy Retain),
which `adopt()` only places in the registry's namespace.
Must not: perform I/O, read the clock, use randomness, or import kopf/lightkube/aiohttp: the same inputs
always give the same dicts, which is what makes the spec-hash comparison in `writer.py` meaningful.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from dockyard_operator import names
from dockyard_operator.builders import (
    deployment,
    htpasswd_secret,
    ingress,
    maintenance_configmap,
    metrics_service,
    mirrors_config,
    network_policy,
    nginx_configmap,
    pod_disruption_budget,
    pvc,
    service,
    tls_secret,
)
from dockyard_operator.builders.inputs import Inputs, Owner

__all__ = ["Inputs", "OptionalChild", "Owner", "adopt", "desired_children", "optional_children", "retained"]


@dataclasses.dataclass(frozen=True)
class OptionalChild:
    """A child some specs do not want: which object it is, and whether this spec wants it."""

    api_version: str
    kind: str
    name: str
    wanted: bool


def desired_children(inputs: Inputs) -> list[dict[str, Any]]:
    """Every child in apply order: what the pod mounts exists before the Deployment that mounts it."""
    children: list[dict[str, Any]] = []
    if inputs.ca is not None:
        children.append(tls_secret.build_ca(inputs))
    if inputs.tls is not None:
        children.append(tls_secret.build(inputs))
    children.append(htpasswd_secret.build(inputs))
    children.append(nginx_configmap.build(inputs))
    children.append(maintenance_configmap.build(inputs))
    if inputs.spec.mirrors:
        children.append(mirrors_config.build(inputs))
    if inputs.spec.storage.kind == "pvc":
        children.append(pvc.build(inputs))
    children.append(service.build(inputs))
    children.append(deployment.build(inputs))
    # Nothing the pods mount: after the Deployment, so that a name conflict here never holds it back.
    children.append(metrics_service.build(inputs))
    if network_policy.wanted(inputs):
        children.append(network_policy.build(inputs))
    if pod_disruption_budget.wanted(inputs):
        children.append(pod_disruption_budget.build(inputs))
    if inputs.spec.expose.ingress is not None:
        children.append(ingress.build(inputs))
    return children


def optional_children(inputs: Inputs) -> list[OptionalChild]:
    """The children a spec may not want, each saying whether this one does (unwanted ones of ours go)."""
    child_names = inputs.names
    return [
        OptionalChild(
            "networking.k8s.io/v1", "Ingress", child_names.ingress, inputs.spec.expose.ingress is not None
        ),
        OptionalChild(
            "policy/v1",
            "PodDisruptionBudget",
            child_names.pod_disruption_budget,
            pod_disruption_budget.wanted(inputs),
        ),
        OptionalChild(
            "networking.k8s.io/v1", "NetworkPolicy", child_names.network_policy, network_policy.wanted(inputs)
        ),
        OptionalChild(
            "v1", "ConfigMap", mirrors_config.configmap_name(inputs.registry), bool(inputs.spec.mirrors)
        ),
    ]


def retained(manifest: Mapping[str, Any]) -> bool:
    """Whether the child must outlive its registry (it then gets no owner reference)."""
    return names.RETAINED_FROM in ((manifest.get("metadata") or {}).get("labels") or {})


def adopt(manifest: Mapping[str, Any], *, owner: Owner) -> dict[str, Any]:
    """`manifest` in the owner's namespace with a controller owner reference to it (none when the child is
    `retained`): a new object with new metadata; the rest is shared with `manifest`, left as it is."""
    meta = {**(manifest.get("metadata") or {}), "namespace": owner.namespace}
    refs = [r for r in meta.get("ownerReferences", []) if r.get("uid") != owner.uid]
    if not retained(manifest):
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
    if refs:
        meta["ownerReferences"] = refs
    else:
        meta.pop("ownerReferences", None)
    return {**manifest, "metadata": meta}
