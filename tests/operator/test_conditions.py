"""Status conditions.

Covers: lastTransitionTime is kept when only reason/message change and moves when the status flips; other
conditions are untouched; the order of condition types is stable.
"""

from __future__ import annotations

import datetime

from dockyard_operator import conditions

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)


def _set(conds: list[conditions.model.Condition], status: str, reason: str, now: datetime.datetime):  # type: ignore[no-untyped-def]
    return conditions.set_condition(
        conds, type_=conditions.READY, status=status, reason=reason, message=reason, now=now, generation=1
    )


def test_transition_time_is_kept_when_only_the_reason_changes() -> None:
    first = _set([], "False", "A", T0)
    second = _set(first, "False", "B", T1)
    found = conditions.find(second, conditions.READY)
    assert found is not None and found.reason == "B" and found.last_transition_time == T0


def test_transition_time_moves_when_the_status_flips() -> None:
    second = _set(_set([], "False", "A", T0), "True", "A", T1)
    found = conditions.find(second, conditions.READY)
    assert found is not None and found.last_transition_time == T1


def test_setting_one_condition_leaves_the_others_and_keeps_a_stable_order() -> None:
    conds = conditions.set_condition(
        [], type_=conditions.STORAGE_READY, status="True", reason="X", message="", now=T0, generation=1
    )
    conds = conditions.set_condition(
        conds, type_=conditions.DEGRADED, status="False", reason="Y", message="", now=T0, generation=1
    )
    conds = _set(conds, "True", "Z", T0)
    assert [c.type for c in conds] == [conditions.READY, conditions.DEGRADED, conditions.STORAGE_READY]
    assert conditions.is_true(conds, conditions.STORAGE_READY)
