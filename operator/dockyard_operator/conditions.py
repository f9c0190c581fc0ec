"""Status conditions (metav1.Condition semantics) as pure list transformations.

Owns: setting a condition so that `lastTransitionTime` only moves when the status flips (a new reason or
message alone is not a transition), a stable order of condition types, and lookups.
Also `Reason`: the reasons the reconciler sets or matches, named once (a `StrEnum`, so a reason read back from
a live condition or returned by `policies` compares equal to its member).
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
ORDER = (READY, PROGRESSING, DEGRADED, CERTIFICATE_READY, STORAGE_READY, NODE_TRUST_READY)


class Reason(enum.StrEnum):
    """Condition and Event reasons the reconciler sets itself or decides on (`policies` return the rest)."""

    INVALID_SPEC = "InvalidSpec"
    SECRET_NOT_FOUND = "SecretNotFound"  # noqa: S105  # a reason, not a password
    SECRET_KEY_MISSING = "SecretKeyMissing"  # noqa: S105  # a reason, not a password
    SECRET_INCOMPLETE = "SecretIncomplete"  # noqa: S105  # a reason, not a password
    INVALID_PASSWORD = "InvalidPassword"  # noqa: S105  # a reason, not a password
    KEY_MISMATCH = "KeyMismatch"
    INVALID_CERTIFICATE = "InvalidCertificate"
    EXPIRED = "Expired"
    CA_EXPIRED = "CAExpired"
    NAMES_OUTSIDE_CA = "NamesOutsideCA"
    VALID = "Valid"
    NAME_CONFLICT = "NameConflict"
    CHILD_REJECTED = "ChildRejected"
    CLAIM_UPDATE_REJECTED = "ClaimUpdateRejected"
    CLAIM_LOST = "ClaimLost"
    STORAGE_NOT_SHARED = "StorageNotShared"
    FORBIDDEN = "Forbidden"
    APPLY_FAILED = "ApplyFailed"
    ROLLING_OUT = "RollingOut"
    SCALED_TO_ZERO = "ScaledToZero"
    RECONCILE_COMPLETE = "ReconcileComplete"
    AS_EXPECTED = "AsExpected"
    RECOVERED = "Recovered"
    NOT_CONFIGURED = "NotConfigured"
    PUBLISH_FAILED = "PublishFailed"
    PUBLISHING = "Publishing"
    HOSTING_NEEDS_NODE_PORT = "HostingNeedsNodePort"
    HOSTING_TAKEN = "HostingTaken"
    HOSTING_FAILED = "HostingFailed"
    PULL_SECRET_USER_UNKNOWN = "PullSecretUserUnknown"  # noqa: S105  # a reason, not a password
    PULL_SECRETS_FAILED = "PullSecretsFailed"
    STORAGE_OK = "StorageOK"
    STORAGE_ALMOST_FULL = "StorageAlmostFull"
    STORAGE_FULL = "StorageFull"
    STORAGE_NOT_WRITABLE = "StorageNotWritable"
    # Events
    CREATED = "Created"
    UPDATED = "Updated"
    DELETED = "Deleted"
    CA_CREATED = "CACreated"
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
    reason: str,
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
    reason: str,
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
