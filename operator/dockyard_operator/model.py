"""The `PrivateRegistry` API: pydantic models of spec and status, the single source of the CRD schema.

Owns: field names (camelCase on the wire), defaults, validation the schema can express (enums, patterns,
bounds, CEL rules in `x-kubernetes-validations`) and the same checks at parse time, so a spec that reached the
operator some other way (an older CRD) still fails with a readable message. Also the small pure helpers that
interpret fields (durations, which storage kind is in effect).
Must not: perform I/O, know about children, or import kopf/lightkube.

Field docstrings become the CRD descriptions (`kubectl explain preg.spec.tls` shows them), so they are written
for users of the API.
"""

from __future__ import annotations

import datetime
import re
from typing import Annotated, Any, Literal

import pydantic
from pydantic import alias_generators

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
NGINX_TIME_PATTERN = r"^[0-9]+(ms|s|m|h|d)?$"
NGINX_SIZE_PATTERN = r"^[0-9]+[kKmMgG]?$"
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
DNS_NAME_PATTERN = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
RESOURCE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"  # noqa: S105  # a pattern, not a secret
USER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]*$"
REPOSITORY_GLOB_PATTERN = r"^[a-z0-9*][a-z0-9*._/-]*$"
HOST_PORT_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?$"
IP_PATTERN = r"^(([0-9]{1,3}\.){3}[0-9]{1,3}|[0-9a-fA-F:]*:[0-9a-fA-F:.]*)$"


def _to_str(value: Any) -> Any:
    # Kubernetes quantities are int-or-string on the wire; we keep them as strings.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Quantity = Annotated[
    str,
    pydantic.BeforeValidator(_to_str),
    pydantic.StringConstraints(pattern=QUANTITY_PATTERN),
    pydantic.WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
        }
    ),
]
FreeformObject = Annotated[
    dict[str, Any],
    pydantic.WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]
Duration = Annotated[str, pydantic.StringConstraints(pattern=DURATION_PATTERN)]
NginxTime = Annotated[str, pydantic.StringConstraints(pattern=NGINX_TIME_PATTERN)]

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> datetime.timedelta:
    """Parse a Go-style duration (`90m`, `1h30m`, `2160h`) into a timedelta."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"invalid duration {text!r}: use a number with ms, s, m or h, e.g. 2160h")
    seconds = sum(
        float(number) * _DURATION_UNITS[unit]
        for number, _, unit in re.findall(r"([0-9]+(\.[0-9]+)?)(ms|s|m|h)", text)
    )
    return datetime.timedelta(seconds=seconds)


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(
        alias_generator=alias_generators.to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )


# --------------------------------------------------------------------------------------------- spec


class ResourceRequirements(_Model):
    """Compute resources of the registry container, as in a Pod spec."""

    limits: dict[str, Quantity] | None = None
    """Maximum resources, e.g. {cpu: "1", memory: 512Mi}."""
    requests: dict[str, Quantity] | None = None
    """Guaranteed resources, e.g. {cpu: 100m, memory: 128Mi}."""


class Toleration(_Model):
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


class PvcStorage(_Model):
    """A PersistentVolumeClaim created and owned by the operator (deleted with the registry)."""

    size: Quantity = "10Gi"
    """Requested capacity; can grow later if the storage class allows expansion, never shrink."""
    storage_class_name: str | None = None
    """StorageClass of the claim; empty uses the cluster default."""
    access_modes: Annotated[
        list[Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"]], pydantic.Field(min_length=1)
    ] = ["ReadWriteOnce"]
    """Access modes of the claim; more than one replica needs ReadWriteMany."""


class EmptyDirStorage(_Model):
    """Pod-local scratch storage: every image is lost when the pod goes away. For tests and caches."""

    size_limit: Quantity | None = None
    """Upper bound of the emptyDir volume."""


class Storage(_Model):
    """Where the registry keeps blobs and manifests: at most one of pvc and emptyDir; pvc is the default."""

    model_config = pydantic.ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!(has(self.pvc) && has(self.emptyDir))",
                    "message": "set at most one of pvc and emptyDir",
                }
            ]
        }
    )

    pvc: PvcStorage | None = None
    """Keep data on a PersistentVolumeClaim named <registry>-data (the default, 10Gi)."""
    empty_dir: EmptyDirStorage | None = None
    """Keep data in an emptyDir volume (lost with the pod)."""
    delete_enabled: bool = False
    """Allow DELETE of manifests, tags and blobs through the API (admin users only)."""

    @pydantic.model_validator(mode="after")
    def _one_kind(self) -> Storage:
        if self.pvc is not None and self.empty_dir is not None:
            raise ValueError("set at most one of pvc and emptyDir")
        return self

    @property
    def kind(self) -> Literal["pvc", "emptyDir"]:
        return "emptyDir" if self.empty_dir is not None else "pvc"

    @property
    def effective_pvc(self) -> PvcStorage:
        return self.pvc if self.pvc is not None else PvcStorage()


class SecretKeyRef(_Model):
    """A key of a Secret in the registry's namespace."""

    name: Annotated[str, pydantic.StringConstraints(pattern=RESOURCE_NAME_PATTERN, max_length=253)]
    """Name of the Secret (same namespace as the registry)."""
    key: Annotated[str, pydantic.StringConstraints(pattern=SECRET_KEY_PATTERN, max_length=253)] = "password"
    """Key inside the Secret whose value is the password."""


