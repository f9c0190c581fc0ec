"""Readiness that means something: the storage check, /readyz, pushes refused while storage cannot take them.

Covers: a writable data directory below the fill threshold is ready and reports capacity; above the
threshold it is not, /readyz answers 503 with the reason, and every kind of push (upload start,
monolithic upload, manifest PUT) answers 507 with an OCI error body while pulls go on; before the first
check the registry is not ready but refuses no push on a guess; a check stuck for three intervals makes the
registry unready and refuses pushes (503, Retry-After); /healthz never depends on storage. On a real
tmpfs mounted for the test (skipped where mounting is not allowed): a full filesystem and a read-only
remount each flip readiness and refuse pushes (507, 503) without storing anything, and freeing space or
remounting read-write makes the registry ready again with the earlier images intact.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import test_utils

from dockyard_registry import app, health, state, store
from dockyard_registry.storage import filesystem
from tests.registry.conftest import OCI_MANIFEST, Clock, Registry, make_image, sha256


class Harness:
    def __init__(self, registry: Registry, monitor: health.StorageMonitor) -> None:
        self.registry = registry
        self.monitor = monitor

    @property
    def client(self) -> test_utils.TestClient[Any, Any]:
        return self.registry.client


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Any]:
    clients: list[test_utils.TestClient[Any, Any]] = []

    async def factory(data: Path, *, max_fill: float = 100.0, clock: Clock | None = None) -> Harness:
        os.makedirs(data, exist_ok=True)  # as `serve` does before it starts
        monitor = health.StorageMonitor(data, max_fill=max_fill, interval=3600, clock=clock or time.time)
        settings = state.Settings(
            store=store.Store(filesystem.FilesystemDriver(data)), authenticator=None, storage=monitor
        )
        client = test_utils.TestClient(test_utils.TestServer(app.create_app(settings)))
        await client.start_server()
        clients.append(client)
        for _ in range(500):  # the app's own first check: the tests' checks must not race it
            if monitor.state.problem is not health.Problem.UNCHECKED:
                break
            await asyncio.sleep(0.01)
        return Harness(Registry(client, settings), monitor)

    yield factory
    for client in clients:
        await client.close()


async def assert_pushes_refused(h: Harness, status: int, message: str) -> None:
    image = make_image("refused")
    attempts = [
        h.client.post("/v2/r/blobs/uploads/"),
        h.client.post(f"/v2/r/blobs/uploads/?digest={sha256(image.config)}", data=image.config),
        h.client.put("/v2/r/manifests/v9", data=image.manifest, headers={"Content-Type": OCI_MANIFEST}),
    ]
    for attempt in attempts:
        resp = await attempt
        assert resp.status == status
        body = await resp.json()
        assert body["errors"][0]["code"] == "UNKNOWN" and message in body["errors"][0]["message"]
        if status == 503:
            assert resp.headers["Retry-After"]


def test_a_writable_directory_below_the_threshold_is_ready_and_reports_capacity(tmp_path: Path) -> None:
    verdict = health.check(tmp_path, max_fill=100.0)
    assert verdict.ready and verdict.message == "ok"
    assert verdict.total and verdict.free is not None and verdict.used is not None
    assert list((tmp_path / "status").iterdir()) == []  # the probe is gone


def test_a_directory_that_cannot_be_written_is_not_ready(tmp_path: Path) -> None:
    (tmp_path / "status").write_text("a file where the probe's directory goes")
    verdict = health.check(tmp_path, max_fill=100.0)
    assert verdict.problem is health.Problem.NOT_WRITABLE and verdict.refuses_pushes


async def test_above_the_fill_threshold_readyz_fails_and_pushes_get_507(tmp_path: Path, start: Any) -> None:
    h = await start(tmp_path / "data")
    image = make_image()
    await h.registry.push_image("r", image, tag="v1")
    h.monitor.max_fill = 0.0001  # any real filesystem is fuller than that
    h.monitor.refresh()
    resp = await h.client.get("/readyz")
    assert resp.status == 503 and "above the 0.0001% threshold" in await resp.text()
    assert (await h.client.get("/healthz")).status == 200
    await assert_pushes_refused(h, 507, "above the 0.0001% threshold")
    pulled = await h.client.get("/v2/r/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert pulled.status == 200 and await pulled.read() == image.manifest
    assert h.registry.store.tags("r") == ["v1"]


async def test_auth_refuses_pushes_the_storage_cannot_take_before_nginx_reads_a_body(
    tmp_path: Path, start: Any
) -> None:
    """nginx asks /auth before it reads a body (and the body-file variant writes it to the volume)."""
    h = await start(tmp_path / "data")

    async def auth(method: str, uri: str) -> int:
        resp = await h.client.get("/auth", headers={"X-Original-Method": method, "X-Original-URI": uri})
        return resp.status

    assert await auth("PATCH", "/v2/r/blobs/uploads/0123456789abcdef0123456789abcdef") == 200
    h.monitor.max_fill = 0.0001
    h.monitor.refresh()
    assert await auth("PATCH", "/v2/r/blobs/uploads/0123456789abcdef0123456789abcdef") == 507
    assert await auth("POST", "/v2/r/blobs/uploads/?digest=sha256:" + "a" * 64) == 507
    assert await auth("PUT", "/v2/r/manifests/v1") == 507
    assert await auth("GET", "/v2/r/manifests/v1") == 200  # pulls go on
    assert await auth("HEAD", "/v2/r/blobs/sha256:" + "a" * 64) == 200


async def test_a_ready_registry_says_so(tmp_path: Path, start: Any) -> None:
    unchecked = health.StorageMonitor(tmp_path)
    assert not unchecked.state.ready and not unchecked.state.refuses_pushes
    h = await start(tmp_path / "data")
    h.monitor.refresh()
    resp = await h.client.get("/readyz")
    assert resp.status == 200 and await resp.text() == "ok"


async def test_a_stuck_storage_check_makes_the_registry_unready(tmp_path: Path, start: Any) -> None:
    clock = Clock()
    h = await start(tmp_path / "data", clock=clock)
    h.monitor.refresh()
    h.monitor._started = clock.now  # a check that never returns (hung storage)
    clock.advance(3 * 3600 + 1)
    resp = await h.client.get("/readyz")
    assert resp.status == 503 and "storage check stuck" in await resp.text()
    await assert_pushes_refused(h, 503, "storage check stuck")
    assert (await h.client.get("/healthz")).status == 200


# ----------------------------------------------------------------------------------------- real tmpfs
@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    point = tmp_path / "mnt"
    point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(point)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


def remount(point: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(point)], check=True)


async def test_a_full_then_read_only_filesystem_flips_readiness_and_refuses_pushes(
    small_tmpfs: Path, start: Any
) -> None:
    data = small_tmpfs / "data"
    h = await start(data, max_fill=100.0)
    image = make_image()
    await h.registry.push_image("r", image, tag="v1")
    assert h.monitor.refresh().ready

    filler = small_tmpfs / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    verdict = h.monitor.refresh()
    assert verdict.problem is health.Problem.FULL and verdict.free is not None and verdict.free < 65536
    assert (await h.client.get("/readyz")).status == 503
    await assert_pushes_refused(h, 507, "registry storage is full")

    filler.unlink()
    assert h.monitor.refresh().ready
    remount(small_tmpfs, "ro")
    try:
        verdict = h.monitor.refresh()
        assert verdict.problem is health.Problem.NOT_WRITABLE and "Read-only" in verdict.message
        resp = await h.client.get("/readyz")
        assert resp.status == 503 and "not writable" in await resp.text()
        await assert_pushes_refused(h, 503, "not writable")
    finally:
        remount(small_tmpfs, "rw")
    assert h.monitor.refresh().ready
    assert (await h.client.get("/readyz")).status == 200
    pulled = await h.client.get("/v2/r/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert await pulled.read() == image.manifest
    assert h.registry.store.tags("r") == ["v1"]
    await h.registry.push_image("r", make_image("after"), tag="v2")
