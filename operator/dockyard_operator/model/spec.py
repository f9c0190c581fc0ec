"""The `PrivateRegistry` spec: the pod-level fields and the sections from the sibling modules."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pydantic

from dockyard_operator.model import mirrors as mirrors_
from dockyard_operator.model.access import Auth, PullSecrets
from dockyard_operator.model.maintenance import Maintenance
from dockyard_operator.model.pods import NetworkPolicy
from dockyard_operator.model.serving import Expose, Nginx, NodeTrust, Tls
from dockyard_operator.model.storage import Storage
from dockyard_operator.model.types import ApiModel, FreeformObject, Quantity


class ResourceRequirements(ApiModel):
    """Compute resources of the registry container, as in a Pod spec."""

    limits: dict[str, Quantity] | None = None
    """Maximum resources, e.g. {cpu: "1", memory: 512Mi}."""
    requests: dict[str, Quantity] | None = None
    """Guaranteed resources, e.g. {cpu: 100m, memory: 128Mi}."""


class Toleration(ApiModel):
    """A Pod toleration (see the core/v1 Toleration type)."""

    key: str | None = None
    """The taint key the toleration applies to; empty matches all keys (with operator Exists)."""
    operator: Literal["Exists", "Equal"] | None = None
    """Exists or Equal (the Kubernetes default when omitted is Equal)."""
    value: str | None = None
    """The taint value to match when the operator is Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """The taint effect to match; empty matches all effects."""
    toleration_seconds: int | None = None
    """For NoExecute: how long the pod stays bound after the taint appears."""


class PrivateRegistrySpec(ApiModel):
    """Desired state of a private OCI registry."""

    replicas: Annotated[int, pydantic.Field(ge=0, le=20)] = 1
    """Number of registry pods; more than one needs s3 storage or a ReadWriteMany claim."""
    image: str | None = None
    """Registry image; empty uses the operator's default."""
    resources: ResourceRequirements | None = None
    """Compute resources of the registry container. A CPU or memory request that neither requests nor
    limits name gets a default (cpu 50m, memory 64Mi), so the scheduler accounts for the registry."""
    node_selector: dict[str, str] | None = None
    """Node labels the registry pods must match."""
    tolerations: list[Toleration] | None = None
    """Tolerations of the registry pods."""
    affinity: FreeformObject | None = None
    """Affinity of the registry pods (core/v1 Affinity)."""
    topology_spread_constraints: list[FreeformObject] | None = None
    """Topology spread constraints of the registry pods (core/v1 TopologySpreadConstraint). Unset: spread
    by node (kubernetes.io/hostname, maxSkew 1, ScheduleAnyway); an empty list: none."""
    network_policy: NetworkPolicy = NetworkPolicy()
    """An optional NetworkPolicy restricting who may reach the registry pods."""
    storage: Storage = Storage()
    """Where images are stored."""
    maintenance: Maintenance = Maintenance()
    """Online garbage collection and tag retention (by default gc runs daily at 03:17 UTC and deletes only
    blobs nothing references)."""
    auth: Auth = Auth()
    """Users and anonymous access."""
    tls: Tls = Tls()
    """Serving certificate."""
    expose: Expose = Expose()
    """Service type and optional Ingress."""
    nginx: Nginx = Nginx()
    """Sidecar tuning."""
    node_trust: NodeTrust = NodeTrust()
    """Distribute the CA to the nodes' container runtimes."""
    pull_secrets: PullSecrets | None = None
    """Create image pull Secrets for one user in other namespaces (removed again when this is removed)."""
    publish_local_registry_hosting: bool = False
    """Publish kube-public/local-registry-hosting (KEP-1755) naming this registry's localhost:<nodePort>, so
    tools like Tilt, ctlptl and Skaffold find it; needs expose.type NodePort or LoadBalancer. The first
    registry to publish it keeps it until it stops (one per cluster)."""
    mirrors: Annotated[list[mirrors_.Mirror], pydantic.Field(max_length=32)] = []
    """Pull-through mirrors of upstream registries, each under its own repository prefix (docs/mirrors.md)."""

    @pydantic.model_validator(mode="after")
    def _unique_mirrors(self) -> PrivateRegistrySpec:
        mirrors_.check_unique(self.mirrors)
        return self


def parse_spec(spec: dict[str, Any]) -> PrivateRegistrySpec:
    """Parse a spec; raises `pydantic.ValidationError` (use `spec_error_message` for users)."""
    return PrivateRegistrySpec.model_validate(spec)


def spec_error_message(error: pydantic.ValidationError) -> str:
    """One line per problem, with the camelCase field path users wrote (no input values: may be secret)."""
    parts = []
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"]) or "spec"
        parts.append(f"spec.{path}: {item['msg']}")
    return "; ".join(parts)