class User(_Model):
    """A registry user; the password is read from a Secret and stored only as a bcrypt hash."""

    name: Annotated[str, pydantic.StringConstraints(pattern=USER_NAME_PATTERN, max_length=128)]
    """Login name (no colon)."""
    password_secret_ref: SecretKeyRef
    """The Secret key holding this user's password; never put a password in the registry object itself."""
    access: Literal["pull", "push", "admin"] = "pull"
    """pull: read only; push: pull and push; admin: pull, push and delete."""
    repositories: Annotated[
        list[Annotated[str, pydantic.StringConstraints(pattern=REPOSITORY_GLOB_PATTERN, max_length=255)]],
        pydantic.Field(min_length=1, max_length=64),
    ] = ["**"]
    """Repository globs this user may access: * matches within a path segment, ** across segments."""


class Auth(_Model):
    """Who may use the registry."""

    users: Annotated[list[User], pydantic.Field(max_length=256)] = []
    """Registry users; names must be unique."""
    anonymous_pull: bool = False
    """Allow pulls without credentials (pushes still need a user with push or admin access)."""

    @pydantic.model_validator(mode="after")
    def _unique_names(self) -> Auth:
        seen: set[str] = set()
        for user in self.users:
            if user.name in seen:
                raise ValueError(f"duplicate user name {user.name!r}")
            seen.add(user.name)
        return self


