"""The chart's monitoring objects, rendered by `helm template` (no cluster).

Covers:
- by default the operator serves metrics (DOCKYARD_METRICS_LISTEN, a `metrics` container port and a ClusterIP
  Service on it) and the chart ships no ServiceMonitor, PrometheusRule or dashboard (they need CRDs or a
  Grafana that may not exist);
- operatorMetricsPort 0 turns the operator's metrics off entirely;
- enabled: the registries' ServiceMonitor selects the operator-made `<registry>-metrics` Services by label in
  every namespace (or only the watched ones) on the port the operator names; the operator's ServiceMonitor
  selects its Service; the PrometheusRule carries exactly files/rules.yaml's groups (the file promtool tests);
  the dashboard ConfigMap carries files/dashboard.json under the sidecar's label, in the namespace asked for;
- a bad value (an interval without unit) is refused by the schema.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from dockyard_operator import names
from dockyard_operator.builders import metrics_service
from tests.integration.install import chart
from tests.monitoring.conftest import DASHBOARD, RULES

ALL_ON = [
    "monitoring.serviceMonitor.enabled=true",
    "monitoring.prometheusRule.enabled=true",
    "monitoring.dashboard.enabled=true",
]


def kinds(docs: list[dict[str, Any]]) -> set[str]:
    return {d["kind"] for d in docs}


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = chart.only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_by_default_the_operator_serves_metrics_and_nothing_needs_a_prometheus_crd() -> None:
    docs = chart.render()
    assert not kinds(docs) & {"ServiceMonitor", "PrometheusRule"}
    assert not [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
    container = operator_container(docs)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DOCKYARD_METRICS_LISTEN"] == "0.0.0.0:8081"
    assert {"name": "metrics", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    service = chart.only(docs, "Service", "dockyard-operator-metrics")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8081, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod_labels = chart.only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_port_zero_turns_the_operators_metrics_off() -> None:
    docs = chart.render(set_values=["monitoring.operatorMetricsPort=0", *ALL_ON])
    container = operator_container(docs)
    assert "DOCKYARD_METRICS_LISTEN" not in {e["name"] for e in container["env"]}
    assert [p["name"] for p in container["ports"]] == ["health"]
    assert not [d for d in docs if d["kind"] == "Service"]
    monitors = [d["metadata"]["name"] for d in docs if d["kind"] == "ServiceMonitor"]
    assert monitors == ["dockyard-registries"]  # the registries still have theirs


def test_the_registries_service_monitor_selects_what_the_operator_creates() -> None:
    docs = chart.render(set_values=[*ALL_ON, "monitoring.serviceMonitor.labels.release=prom"])
    monitor = chart.only(docs, "ServiceMonitor", "dockyard-registries")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    selector = monitor["spec"]["selector"]["matchLabels"]
    # What the operator's metrics Service builder puts on every <registry>-metrics Service.
    made = names.labels("r", component=metrics_service.COMPONENT)
    assert selector.items() <= made.items()
    assert selector[names.LABEL_COMPONENT] == "metrics"
    assert monitor["spec"]["endpoints"] == [
        {"port": names.METRICS_PORT_NAME, "path": "/metrics", "interval": "30s"}
    ]
    operator = chart.only(docs, "ServiceMonitor", "dockyard-operator")
    service = chart.only(docs, "Service", "dockyard-operator-metrics")
    assert operator["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert operator["spec"]["endpoints"][0]["port"] == "metrics"


def test_with_watched_namespaces_the_service_monitor_looks_only_there() -> None:
    docs = chart.render(set_values=[*ALL_ON, "watchNamespaces={team-a,team-b}"])
    monitor = chart.only(docs, "ServiceMonitor", "dockyard-registries")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}


def test_the_prometheus_rule_is_the_rules_file() -> None:
    docs = chart.render(set_values=ALL_ON)
    rule = chart.only(docs, "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    # Prometheus' own templates in annotations reach it untouched by helm.
    assert "{{ $labels.namespace }}" in json.dumps(rule["spec"])


def test_the_dashboard_configmap_carries_the_json_for_the_sidecar() -> None:
    docs = chart.render(set_values=[*ALL_ON, "monitoring.dashboard.namespace=grafana"])
    (config,) = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "dockyard-dashboard"
    ]
    assert config["metadata"]["namespace"] == "grafana"
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config["data"]["dockyard.json"]) == json.loads(DASHBOARD.read_text())


def test_a_bad_monitoring_value_is_refused() -> None:
    done = chart.helm(
        "template",
        "x",
        str(chart.CHART),
        "--kube-version",
        chart.KUBE_VERSION,
        "--set",
        "monitoring.serviceMonitor.interval=soon",
        check=False,
    )
    assert done.returncode != 0
    assert "interval" in done.stderr
