"""Status conditions and their reasons.

Covers: lastTransitionTime is kept when only reason/message change and moves when the status flips; other
conditions are untouched; the order of condition types is stable; `conditions.Reason` has unique CamelCase
values; no reason is spelled as a string literal anywhere in the operator package (a source scan), and every
`reason` field of a verdict, problem or event is typed as a `Reason`.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime
import importlib
import pathlib
import pkgutil
import re
import typing

import dockyard_operator
from dockyard_operator import conditions
from dockyard_operator.conditions import Reason

PACKAGE = pathlib.Path(dockyard_operator.__file__).parent
CAMEL_CASE = re.compile(r"^[A-Z][A-Za-z0-9]*$")

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


def test_every_reason_value_is_unique_and_camel_case() -> None:
    values = [member.value for member in Reason]
    assert len(values) == len(set(values))
    assert [v for v in values if not CAMEL_CASE.match(v)] == []


def _literal(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _is_reason(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id == "reason") or (
        isinstance(node, ast.Attribute) and node.attr == "reason"
    )


def spelled_reasons(source: str) -> list[tuple[int, str]]:
    """(line, literal) of every reason written as a string: passed as `reason=`, passed positionally with the
    value of a `Reason` member, or compared with something called `reason`."""
    known = {member.value for member in Reason}
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                text = _literal(keyword.value)
                if keyword.arg == "reason" and text is not None:
                    found.append((keyword.value.lineno, text))
            for arg in node.args:
                text = _literal(arg)
                if text in known:
                    found.append((arg.lineno, text))
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(_is_reason(o) for o in operands):
                items = [
                    e
                    for o in operands
                    for e in (o.elts if isinstance(o, ast.Tuple | ast.List | ast.Set) else [o])
                ]
                found += [(e.lineno, t) for e in items if (t := _literal(e)) is not None]
    return found


def test_the_source_scan_finds_reasons_spelled_as_strings() -> None:
    source = """
Verdict(False, "NameConflict", "taken")
put(conds, reason="Anything", message="")
if verdict.reason == "Installing": pass
if reason in ("Expired", "Valid"): pass
"""
    assert [line for line, _ in spelled_reasons(source)] == [2, 3, 4, 5, 5]
    assert spelled_reasons('Verdict(False, Reason.NAME_CONFLICT, "taken")\nkind == "Secret"') == []


def test_no_reason_is_spelled_as_a_string_in_the_operator_package() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE)}:{line}: {text!r}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "conditions.py"  # where the members are defined
        for line, text in spelled_reasons(path.read_text())
    ]
    assert offenders == []


def test_every_reason_field_is_typed_as_a_reason() -> None:
    fields: dict[str, object] = {}
    for info in pkgutil.walk_packages(dockyard_operator.__path__, prefix="dockyard_operator."):
        if info.name.endswith(".__main__"):
            continue  # runs the operator
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if isinstance(value, type) and dataclasses.is_dataclass(value) and value.__module__ == info.name:
                hints = typing.get_type_hints(value)
                if "reason" in hints:
                    fields[f"{info.name}.{name}"] = hints["reason"]
    assert "dockyard_operator.policies.Verdict" in fields
    assert "dockyard_operator.reconcile.context.Problem" in fields
    assert {where: hint for where, hint in fields.items() if hint is not Reason} == {}