class Tls(_Model):
    """The serving certificate of the registry endpoint."""

    model_config = pydantic.ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.mode) || self.mode != 'Secret'"
                    " || (has(self.secretName) && self.secretName != '')",
                    "message": "tls.secretName is required when tls.mode is Secret",
                },
                {
                    "rule": "!has(self.renewBefore) || !has(self.certDuration)"
                    " || duration(self.renewBefore) < duration(self.certDuration)",
                    "message": "tls.renewBefore must be shorter than tls.certDuration",
                },
            ]
        }
    )

    mode: Literal["SelfSigned", "Secret"] = "SelfSigned"
    """SelfSigned: the operator keeps a CA (Secret <registry>-ca) and issues the serving certificate
    (Secret <registry>-tls, with ca.crt for clients); Secret: use your own kubernetes.io/tls Secret."""
    secret_name: (
        Annotated[str, pydantic.StringConstraints(pattern=RESOURCE_NAME_PATTERN, max_length=253)] | None
    ) = None
    """With mode Secret: the kubernetes.io/tls Secret (same namespace) with tls.crt, tls.key (and ca.crt)."""
    dns_names: Annotated[
        list[Annotated[str, pydantic.StringConstraints(pattern=DNS_NAME_PATTERN, max_length=253)]],
        pydantic.Field(max_length=64),
    ] = []
    """Extra DNS names for the certificate, besides the Service names, localhost and expose hosts. A CA the
    operator creates vouches only for the names the certificate has then (X.509 name constraints): a name
    added later, outside them, is left out (Degraded, NamesOutsideCA) until a CA rotation."""
    ip_addresses: Annotated[
        list[Annotated[str, pydantic.StringConstraints(pattern=IP_PATTERN, max_length=45)]],
        pydantic.Field(max_length=64),
    ] = []
    """Extra IP addresses for the certificate, besides 127.0.0.1 (name constraints as for dnsNames)."""
    ca_duration: Duration = "87600h"
    """Validity of a newly created CA (Go duration, default 10 years). The CA is never renewed silently."""
    cert_duration: Duration = "2160h"
    """Validity of the serving certificate (Go duration, default 90 days)."""
    renew_before: Duration = "720h"
    """Renew the serving certificate this long before it expires (Go duration, default 30 days)."""

    @pydantic.field_validator("ip_addresses")
    @classmethod
    def _valid_ips(cls, values: list[str]) -> list[str]:
        import ipaddress

        for value in values:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(f"{value!r} is not an IP address") from None
        return values

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> Tls:
        if self.mode == "Secret" and not self.secret_name:
            raise ValueError("tls.secretName is required when tls.mode is Secret")
        if parse_duration(self.renew_before) >= parse_duration(self.cert_duration):
            raise ValueError("tls.renewBefore must be shorter than tls.certDuration")
        return self


class Ingress(_Model):
    """An Ingress in front of the registry Service (the backend speaks HTTPS)."""

    host: Annotated[str, pydantic.StringConstraints(pattern=DNS_NAME_PATTERN, max_length=253)]
    """Public host name; it is added to the certificate's DNS names."""
    class_name: str | None = None
    """IngressClass name; empty uses the cluster default."""
    annotations: dict[str, str] | None = None
    """Extra annotations for the Ingress (merged over the operator's defaults): only keys the operator's
    installer allows (tenancy.ingressAnnotations.allowed), never one containing "snippet"; Degraded names
    any key left out."""


class Expose(_Model):
    """How clients reach the registry."""

    model_config = pydantic.ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.nodePort) || (has(self.type) && self.type != 'ClusterIP')",
                    "message": "expose.nodePort needs expose.type NodePort or LoadBalancer",
                }
            ]
        }
    )

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    """Type of the Service <registry> (port 443, name https)."""
    node_port: Annotated[int, pydantic.Field(ge=30000, le=32767)] | None = None
    """Fixed node port for types NodePort and LoadBalancer; empty lets Kubernetes choose."""
    ingress: Ingress | None = None
    """Optional Ingress."""

    @pydantic.model_validator(mode="after")
    def _node_port_needs_type(self) -> Expose:
        if self.node_port is not None and self.type == "ClusterIP":
            raise ValueError("expose.nodePort needs expose.type NodePort or LoadBalancer")
        return self


class Nginx(_Model):
    """Settings of the nginx sidecar that terminates TLS in front of the registry."""

    client_max_body_size: Annotated[str, pydantic.StringConstraints(pattern=NGINX_SIZE_PATTERN)] = "0"
    """Largest request body nginx accepts (nginx size syntax); 0 means unlimited, which large layers need."""
    proxy_connect_timeout: NginxTime = "5s"
    """Timeout for connecting to the registry process."""
    proxy_read_timeout: NginxTime = "900s"
    """Timeout between two reads from the registry (long for big blobs)."""
    proxy_send_timeout: NginxTime = "900s"
    """Timeout between two writes to the registry (long for big uploads)."""


