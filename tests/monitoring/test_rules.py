"""The chart's alerting rules (charts/dockyard/files/rules.yaml), checked and unit-tested by promtool.

Covers:
- `promtool check rules` accepts the file;
- `promtool test rules` passes tests/monitoring/rules_test.yaml, which has, for every alert of the file, a
  case where it fires and one where it does not (checked here, so a new alert without tests fails);
- the four alerts the issue asks for exist: storage almost full, certificate expiring in < 14 days,
  NodeTrustReady False for 15 minutes, the 5xx ratio.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.monitoring import conftest
from tests.monitoring.conftest import RULE_TESTS, RULES

ALERTS = {
    "DockyardRegistryStorageAlmostFull",
    "DockyardCertificateExpiringSoon",
    "DockyardNodeTrustNotReady",
    "DockyardRegistryHighServerErrorRate",
}


def alerts() -> dict[str, dict[str, object]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def test_the_issues_alerts_exist_with_their_thresholds() -> None:
    found = alerts()
    assert set(found) == ALERTS
    assert found["DockyardNodeTrustNotReady"]["for"] == "15m"
    assert "14 * 86400" in str(found["DockyardCertificateExpiringSoon"]["expr"])
    assert 'status=~"5.."' in str(found["DockyardRegistryHighServerErrorRate"]["expr"])


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases = [
        case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]
    ]
    for name in alerts():
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in mine), f"{name} never fires in {RULE_TESTS.name}"
        assert any(not case["exp_alerts"] for case in mine), f"{name} never stays quiet in {RULE_TESTS.name}"


def test_promtool_check_rules_accepts_the_file(promtool: Path) -> None:
    checked = conftest.run_promtool(promtool, "check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_promtool_test_rules_passes(promtool: Path) -> None:
    checked = conftest.run_promtool(promtool, "test", "rules", str(RULE_TESTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
