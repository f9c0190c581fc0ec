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


class StorageStatus(ApiModel):
    """Where the data lives, and the data volume as the registry last measured it (its filesystem, not the
    claim's request; a bucket reports no capacity)."""

    location: str | None = None
    """Where blobs and manifests live: pvc/<claim>, emptyDir, or s3://<bucket>/<prefix>."""

    capacity_bytes: int | None = None
    """Size of the data filesystem."""
    used_bytes: int | None = None
    """Bytes in use on it."""
    used_percent: int | None = None
    """used / capacity, in whole percent (rounded down)."""
    writable: bool | None = None
    """Whether the registry's last write probe succeeded and the fill is below spec.storage.maxFillPercent."""


class GcRunStatus(ApiModel):
    """What one online gc run did (or, in a dry run, would have done)."""

    time: datetime.datetime | None = None
    """When the run finished."""
    started: datetime.datetime | None = None
    """When it started."""
    dry_run: bool | None = None
    """Only reported, deleted nothing."""
    tags_deleted: int | None = None
    """Tags the retention rules retired."""
    manifests_deleted: int | None = None
    """Manifests removed."""
    blobs_deleted: int | None = None
    """Blobs removed."""
    bytes_freed: int | None = None
    """Bytes the removed blobs took."""
    errors: int | None = None
    """Deletions that failed (the next run tries again)."""
    message: str | None = None
    """Why the run failed as a whole, or why the retention rules could not be read (the last good ones were
    used)."""


class MaintenanceStatus(ApiModel):
    """Online garbage collection as the registry reports it."""

    schedule: str | None = None
    """The schedule the registry runs (empty: gc is suspended)."""
    next_run: datetime.datetime | None = None
    """When the next run starts."""
    last_run: GcRunStatus | None = None
    """The last run."""


class IdentityIssuerStatus(ApiModel):
    """One token issuer the registry trusts, as it reports it."""

    name: str
    """The issuer's name (`kubernetes`, or spec.auth.oidc[].name)."""
    kind: str | None = None
    """kubernetes or oidc."""
    issuer: str | None = None
    """The issuer URL (for kubernetes, as learned from the cluster's discovery document)."""
    reachable: bool | None = None
    """Whether the registry could read its discovery document and keys (unset before its first try)."""
    keys: int | None = None
    """Signing keys known."""
    error: str | None = None
    """Why the last read failed."""


class MirrorStatus(ApiModel):
    """One pull-through mirror as the registry pods report it (and, with wireNodes, the nodes)."""

    prefix: str
    """The mirror's repository prefix."""
    upstream: str | None = None
    """The upstream registry's URL."""
    reachable: bool | None = None
    """False when the last upstream request failed (unreachable, refused credentials, bad bytes); unset
    before the first request."""
    last_error: str | None = None
    """The last upstream failure other than a 404 (never contains credentials)."""
    last_error_reason: str | None = None
    """Its kind: unavailable, auth, digest or other."""
    last_error_time: datetime.datetime | None = None
    """When it happened."""
    last_success_time: datetime.datetime | None = None
    """When the upstream last answered a request."""
    ca_error: str | None = None
    """Why the mirror's CA bundle (caSecretRef) as mounted now is not in use: it changed and cannot be
    loaded, so the registry still trusts the previous one (unset when the mounted bundle is in use)."""
    node_host: str | None = None
    """The image host nodes pull through this mirror (wireNodes only)."""
    nodes_wired: int | None = None
    """Nodes whose containerd pulls node_host through this mirror (wireNodes only)."""
    runtimes_not_wired: list[str] | None = None
    """Per node, container runtimes found there that are not wired (and why), e.g. Docker."""


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
    storage: StorageStatus | None = None
    """Where the data lives (always), and capacity and use of the data volume as the registry reports it."""
    maintenance: MaintenanceStatus | None = None
    """Online garbage collection: schedule and last run."""
    identities: list[IdentityIssuerStatus] | None = None
    """Token issuers (spec.auth.serviceAccounts, spec.auth.oidc) and whether the registry reaches them."""
    mirrors: list[MirrorStatus] | None = None
    """Pull-through mirrors: upstream reachability and last error, and the nodes wired to each."""
