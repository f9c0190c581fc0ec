"""Prometheus metrics: what the registry counts, parsed back with prometheus_client's own parser.

Covers, over HTTP against the real app: requests by method, route class and status (unknown methods
and paths fold into `other`, so clients cannot grow the label set), latency histograms, body bytes
received and sent, uploads in flight back at zero, auth checks by outcome (cache hit, bcrypt miss,
wrong password), storage total/free/used/ready from the storage check, and gc runs, deletions and
freed bytes from the online gc runner. And through `serve --metrics-listen` as a real process:
/metrics, /gc and /status (storage capacity and readiness, gc) answer on the metrics address only (the
API port does not serve them), and a metrics address equal to the API address is a usage error (exit
2). When promtool is in the tools cache (`make test` builds it), `promtool check metrics` accepts the
exposition.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import test_utils
from prometheus_client import parser

from dockyard_registry import app, auth, cli, health, maintenance, metrics, schedule, state, store
from dockyard_registry.storage import filesystem
from tests.registry.conftest import OCI_MANIFEST, make_image, sha256
from tests.registry.test_gc_retention import age_everything, push_image
from tests.support import procs


def samples(exposition: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by (name, sorted labels)."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in parser.text_string_to_metric_families(exposition.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
async def measured(tmp_path: Path) -> AsyncIterator[tuple[test_utils.TestClient[Any, Any], metrics.Metrics]]:
    data = tmp_path / "data"
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"alice:{auth.hash_password('alice-pw', rounds=4)}\n")
    authenticator = auth.Authenticator(htpasswd=htpasswd, access=tmp_path / "access.yaml")
    st = store.Store(filesystem.FilesystemDriver(data))
    data.mkdir()
    monitor = health.StorageMonitor(data)
    monitor.refresh()
    runner = maintenance.GcRunner(
        st,
        maintenance.GcSettings(schedule=schedule.parse("@daily"), grace=3600, delete_untagged=True),
        status_file=None,
    )
    settings = state.Settings(store=st, authenticator=authenticator, storage=monitor, gc=runner)
    m = metrics.Metrics(metrics.Sources(authenticator=authenticator, storage=monitor, gc=runner))
    client = test_utils.TestClient(test_utils.TestServer(app.create_app(settings, metrics=m)))
    await client.start_server()
    yield client, m
    await client.close()


async def test_requests_latency_bytes_and_auth_are_counted(
    measured: tuple[test_utils.TestClient[Any, Any], metrics.Metrics],
) -> None:
    client, m = measured
    alice = basic("alice", "alice-pw")
    image = make_image()
    for blob in (image.config, image.layer):
        resp = await client.post(f"/v2/r/blobs/uploads/?digest={sha256(blob)}", data=blob, headers=alice)
        assert resp.status == 201
    resp = await client.put(
        "/v2/r/manifests/v1", data=image.manifest, headers={**alice, "Content-Type": OCI_MANIFEST}
    )
    assert resp.status == 201
    for _ in range(3):
        resp = await client.get("/v2/r/manifests/v1", headers={**alice, "Accept": OCI_MANIFEST})
        assert await resp.read() == image.manifest
    resp = await client.get(f"/v2/r/blobs/{sha256(image.layer)}", headers=alice)
    assert await resp.read() == image.layer
    assert (await client.get("/v2/r/manifests/v1", headers=basic("alice", "wrong"))).status == 401
    assert (await client.get("/v2/r/manifests/v1")).status == 401
    assert (await client.get("/v2/no/such/endpoint/x1", headers=alice)).status == 404
    assert (await client.get("/v2/no/such/endpoint/x2", headers=alice)).status == 404

    found = samples(m.exposition())
    total = "dockyard_registry_http_requests_total"
    assert value(found, total, method="POST", route="uploads", status="201") == 2
    assert value(found, total, method="PUT", route="manifests", status="201") == 1
    assert value(found, total, method="GET", route="manifests", status="200") == 3
    assert value(found, total, method="GET", route="manifests", status="401") == 2
    assert value(found, total, method="GET", route="blobs", status="200") == 1
    assert value(found, total, method="GET", route="other", status="404") == 2
    latency = "dockyard_registry_http_request_duration_seconds_count"
    assert value(found, latency, method="GET", route="manifests") == 5
    received, sent = (
        "dockyard_registry_http_request_bytes_total",
        "dockyard_registry_http_response_bytes_total",
    )
    assert value(found, received, route="uploads") == len(image.config) + len(image.layer)
    assert value(found, received, route="manifests") == len(image.manifest)
    # Three manifests, and the error bodies of the two 401s.
    assert value(found, sent, route="manifests") > 3 * len(image.manifest)
    assert value(found, sent, route="blobs") == len(image.layer)
    assert value(found, "dockyard_registry_uploads_in_flight") == 0
    checks = "dockyard_registry_auth_checks_total"
    assert value(found, checks, outcome="miss") == 2  # alice once, the wrong password once
    assert value(found, checks, outcome="hit") == 6  # her 7 requests that matched a route, but the first
    assert value(found, checks, outcome="failure") == 1


async def test_storage_and_gc_figures_are_scraped(
    measured: tuple[test_utils.TestClient[Any, Any], metrics.Metrics],
) -> None:
    _, m = measured
    runner = m_runner(m)
    st = runner.store
    old = make_image("old")
    await push_image(st, "r", old, tag="latest")
    await push_image(st, "r", make_image("new"), tag="latest")
    assert isinstance(st.driver, filesystem.FilesystemDriver)
    age_everything(st.driver, st, 7200)
    runner.run_once()

    found = samples(m.exposition())
    assert value(found, "dockyard_registry_storage_ready") == 1
    total = value(found, "dockyard_registry_storage_total_bytes")
    free = value(found, "dockyard_registry_storage_free_bytes")
    assert total > 0 and 0 <= free <= total
    assert value(found, "dockyard_registry_storage_used_bytes") == total - free
    assert value(found, "dockyard_registry_gc_runs_total") == 1
    assert value(found, "dockyard_registry_gc_deferred_runs_total") == 0
    assert value(found, "dockyard_registry_gc_deleted_total", kind="manifests") == 1
    assert value(found, "dockyard_registry_gc_deleted_total", kind="blobs") == 3
    freed = len(old.manifest) + len(old.config) + len(old.layer)
    assert value(found, "dockyard_registry_gc_freed_bytes_total") == freed
    assert value(found, "dockyard_registry_gc_last_run_freed_bytes") == freed
    assert value(found, "dockyard_registry_gc_last_run_errors") == 0
    assert value(found, "dockyard_registry_gc_last_run_timestamp_seconds") > time.time() - 60


def m_runner(m: metrics.Metrics) -> maintenance.GcRunner:
    assert m.sources.gc is not None
    return m.sources.gc


def _get(url: str) -> tuple[int, bytes, str]:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - test URL
                return resp.status, resp.read(), resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), ""
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_serve_exposes_metrics_and_gc_on_the_metrics_address_only(tmp_path: Path) -> None:
    reserved = procs.reserve_port(), procs.reserve_port()  # held for the test's lifetime
    port, metrics_port = reserved[0].number, reserved[1].number
    exe = Path(sys.executable).parent / "dockyard-registry"
    argv = [str(exe), "serve", "--data-dir", str(tmp_path / "data"), "--listen", f"127.0.0.1:{port}"]
    extra = [
        "--no-tls",
        "--no-auth",
        "--metrics-listen",
        f"127.0.0.1:{metrics_port}",
        "--gc-schedule",
        "@daily",
    ]
    proc = subprocess.Popen(
        [*argv, *extra], stdout=(tmp_path / "serve.log").open("wb"), stderr=subprocess.STDOUT
    )
    try:
        assert _get(f"http://127.0.0.1:{port}/v2/")[0] == 200
        status, exposition, content_type = _get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200 and content_type.startswith("text/plain")
        found = samples(exposition)
        assert (
            value(found, "dockyard_registry_http_requests_total", method="GET", route="base", status="200")
            >= 1
        )
        assert value(found, "dockyard_registry_gc_runs_total") == 0
        status, body, _ = _get(f"http://127.0.0.1:{metrics_port}/gc")
        doc = json.loads(body)
        assert doc["enabled"] and doc["schedule"] == "@daily" and doc["nextRun"] > time.time()
        status, body, _ = _get(f"http://127.0.0.1:{metrics_port}/status")
        doc = json.loads(body)
        assert doc["gc"]["schedule"] == "@daily" and doc["storage"]["checked"]
        assert doc["storage"]["totalBytes"] >= doc["storage"]["usedBytes"] > 0
        assert doc["storage"]["ready"] is True and doc["storage"]["maxFillPercent"] == 100
        assert _get(f"http://127.0.0.1:{port}/metrics")[0] == 404
        assert _get(f"http://127.0.0.1:{port}/status")[0] == 404
        assert _get(f"http://127.0.0.1:{port}/gc")[0] == 404
        promtool = _promtool()
        if promtool is not None:
            checked = subprocess.run(
                [str(promtool), "check", "metrics"], input=exposition, capture_output=True, check=False
            )
            assert checked.returncode == 0, checked.stdout + checked.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _promtool() -> Path | None:
    """promtool from the tools cache `make test` names in DOCKYARD_TOOLS_BIN (never built from here)."""
    directory = os.environ.get("DOCKYARD_TOOLS_BIN")
    path = Path(directory) / "promtool" if directory else None
    return path if path is not None and path.is_file() else None


def test_promtool_accepts_the_exposition(
    measured: tuple[test_utils.TestClient[Any, Any], metrics.Metrics],
) -> None:
    promtool = _promtool()
    if promtool is None:
        pytest.skip("no promtool in $DOCKYARD_TOOLS_BIN (make test builds it: bash hack/tools.sh promtool)")
    _, m = measured
    checked = subprocess.run(
        [str(promtool), "check", "metrics"], input=m.exposition(), capture_output=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_metrics_address_equal_to_the_api_address_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["serve", "--data-dir", str(tmp_path / "d"), "--no-tls", "--no-auth", "--listen", "127.0.0.1:5999"]
    assert cli.main([*argv, "--metrics-listen", "127.0.0.1:5999"]) == 2
    assert "--metrics-listen must differ" in capsys.readouterr().err


async def test_unknown_methods_and_paths_fold_into_one_label_value(
    measured: tuple[test_utils.TestClient[Any, Any], metrics.Metrics],
) -> None:
    client, m = measured
    for i, method in enumerate(("PROPFIND", "MKCOL", "LOCK")):  # methods HTTP parsers know, we do not
        await client.request(method, f"/v2/r/manifests/v{i}")
        await client.get(f"/nothing/here/{i}")
    found = samples(m.exposition())
    methods = {labels for (name, labels) in found if name == "dockyard_registry_http_requests_total"}
    assert {dict(labels)["method"] for labels in methods} == {"other", "GET"}
    assert {dict(labels)["route"] for labels in methods} == {"other"}
