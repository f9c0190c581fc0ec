"""What tests/monitoring checks against: promtool from the tools cache, and real metrics expositions.

The registry's comes from its real app and metrics listener (in this process, over HTTP) after pushes, pulls,
a wrong password and an online gc run, so every family it can export has samples; the operator's from its
metrics listener after real reconcile passes (over the in-memory API stand-in), a blocked one included, and
node trust counts. Must not: assert anything (the tests do).
"""

from __future__ import annotations

import base64
import re
import subprocess
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import test_utils

import tests.support
from dockyard_operator import metrics as operator_metrics
from dockyard_operator import model, reconcile, settings
from dockyard_registry import app, auth, health, maintenance, metrics, schedule, state, store
from dockyard_registry.storage import filesystem
from tests.operator import fakes
from tests.operator.test_reconcile import PASSWORDS, Clock, create
from tests.registry.conftest import OCI_MANIFEST, make_image, sha256
from tests.registry.test_gc_retention import age_everything, push_image

CHART_FILES = tests.support.ROOT / "charts" / "dockyard" / "files"
RULES = CHART_FILES / "rules.yaml"
RULE_TESTS = Path(__file__).parent / "rules_test.yaml"
DASHBOARD = CHART_FILES / "dashboard.json"
METRIC_NAME = re.compile(r"\b(dockyard_[a-z0-9_]+)\b")


@pytest.fixture(scope="session")
def promtool() -> Path:
    """promtool from the tools cache (`bash hack/tools.sh promtool`; `make test` builds it)."""
    return tests.support.tool("promtool")


def run_promtool(promtool: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def scrape(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - a local test listener
        assert response.status == 200
        body: bytes = response.read()
        return body


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
async def registry_exposition(tmp_path: Path) -> AsyncIterator[bytes]:
    """The registry's /metrics, scraped from its metrics listener after real traffic and a gc run."""
    data = tmp_path / "data"
    data.mkdir()
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"alice:{auth.hash_password('alice-pw', rounds=4)}\n")
    authenticator = auth.Authenticator(htpasswd=htpasswd, access=tmp_path / "access.yaml")
    st = store.Store(filesystem.FilesystemDriver(data))
    monitor = health.StorageMonitor(data)
    monitor.refresh()
    runner = maintenance.GcRunner(
        st,
        maintenance.GcSettings(schedule=schedule.parse("@daily"), grace=3600, delete_untagged=True),
        status_file=None,
    )
    measured = metrics.Metrics(metrics.Sources(authenticator=authenticator, storage=monitor, gc=runner))
    api = test_utils.TestClient(
        test_utils.TestServer(
            app.create_app(
                state.Settings(store=st, authenticator=authenticator, storage=monitor, gc=runner),
                metrics=measured,
            )
        )
    )
    listener = test_utils.TestClient(test_utils.TestServer(metrics.listener_app(measured)))
    await api.start_server()
    await listener.start_server()
    try:
        alice = _basic("alice", "alice-pw")
        image = make_image("monitoring")
        for blob in (image.config, image.layer):
            pushed = await api.post(f"/v2/r/blobs/uploads/?digest={sha256(blob)}", data=blob, headers=alice)
            assert pushed.status == 201, await pushed.text()
        headers = {**alice, "Content-Type": OCI_MANIFEST}
        assert (await api.put("/v2/r/manifests/latest", data=image.manifest, headers=headers)).status == 201
        pulled = await api.get("/v2/r/manifests/latest", headers={**alice, "Accept": OCI_MANIFEST})
        assert pulled.status == 200
        assert (await api.get(f"/v2/r/blobs/{sha256(image.layer)}", headers=alice)).status == 200
        await api.get("/v2/r/manifests/latest", headers=_basic("alice", "wrong"))
        await push_image(st, "old", make_image("old"), tag="latest")
        await push_image(st, "old", make_image("newer"), tag="latest")
        assert isinstance(st.driver, filesystem.FilesystemDriver)
        age_everything(st.driver, st, 7200)
        runner.run_once()
        response = await listener.get("/metrics")
        assert response.status == 200
        yield await response.read()
    finally:
        await listener.close()
        await api.close()


@pytest.fixture
async def operator_exposition() -> AsyncIterator[bytes]:
    """The operator's /metrics, scraped from its listener after real passes (one blocked)."""
    api = fakes.FakeKube()
    api.put(fakes.password_secret("alice-pw", PASSWORDS["alice"]))
    api.put(fakes.password_secret("bob-pw", PASSWORDS["bob"], key="pw"))
    measures = operator_metrics.OperatorMetrics()
    reconciler = reconcile.Reconciler(
        client=api,  # type: ignore[arg-type]  # duck-typed stand-in
        config=settings.Settings(bcrypt_rounds=4, registry_image="registry:test"),
        clock=Clock(),
        measures=measures,
    )
    create(api)
    await reconciler.reconcile(namespace="ns", name="demo")
    api.remove("Secret", "bob-pw")
    await reconciler.reconcile(namespace="ns", name="demo")  # blocked: an error with its reason
    trusted = model.PrivateRegistryStatus(node_trust=model.NodeTrustStatus(desired=2, ready=2, trusting=1))
    measures.observe(namespace="ns", name="trusted", status=trusted)
    server = operator_metrics.serve(measures, host="127.0.0.1", port=0)
    try:
        yield scrape(f"http://127.0.0.1:{server.port}/metrics")
    finally:
        server.stop()


def sample_names(exposition: bytes) -> set[str]:
    """Every metric name with a sample in an exposition (`_total`, `_bucket`, ... included)."""
    return {
        line.split("{", 1)[0].split(" ", 1)[0]
        for line in exposition.decode().splitlines()
        if line and not line.startswith("#")
    }


def used_names(text: str) -> set[str]:
    return set(METRIC_NAME.findall(text))


def expressions(node: Any) -> list[str]:
    """Every `expr` string in a dashboard's panels (nested rows included)."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                found.append(value)
            else:
                found += expressions(value)
    elif isinstance(node, list):
        for item in node:
            found += expressions(item)
    return found
