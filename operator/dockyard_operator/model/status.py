"""The `PrivateRegistry` status, written by the operator."""

from __future__ import annotations

import datetime
from typing import Annotated, Literal

import pydantic

from dockyard_operator.model.types import ApiModel


class Condition(ApiModel):
    """A status condition (metav1.Condition)."""

    type: Annotated[str, pydantic.StringConstraints(max_length=316)]
    """Ready, Progressing, Degraded, CertificateReady or StorageReady."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""
    reason: Annotated[str, pydantic.StringConstraints(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")]
    """A CamelCase machine-readable reason."""
    message: Annotated[str, pydantic.StringConstraints(max_length=32768)] = ""
    """A human-readable explanation."""
    last_transition_time: datetime.datetime
    """When the status last changed."""
    observed_generation: int | None = None
    """The metadata.generation this condition was computed for."""


class CaStatus(ApiModel):
    """The CA clients must trust."""

    secret_name: str | None = None
    """Secret holding ca.crt (the TLS Secret; the CA key lives in a separate Secret)."""
    fingerprint_sha256: str | None = None
    """SHA-256 fingerprint of the CA certificate (hex, colon separated)."""
    not_after: datetime.datetime | None = None
    """When the CA expires."""


class CertificateStatus(ApiModel):
    """The serving certificate."""

    secret_name: str | None = None
    """Secret holding tls.crt and tls.key."""
    not_after: datetime.datetime | None = None
    """When the certificate expires."""
    dns_names: list[str] | None = None
    """DNS names in the certificate."""
    ip_addresses: list[str] | None = None
    """IP addresses in the certificate."""


class NodeTrustStatus(ApiModel):
    """Which nodes' container runtimes trust this registry's CA."""

    hosts: list[str] | None = None
    """host[:port] names published to the nodes."""
    desired: int | None = None
    """Nodes that should run the node trust agent."""
    ready: int | None = None
    """Agents that are ready."""
    trusting: int | None = None
    """Nodes whose runtimes trust every published CA for every host."""
    ca_fingerprint_on_nodes: list[str] | None = None
    """SHA-256 fingerprints of the published CAs that every node has installed."""


class PrivateRegistryStatus(ApiModel):
    """Observed state, written by the operator."""

    observed_generation: int | None = None
    """The metadata.generation the operator last reconciled."""
    conditions: list[Condition] | None = None
    """Ready, Progressing, Degraded, CertificateReady, StorageReady (and NodeTrustReady)."""
    endpoint: str | None = None
    """host:port clients use to reach the registry."""
    ca: CaStatus | None = None
    """CA to trust."""
    certificate: CertificateStatus | None = None
    """Serving certificate."""
    replicas: int | None = None
    """Desired registry pods."""
    ready_replicas: int | None = None
    """Registry pods that are ready."""
    node_endpoint: str | None = None
    """host:port kubelet pulls by on every node (localhost:<nodePort>; NodePort or LoadBalancer only)."""
    node_trust: NodeTrustStatus | None = None
    """Node trust of the CA (only with spec.nodeTrust.enabled)."""