class NodeTrust(_Model):
    """Make every node's container runtimes trust this registry's CA (a DaemonSet writes certs.d files)."""

    enabled: bool = True
    """Publish the CA to the nodes (on by default; needs an operator with a namespace)."""
    hostnames: Annotated[
        list[Annotated[str, pydantic.StringConstraints(pattern=HOST_PORT_PATTERN, max_length=253)]],
        pydantic.Field(max_length=32),
    ] = []
    """Extra host[:port] names nodes pull from, besides the Service names and the expose hosts. Only a name
    the registry serves (spec.tls.dnsNames or ipAddresses, its Service names in its own namespace, the Ingress
    host; localhost or 127.0.0.1 only with its own node port) or one the operator's installer allows is
    published; a public registry (docker.io, ghcr.io, ...) only when the installer allows it by name. A host
    another registry holds stays with it. NodeTrustReady names every host left out and why."""
    targets: Annotated[
        list[Literal["docker", "containerd", "crio"]], pydantic.Field(min_length=1, max_length=3)
    ] = ["docker", "containerd", "crio"]
    """Runtimes whose certs.d directories get the CA."""


class PullSecrets(_Model):
    """Image pull Secrets (kubernetes.io/dockerconfigjson) for one registry user, in chosen namespaces."""

    user: Annotated[str, pydantic.StringConstraints(pattern=USER_NAME_PATTERN, max_length=128)]
    """The spec.auth.users entry whose credentials the Secrets carry (kept in sync with its password)."""
    secret_name: (
        Annotated[str, pydantic.StringConstraints(pattern=RESOURCE_NAME_PATTERN, max_length=253)] | None
    ) = None
    """Name of the Secret in each namespace; default <registry>-pull."""
    namespaces: Annotated[
        list[Annotated[str, pydantic.StringConstraints(pattern=RESOURCE_NAME_PATTERN, max_length=63)]],
        pydantic.Field(max_length=256),
    ] = []
    """Namespaces that get the Secret: this registry's own, and others only if labelled
    pull-secrets-from.dockyard.dev/<this namespace>: "true" (Degraded names any listed one that is not)."""
    namespace_selector: dict[str, str] | None = None
    """Also every namespace carrying all of these labels (matchLabels semantics) that opted in likewise."""
    service_account: (
        Annotated[str, pydantic.StringConstraints(pattern=RESOURCE_NAME_PATTERN, max_length=253)] | None
    ) = None
    """Add the Secret to this ServiceAccount's imagePullSecrets in each namespace (e.g. default)."""


class PrivateRegistrySpec(_Model):
    """Desired state of a private OCI registry."""

    replicas: Annotated[int, pydantic.Field(ge=0, le=20)] = 1
    """Number of registry pods; more than one needs ReadWriteMany storage."""
    image: str | None = None
    """Registry image; empty uses the operator's default."""
    resources: ResourceRequirements | None = None
    """Compute resources of the registry container."""
    node_selector: dict[str, str] | None = None
    """Node labels the registry pods must match."""
    tolerations: list[Toleration] | None = None
    """Tolerations of the registry pods."""
    affinity: FreeformObject | None = None
    """Affinity of the registry pods (core/v1 Affinity)."""
    storage: Storage = Storage()
    """Where images are stored."""
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


# --------------------------------------------------------------------------------------------- status


class Condition(_Model):
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


class CaStatus(_Model):
    """The CA clients must trust."""

    secret_name: str | None = None
    """Secret holding ca.crt (the TLS Secret; the CA key lives in a separate Secret)."""
    fingerprint_sha256: str | None = None
    """SHA-256 fingerprint of the CA certificate (hex, colon separated)."""
    not_after: datetime.datetime | None = None
    """When the CA expires."""


class CertificateStatus(_Model):
    """The serving certificate."""

    secret_name: str | None = None
    """Secret holding tls.crt and tls.key."""
    not_after: datetime.datetime | None = None
    """When the certificate expires."""
    dns_names: list[str] | None = None
    """DNS names in the certificate."""
    ip_addresses: list[str] | None = None
    """IP addresses in the certificate."""


class NodeTrustStatus(_Model):
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


class PrivateRegistryStatus(_Model):
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
