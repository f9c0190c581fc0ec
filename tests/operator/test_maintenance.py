"""spec.maintenance and the day-2 storage fields: model, the retention ConfigMap, the registry's arguments.

Covers:
- the defaults (gc daily at 03:17 UTC, grace 1h, only unreferenced blobs; 85 % full warns, 95 % refuses);
- schedules are checked with the registry's own parser (a bad one names the field), retention rules need
  keepLast or keepWithin, almostFullPercent may not exceed maxFillPercent;
- the retention file is in the registry's grammar (its own parser reads back the same rules) and is stable;
- `serve` gets --gc-* and --storage-max-fill; suspend gives no --gc-* at all; the file is mounted read-only
  and kept out of the config hash (the registry re-reads it), while the schedule rolls the pod (its args);
- deletionPolicy: Retain (default) labels the claim and gives it no owner reference; Delete owns it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pydantic
import pytest

from dockyard_operator import builders, model, names
from dockyard_operator.builders import deployment, inputs, maintenance_configmap, pvc
from dockyard_registry import retention
from tests.operator.test_builders import container, make_inputs, mounts, volumes


def args(spec: dict[str, Any]) -> list[str]:
    return list(container(deployment.build(make_inputs(spec)), "registry")["args"])


def test_defaults_collect_daily_only_unreferenced_blobs_and_refuse_pushes_above_95_percent() -> None:
    spec = model.parse_spec({})
    assert spec.maintenance.schedule == "17 3 * * *" and not spec.maintenance.suspend
    assert spec.maintenance.grace_period == "1h" and not spec.maintenance.delete_untagged
    assert spec.maintenance.retention is None and not spec.maintenance.dry_run
    assert (spec.storage.almost_full_percent, spec.storage.max_fill_percent) == (85, 95)
    assert spec.storage.effective_pvc.deletion_policy == "Retain"


@pytest.mark.parametrize(
    ("maintenance", "field"),
    [
        ({"schedule": "61 3 * * *"}, "spec.maintenance.schedule"),
        ({"schedule": "@fortnightly"}, "spec.maintenance.schedule"),
        ({"schedule": "* * * *"}, "spec.maintenance.schedule"),
        ({"gracePeriod": "1h30m"}, "spec.maintenance.gracePeriod"),
        ({"retention": [{"repositories": ["team/**"]}]}, "spec.maintenance.retention.0"),
        ({"retention": [{"repositories": [], "keepLast": 1}]}, "spec.maintenance.retention.0.repositories"),
        (
            {"retention": [{"repositories": ["Team"], "keepLast": 1}]},
            "spec.maintenance.retention.0.repositories",
        ),
        (
            {"retention": [{"repositories": ["a"], "keepWithin": "7 days"}]},
            "spec.maintenance.retention.0.keepWithin",
        ),
    ],
)
def test_invalid_maintenance_is_refused_naming_the_field(maintenance: dict[str, Any], field: str) -> None:
    with pytest.raises(pydantic.ValidationError) as raised:
        model.parse_spec({"maintenance": maintenance})
    assert field in model.spec_error_message(raised.value)


@pytest.mark.parametrize("schedule", ["0 */6 * * *", "@daily", "@every 12h", "0 4 * * SUN"])
def test_schedules_the_registry_accepts_are_accepted(schedule: str) -> None:
    assert model.parse_spec({"maintenance": {"schedule": schedule}}).maintenance.schedule == schedule


def test_almost_full_may_not_exceed_max_fill() -> None:
    with pytest.raises(pydantic.ValidationError) as raised:
        model.parse_spec({"storage": {"almostFullPercent": 90, "maxFillPercent": 80}})
    assert "almostFullPercent must not be above maxFillPercent" in model.spec_error_message(raised.value)


def test_retention_file_is_the_registrys_grammar_and_keeps_what_the_rules_say() -> None:
    spec = model.parse_spec(
        {
            "maintenance": {
                "retention": [
                    {"repositories": ["team/**"], "tags": ["v*"], "keepLast": 2},
                    {"repositories": ["**"], "keepWithin": "7d"},
                ]
            }
        }
    )
    text = maintenance_configmap.render(spec.maintenance)
    assert text == maintenance_configmap.render(spec.maintenance)  # stable bytes, no needless writes
    policy = retention.parse(text)
    assert policy.rules[0] == retention.Rule(repositories=("team/**",), tags=("v*",), keep_last=2)
    assert policy.rules[1].keep_within == 7 * 86400 and policy.rules[1].tags == ("*",)
    now = time.time()
    pushed = {"v1": now - 30 * 86400, "v2": now - 20 * 86400, "v3": now - 10 * 86400, "dev": now - 9 * 86400}
    assert policy.kept("team/app", pushed, now=now) == {"v2", "v3"}


def test_no_rules_is_an_empty_rule_list_that_keeps_every_tag() -> None:
    text = maintenance_configmap.render(model.parse_spec({}).maintenance)
    assert json.loads(text) == {"rules": []}
    assert retention.parse(text).kept("any/repo", {"a": 0.0}, now=1.0) == {"a"}


def test_maintenance_configmap_is_named_and_labelled_like_the_other_children() -> None:
    cm = maintenance_configmap.build(make_inputs())
    assert cm["metadata"]["name"] == "demo-maintenance"
    assert cm["metadata"]["labels"][names.LABEL_COMPONENT] == "maintenance"
    assert set(cm["data"]) == {"retention.json"}


def test_gc_switches_become_serve_arguments() -> None:
    got = args(
        {
            "maintenance": {
                "schedule": "@every 6h",
                "gracePeriod": "2d",
                "deleteUntagged": True,
                "dryRun": True,
            },
            "storage": {"maxFillPercent": 70, "almostFullPercent": 60},
        }
    )
    tail = got[got.index("--storage-max-fill") :]
    assert tail == [
        "--storage-max-fill", "70", "--gc-schedule", "@every 6h", "--gc-grace", "2d",
        "--gc-retention", "/etc/dockyard/maintenance/retention.json", "--gc-delete-untagged", "--gc-dry-run",
    ]  # fmt: skip


def test_suspended_maintenance_passes_no_gc_arguments() -> None:
    got = args({"maintenance": {"suspend": True, "deleteUntagged": True, "dryRun": True}})
    assert not [a for a in got if a.startswith("--gc-")]
    assert "--storage-max-fill" in got


def test_registry_mounts_the_retention_file_read_only() -> None:
    dep = deployment.build(make_inputs())
    assert mounts(container(dep, "registry"))["maintenance"] == {
        "name": "maintenance",
        "mountPath": "/etc/dockyard/maintenance",
        "readOnly": True,
    }
    assert volumes(dep)["maintenance"] == {"name": "maintenance", "configMap": {"name": "demo-maintenance"}}
    assert "maintenance" not in mounts(container(dep, "nginx"))


def test_retention_changes_do_not_roll_the_pod_but_the_schedule_does() -> None:
    def template(spec: dict[str, Any]) -> dict[str, Any]:
        return dict(deployment.build(make_inputs(spec))["spec"]["template"])

    base = template({})
    rules = template({"maintenance": {"retention": [{"repositories": ["**"], "keepLast": 3}]}})
    assert rules == base  # the registry re-reads the mounted file before each run
    assert template({"maintenance": {"schedule": "@daily"}}) != base


def test_retained_claim_is_labelled_and_gets_no_owner_reference() -> None:
    owner = inputs.Owner(name="demo", namespace="ns", uid="u-1")
    claim = pvc.build(make_inputs())
    assert claim["metadata"]["labels"][names.RETAINED_FROM] == "demo"
    assert builders.retained(claim)
    placed = builders.adopt(claim, owner=owner)
    assert placed["metadata"]["namespace"] == "ns" and "ownerReferences" not in placed["metadata"]


def test_claim_with_delete_policy_is_owned_by_the_registry() -> None:
    owner = inputs.Owner(name="demo", namespace="ns", uid="u-1")
    claim = pvc.build(make_inputs({"storage": {"pvc": {"deletionPolicy": "Delete"}}}))
    assert names.RETAINED_FROM not in claim["metadata"]["labels"] and not builders.retained(claim)
    refs = builders.adopt(claim, owner=owner)["metadata"]["ownerReferences"]
    assert [(r["uid"], r["controller"]) for r in refs] == [("u-1", True)]
