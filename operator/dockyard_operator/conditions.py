"""Status conditions (metav1.Condition semantics) as pure list transformations.

Owns: setting a condition so that `lastTransitionTime` only moves when the status flips (a new reason or
message alone is not a transition), a stable order of condition types, and lookups.
Must not: read the clock itself (callers pass `now`), or know why a condition is set.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from dockyard_operator import model

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
CERTIFICATE_READY = "CertificateReady"
STORAGE_READY = "StorageReady"
NODE_TRUST_READY = "NodeTrustReady"
ORDER = (READY, PROGRESSING, DEGRADED, CERTIFICATE_READY, STORAGE_READY, NODE_TRUST_READY)

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


def sort(conditions: Sequence[model.Condition]) -> list[model.Condition]:
    """Known types in a fixed order first, then any others by name: stable status, no spurious writes."""
    rank = {name: index for index, name in enumerate(ORDER)}
    return sorted(conditions, key=lambda c: (rank.get(c.type, len(ORDER)), c.type))
