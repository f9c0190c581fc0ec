"""Status conditions (metav1.Condition semantics) as pure list transformations.

Owns: setting a condition so that `lastTransitionTime` only moves when the status flips (a new reason or
message alone is not a transition), a stable order of condition types, and lookups.
Also `Reason`: every reason the operator sets or matches (policies, tenancy, node trust, the reconcile steps),
named once; a `StrEnum`, so a reason read back from a live condition compares equal to its member.
Must not: read the clock itself (callers pass `now`), or know why a condition is set.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Sequence

from dockyard_operator import model

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
CERTIFICATE_READY = "CertificateReady"
STORAGE_READY = "StorageReady"
NODE_TRUST_READY = "NodeTrustReady"
MIRRORS_READY = "MirrorsReady"
ORDER = (READY, PROGRESSING, DEGRADED, CERTIFICATE_READY, STORAGE_READY, NODE_TRUST_READY, MIRRORS_READY)


@enum.unique
class Reason(enum.StrEnum):
    """Every condition and Event reason the operator sets or matches, named once.

    Policies return members, steps pass them on, status compares them: a reason is never spelled as a
    string outside this class (tests/operator/test_conditions.py scans the package). The values are what
    users see in `kubectl describe` and match on, so a value never changes once released.
    """

    # spec and referenced Secrets
    INVALID_SPEC = "InvalidSpec"
    SECRET_NOT_FOUND = "SecretNotFound"  # noqa: S105  # a reason, not a password
    SECRET_KEY_MISSING = "SecretKeyMissing"  # noqa: S105  # a reason, not a password
    SECRET_INCOMPLETE = "SecretIncomplete"  # noqa: S105  # a reason, not a password
    INVALID_PASSWORD = "InvalidPassword"  # noqa: S105  # a reason, not a password
    CONFIG_MAP_NOT_FOUND = "ConfigMapNotFound"
    CONFIG_MAP_KEY_MISSING = "ConfigMapKeyMissing"
    INVALID_CA_BUNDLE = "InvalidCABundle"
    # the CA (policies.ca_action)
    CA_PRESENT = "CAPresent"
    CA_CREATED = "CACreated"  # also the Event
    CA_INVALID = "CAInvalid"
    CA_KEY_MISSING = "CAKeyMissing"
    CA_EXPIRED = "CAExpired"
    NAMES_OUTSIDE_CA = "NamesOutsideCA"
    # the serving certificate (policies.server_cert_verdict, policies.byo_cert_verdict)
    VALID = "Valid"
    MISSING = "Missing"
    KEY_MISMATCH = "KeyMismatch"
    NOT_SIGNED_BY_CA = "NotSignedByCA"
    UNPARSEABLE = "Unparseable"
    CA_BUNDLE_OUTDATED = "CABundleOutdated"
    SANS_CHANGED = "SANsChanged"
    LIMITED_BY_CA = "LimitedByCA"
    EXPIRING = "Expiring"
    EXPIRED = "Expired"
    INVALID_CERTIFICATE = "InvalidCertificate"
    # children (policies.ownership_verdict, the children step)
    OWNED = "Owned"
    ADOPTED = "Adopted"
    NAME_CONFLICT = "NameConflict"
    CHILD_REJECTED = "ChildRejected"
    FORBIDDEN = "Forbidden"
    APPLY_FAILED = "ApplyFailed"
    # storage (policies.storage_verdict)
    EMPTY_DIR = "EmptyDir"
    OBJECT_STORAGE = "ObjectStorage"
    CLAIM_BOUND = "ClaimBound"
    CLAIM_PENDING = "ClaimPending"
    CLAIM_UPDATE_REJECTED = "ClaimUpdateRejected"
    CLAIM_LOST = "ClaimLost"
    STORAGE_NOT_SHARED = "StorageNotShared"
    # readiness (policies.deployment_verdict) and the pass as a whole
    DEPLOYMENT_MISSING = "DeploymentMissing"
    DEPLOYMENT_PROGRESSING = "DeploymentProgressing"
    DEPLOYMENT_NOT_AVAILABLE = "DeploymentNotAvailable"
    DEPLOYMENT_AVAILABLE = "DeploymentAvailable"
    ROLLING_OUT = "RollingOut"
    SCALED_TO_ZERO = "ScaledToZero"
    RECONCILE_COMPLETE = "ReconcileComplete"
    AS_EXPECTED = "AsExpected"
    RECOVERED = "Recovered"
    # tenancy (tenancy.ingress_annotations, tenancy.pull_secret_targets)
    ANNOTATIONS_ALLOWED = "AnnotationsAllowed"
    INGRESS_ANNOTATIONS_REFUSED = "IngressAnnotationsRefused"
    PULL_SECRET_TARGETS_ACCEPTED = "PullSecretTargetsAccepted"  # noqa: S105  # a reason, not a password
    PULL_SECRET_NAMESPACE_NOT_OPTED_IN = "PullSecretNamespaceNotOptedIn"  # noqa: S105  # a reason
    # exposure (KEP-1755 hosting, pull secrets)
    HOSTING_NEEDS_NODE_PORT = "HostingNeedsNodePort"
    HOSTING_TAKEN = "HostingTaken"
    HOSTING_FAILED = "HostingFailed"
    PULL_SECRET_USER_UNKNOWN = "PullSecretUserUnknown"  # noqa: S105  # a reason, not a password
    PULL_SECRETS_FAILED = "PullSecretsFailed"
    # token identities (the registry's /status)
    ISSUER_UNREACHABLE = "IssuerUnreachable"
    # node trust: which hosts a registry may claim (nodetrust.claims)
    ALLOWED = "Allowed"
    SERVED = "Served"
    NODE_PORT = "NodePort"
    PUBLIC_REGISTRY_HOST = "PublicRegistryHost"
    NOT_OWN_NODE_PORT = "NotOwnNodePort"
    FOREIGN_SERVICE_NAME = "ForeignServiceName"
    NOT_SERVED = "NotServed"
    # node trust: publishing (nodetrust.aggregate, nodetrust.controller, nodetrust.sources)
    NOT_CONFIGURED = "NotConfigured"
    PUBLISHING = "Publishing"
    PUBLISH_FAILED = "PublishFailed"
    NO_CA = "NoCA"
    HOST_REFUSED = "HostRefused"
    HOST_INVALID = "HostInvalid"
    HOST_CONFLICT = "HostConflict"
    CA_UNUSABLE = "CAUnusable"
    # node trust: mirrors wired into nodes' hosts.toml (nodetrust.aggregate)
    MIRROR_UNREACHABLE = "MirrorUnreachable"
    MIRROR_HOST_REFUSED = "MirrorHostRefused"
    MIRROR_HOST_CONFLICT = "MirrorHostConflict"
    MIRROR_INVALID = "MirrorInvalid"
    # node trust: what the nodes report (nodetrust.rotation.readiness)
    NO_HOSTS = "NoHosts"
    NO_NODES = "NoNodes"
    INSTALLING = "Installing"
    INSTALLED = "Installed"
    # storage health (reconcile.observe)
    STORAGE_OK = "StorageOK"
    STORAGE_ALMOST_FULL = "StorageAlmostFull"
    STORAGE_FULL = "StorageFull"
    STORAGE_NOT_WRITABLE = "StorageNotWritable"
    # pull-through mirrors (mirror_status.mirrors_verdict)
    MIRRORS_OK = "MirrorsOK"
    MIRRORS_UNOBSERVED = "MirrorsUnobserved"
    MIRROR_UPSTREAM_UNREACHABLE = "MirrorUpstreamUnreachable"
    MIRROR_UPSTREAM_AUTH_FAILED = "MirrorUpstreamAuthFailed"
    MIRROR_UPSTREAM_FAILED = "MirrorUpstreamFailed"
    MIRROR_CA_BUNDLE_INVALID = "MirrorCABundleInvalid"
    # Events only
    CREATED = "Created"
    UPDATED = "Updated"
    DELETED = "Deleted"
    CERTIFICATE_ISSUED = "CertificateIssued"
    CA_ROTATION_STARTED = "CARotationStarted"
    CA_ROTATED = "CARotated"
    GARBAGE_COLLECTED = "GarbageCollected"


BLOCKING_TLS_SECRET = frozenset(
    {
        Reason.SECRET_NOT_FOUND,
        Reason.SECRET_INCOMPLETE,
        Reason.KEY_MISMATCH,
        Reason.INVALID_CERTIFICATE,
        Reason.EXPIRED,
    }
)
"""Reasons a bring-your-own TLS Secret is unusable: they also make CertificateReady False."""
STORAGE_DEGRADING = frozenset(
    {
        Reason.STORAGE_NOT_SHARED,
        Reason.CLAIM_UPDATE_REJECTED,
        Reason.CLAIM_LOST,
        Reason.STORAGE_FULL,
        Reason.STORAGE_NOT_WRITABLE,
    }
)
"""Storage reasons that are a problem to fix (Degraded), not a state to wait out."""

TRUE = "True"
FALSE = "False"
UNKNOWN = "Unknown"


def find(conditions: Sequence[model.Condition], type_: str) -> model.Condition | None:
    """The condition of that type, if present."""
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: Sequence[model.Condition], type_: str) -> bool:
    found = find(conditions, type_)
    return found is not None and found.status == TRUE


def set_condition(
    conditions: Sequence[model.Condition],
    *,
    type_: str,
    status: str,
    reason: Reason,
    message: str,
    now: datetime.datetime,
    generation: int | None,
) -> list[model.Condition]:
    """A new list with the condition set; `lastTransitionTime` is kept unless `status` changes."""
    previous = find(conditions, type_)
    since = previous.last_transition_time if previous is not None and previous.status == status else now
    updated = model.Condition(
        type=type_,
        status=status,  # type: ignore[arg-type]  # validated by the model
        reason=reason,
        message=message,
        last_transition_time=since.replace(microsecond=0),
        observed_generation=generation,
    )
    others = [c for c in conditions if c.type != type_]
    return sort([*others, updated])


def put(
    conditions: Sequence[model.Condition],
    type_: str,
    ok: bool,
    reason: Reason,
    message: str,
    *,
    now: datetime.datetime,
    generation: int | None,
) -> list[model.Condition]:
    """`set_condition` for a boolean outcome: True when `ok`, else False."""
    return set_condition(
        conditions,
        type_=type_,
        status=TRUE if ok else FALSE,
        reason=reason,
        message=message,
        now=now,
        generation=generation,
    )


def sort(conditions: Sequence[model.Condition]) -> list[model.Condition]:
    """Known types in a fixed order first, then any others by name: stable status, no spurious writes."""
    rank = {name: index for index, name in enumerate(ORDER)}
    return sorted(conditions, key=lambda c: (rank.get(c.type, len(ORDER)), c.type))
