"""The `PrivateRegistry` API: pydantic models of spec and status, the single source of the CRD schema.

Owns: field names (camelCase on the wire), defaults, validation the schema can express (enums, patterns,
bounds, CEL rules in `x-kubernetes-validations`) and the same checks at parse time, so a spec that reached the
operator some other way (an older CRD) still fails with a readable message. Also the small pure helpers that
interpret fields (durations, which storage kind is in effect).
Must not: perform I/O, know about children, or import kopf/lightkube.

Field docstrings become the CRD descriptions (`kubectl explain preg.spec.tls` shows them), so they are written
for users of the API.

The models live in sections (`types`, `storage`, `access`, `serving`, `pods`, `maintenance`, `spec`,
`status`); this package re-exports them, so callers write `model.Tls`, `model.parse_spec`.
"""

from __future__ import annotations

from dockyard_operator.model.access import (
    Auth,
    OidcClaims,
    OidcIssuer,
    OidcRule,
    PullSecrets,
    SecretKeyRef,
    ServiceAccountRule,
    ServiceAccounts,
    User,
)
from dockyard_operator.model.maintenance import (
    AGE_PATTERN,
    DEFAULT_SCHEDULE,
    Maintenance,
    RetentionRule,
)
from dockyard_operator.model.mirrors import (
    Mirror,
    MirrorCa,
    MirrorCredentials,
)
from dockyard_operator.model.pods import NetworkPolicy
from dockyard_operator.model.serving import (
    Expose,
    Ingress,
    Nginx,
    NodeTrust,
    Tls,
)
from dockyard_operator.model.spec import (
    PrivateRegistrySpec,
    ResourceRequirements,
    Toleration,
    parse_spec,
    spec_error_message,
)
from dockyard_operator.model.status import (
    CaStatus,
    CertificateStatus,
    Condition,
    GcRunStatus,
    IdentityIssuerStatus,
    MaintenanceStatus,
    MirrorStatus,
    NodeTrustStatus,
    PrivateRegistryStatus,
    StorageStatus,
)
from dockyard_operator.model.storage import (
    CaBundleRef,
    EmptyDirStorage,
    PvcStorage,
    S3Credentials,
    S3Storage,
    Storage,
)
from dockyard_operator.model.types import (
    BUCKET_PATTERN,
    DNS_NAME_PATTERN,
    DURATION_PATTERN,
    HOST_PORT_PATTERN,
    IP_PATTERN,
    NGINX_SIZE_PATTERN,
    NGINX_TIME_PATTERN,
    OBJECT_PREFIX_PATTERN,
    QUANTITY_PATTERN,
    REGION_PATTERN,
    REPOSITORY_GLOB_PATTERN,
    RESOURCE_NAME_PATTERN,
    SECRET_KEY_PATTERN,
    URL_PATTERN,
    USER_NAME_PATTERN,
    ApiModel,
    Duration,
    FreeformObject,
    NginxTime,
    Quantity,
    parse_duration,
)

__all__ = [
    "AGE_PATTERN",
    "BUCKET_PATTERN",
    "DEFAULT_SCHEDULE",
    "DNS_NAME_PATTERN",
    "DURATION_PATTERN",
    "HOST_PORT_PATTERN",
    "IP_PATTERN",
    "NGINX_SIZE_PATTERN",
    "NGINX_TIME_PATTERN",
    "OBJECT_PREFIX_PATTERN",
    "QUANTITY_PATTERN",
    "REGION_PATTERN",
    "REPOSITORY_GLOB_PATTERN",
    "RESOURCE_NAME_PATTERN",
    "SECRET_KEY_PATTERN",
    "URL_PATTERN",
    "USER_NAME_PATTERN",
    "ApiModel",
    "Auth",
    "CaBundleRef",
    "CaStatus",
    "CertificateStatus",
    "Condition",
    "Duration",
    "EmptyDirStorage",
    "Expose",
    "FreeformObject",
    "GcRunStatus",
    "IdentityIssuerStatus",
    "Ingress",
    "Maintenance",
    "MaintenanceStatus",
    "Mirror",
    "MirrorCa",
    "MirrorCredentials",
    "MirrorStatus",
    "NetworkPolicy",
    "Nginx",
    "NginxTime",
    "NodeTrust",
    "NodeTrustStatus",
    "OidcClaims",
    "OidcIssuer",
    "OidcRule",
    "PrivateRegistrySpec",
    "PrivateRegistryStatus",
    "PullSecrets",
    "PvcStorage",
    "Quantity",
    "ResourceRequirements",
    "RetentionRule",
    "S3Credentials",
    "S3Storage",
    "SecretKeyRef",
    "ServiceAccountRule",
    "ServiceAccounts",
    "Storage",
    "StorageStatus",
    "Tls",
    "Toleration",
    "User",
    "parse_duration",
    "parse_spec",
    "spec_error_message",
]
