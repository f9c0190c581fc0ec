"""The metric names the chart's alerts and dashboard use are ones the code exports, and the expositions pass
`promtool check metrics`.

Covers:
- every `dockyard_*` name in charts/dockyard/files/rules.yaml and in files/dashboard.json has samples in the
  real exposition of the registry or of the operator (a renamed metric fails here, not in production);
- the dashboard is valid JSON, has a datasource variable, and every panel queries Prometheus through it;
- `promtool check metrics` accepts the registry's and the operator's real /metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.monitoring import conftest
from tests.monitoring.conftest import DASHBOARD, RULES


def rule_names() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {name for group in groups for rule in group["rules"] for name in conftest.used_names(rule["expr"])}


def dashboard_names() -> set[str]:
    return {
        name
        for expr in conftest.expressions(json.loads(DASHBOARD.read_text()))
        for name in conftest.used_names(expr)
    }


def test_every_metric_the_rules_and_dashboard_use_is_exported(
    registry_exposition: bytes, operator_exposition: bytes
) -> None:
    exported = conftest.sample_names(registry_exposition) | conftest.sample_names(operator_exposition)
    used = rule_names() | dashboard_names()
    assert len(used) >= 15  # the extraction found the names (a broken regex would pass vacuously)
    assert sorted(used - exported) == []


def test_the_dashboard_queries_prometheus_through_its_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]


def test_promtool_accepts_the_registrys_metrics(promtool: Path, registry_exposition: bytes) -> None:
    checked = conftest.run_promtool(promtool, "check", "metrics", stdin=registry_exposition)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_promtool_accepts_the_operators_metrics(promtool: Path, operator_exposition: bytes) -> None:
    checked = conftest.run_promtool(promtool, "check", "metrics", stdin=operator_exposition)
    assert checked.returncode == 0, checked.stdout + checked.stderr
