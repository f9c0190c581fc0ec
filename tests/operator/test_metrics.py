"""The operator's Prometheus metrics, from real passes over the in-memory API stand-in.

Covers:
- a pass times every step and the whole pass, and mirrors the registry's status: readiness, each condition,
  CA and server certificate expiry as Unix time (equal to status' notAfter);
- a blocked pass (a missing password Secret) counts an error with the Degraded reason and reports not ready;
- a step that raises is counted by the error's type and still timed;
- node trust's counts (desired, ready, trusting) become series, and a registry's series go when it is deleted
  or no longer reports them;
- the listener serves the exposition over HTTP on the address asked for and stops;
- DOCKYARD_METRICS_LISTEN / --metrics-listen: host:port (IPv6 in brackets) or off; a bad value is an error
  (the CLI exits 2).
"""

from __future__ import annotations

import datetime
import urllib.request

import pytest

from dockyard_operator import cli, metrics, model, names, reconcile, settings
from tests.operator import fakes
from tests.operator.test_reconcile import PASSWORDS, USERS, Clock, create, run

STEPS = ("credentials", "tls", "ca_rotation", "children", "trust", "exposure", "status", "pass")


@pytest.fixture
def api() -> fakes.FakeKube:
    api = fakes.FakeKube()
    api.put(fakes.password_secret("alice-pw", PASSWORDS["alice"]))
    api.put(fakes.password_secret("bob-pw", PASSWORDS["bob"], key="pw"))
    return api


@pytest.fixture
def measures() -> metrics.OperatorMetrics:
    return metrics.OperatorMetrics()


@pytest.fixture
def reconciler(api: fakes.FakeKube, measures: metrics.OperatorMetrics) -> reconcile.Reconciler:
    return reconcile.Reconciler(
        client=api,  # type: ignore[arg-type]  # duck-typed stand-in
        config=settings.Settings(bcrypt_rounds=4, registry_image="registry:test"),
        clock=Clock(),
        measures=measures,
    )


def value(measures: metrics.OperatorMetrics, name: str, **labels: str) -> float | None:
    return measures.registry.get_sample_value(name, labels)


def when(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def test_a_pass_times_every_step_and_mirrors_status(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler, measures: metrics.OperatorMetrics
) -> None:
    create(api)
    await run(reconciler)
    for step in STEPS:
        count = value(measures, "dockyard_operator_reconcile_duration_seconds_count", step=step)
        assert count is not None and count >= 1, step
    status = api.obj(names.KIND, "demo")["status"]
    where = {"namespace": "ns", "registry": "demo"}
    assert value(measures, "dockyard_operator_registry_ready", **where) == 0.0  # no available replica yet
    for cond in status["conditions"]:
        expected = 1.0 if cond["status"] == "True" else 0.0
        got = value(measures, "dockyard_operator_registry_condition", **where, condition=cond["type"])
        assert got == expected, cond["type"]
    expiry = "dockyard_operator_certificate_expiry_timestamp_seconds"
    assert value(measures, expiry, **where, certificate="ca") == when(status["ca"]["notAfter"])
    assert value(measures, expiry, **where, certificate="server") == when(status["certificate"]["notAfter"])
    assert (
        value(measures, "dockyard_operator_reconcile_errors_total", step="pass", reason="SecretNotFound")
        is None
    )


async def test_a_blocked_pass_counts_an_error_with_its_reason(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler, measures: metrics.OperatorMetrics
) -> None:
    create(api)
    await run(reconciler)
    api.remove("Secret", "bob-pw")
    await run(reconciler)
    errors = value(measures, "dockyard_operator_reconcile_errors_total", step="pass", reason="SecretNotFound")
    assert errors == 1.0
    assert value(measures, "dockyard_operator_registry_ready", namespace="ns", registry="demo") == 0.0
    degraded = value(
        measures,
        "dockyard_operator_registry_condition",
        namespace="ns",
        registry="demo",
        condition="Degraded",
    )
    assert degraded == 1.0


async def test_a_deleted_registry_loses_its_series(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler, measures: metrics.OperatorMetrics
) -> None:
    body = create(api, {"auth": {"users": USERS}})
    await run(reconciler)
    assert value(measures, "dockyard_operator_registry_ready", namespace="ns", registry="demo") is not None
    await reconciler.forget(body=body)
    assert value(measures, "dockyard_operator_registry_ready", namespace="ns", registry="demo") is None
    assert b'registry="demo"' not in measures.exposition()


def test_a_step_that_raises_is_counted_by_type_and_timed(measures: metrics.OperatorMetrics) -> None:
    class Unavailable(Exception):
        pass

    with pytest.raises(Unavailable), measures.step("children"):
        raise Unavailable("API server down")
    assert (
        value(measures, "dockyard_operator_reconcile_errors_total", step="children", reason="Unavailable")
        == 1
    )
    assert value(measures, "dockyard_operator_reconcile_duration_seconds_count", step="children") == 1


def test_node_trust_counts_become_series_and_vanish_when_no_longer_reported(
    measures: metrics.OperatorMetrics,
) -> None:
    trusting = model.PrivateRegistryStatus(node_trust=model.NodeTrustStatus(desired=3, ready=3, trusting=2))
    measures.observe(namespace="ns", name="demo", status=trusting)
    for state, count in (("desired", 3), ("ready", 3), ("trusting", 2)):
        got = value(
            measures, "dockyard_operator_node_trust_nodes", namespace="ns", registry="demo", state=state
        )
        assert got == count
    measures.observe(namespace="ns", name="demo", status=model.PrivateRegistryStatus())
    got = value(
        measures, "dockyard_operator_node_trust_nodes", namespace="ns", registry="demo", state="trusting"
    )
    assert got is None


def test_the_listener_serves_the_exposition_and_stops(measures: metrics.OperatorMetrics) -> None:
    measures.observe(namespace="ns", name="demo", status=model.PrivateRegistryStatus())
    server = metrics.serve(measures, host="127.0.0.1", port=0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as response:
            body = response.read().decode()
        assert response.status == 200
        assert 'dockyard_operator_registry_ready{namespace="ns",registry="demo"} 0.0' in body
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("text", "address"),
    [("0.0.0.0:8081", ("0.0.0.0", 8081)), ("[::]:9000", ("::", 9000)), ("", None)],  # noqa: S104
)
def test_the_metrics_address_comes_from_the_environment(text: str, address: tuple[str, int] | None) -> None:
    assert settings.Settings.from_env({"DOCKYARD_METRICS_LISTEN": text}).metrics_address == address


@pytest.mark.parametrize("text", ["8081", "host:", ":8081", "host:http", "0.0.0.0:70000"])
def test_a_bad_metrics_address_is_refused(text: str) -> None:
    with pytest.raises(settings.SettingsError, match="DOCKYARD_METRICS_LISTEN"):
        settings.Settings.from_env({"DOCKYARD_METRICS_LISTEN": text})


def test_the_cli_exits_2_on_a_bad_metrics_address(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOCKYARD_METRICS_LISTEN", "")  # undone after the test, whatever the CLI sets
    assert cli.main(["--metrics-listen", "nowhere"]) == 2
    assert "DOCKYARD_METRICS_LISTEN" in capsys.readouterr().err
