"""Fixtures for the registry tests: storage drivers, an in-process registry, and OCI content builders.

`driver` runs a test over both storage drivers (memory and filesystem). `registry` starts the real
aiohttp application on a loopback port through aiohttp's TestServer/TestClient (no subprocess), with
auth off unless a test builds its own app with `make_client`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import test_utils

from dockyard_registry import app, auth, bodyahead, fence, state, store
from dockyard_registry.storage import base, filesystem, memory

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


class Clock:
    """A clock a test moves by hand (expiry and grace periods without sleeping)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def _no_fence_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stores in these tests trust no cached "no gc run" view, so gc needs no wait before deleting (the
    fence's own tests, tests/registry/test_gc_fence.py, give their stores a cache to exercise it)."""
    monkeypatch.setattr(fence, "DEFAULT_CACHE", 0.0)


@pytest.fixture(params=["memory", "filesystem"])
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> base.Driver:
    if request.param == "memory":
        return memory.MemoryDriver()
    return filesystem.FilesystemDriver(tmp_path / "data")


@dataclasses.dataclass
class Image:
    """A small OCI image: config, one layer, and the manifest bytes referencing them."""

    config: bytes
    layer: bytes
    manifest: bytes

    @property
    def digest(self) -> str:
        return sha256(self.manifest)


def make_manifest(
    *,
    config: bytes,
    layers: list[bytes],
    subject: dict[str, Any] | None = None,
    artifact_type: str | None = None,
    annotations: dict[str, str] | None = None,
) -> bytes:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": sha256(x), "size": len(x)} for x in layers],
    }
    if subject is not None:
        doc["subject"] = subject
    if artifact_type is not None:
        doc["artifactType"] = artifact_type
    if annotations is not None:
        doc["annotations"] = annotations
    return json.dumps(doc).encode()


def make_image(seed: str = "a") -> Image:
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    layer = f"layer bytes of {seed}".encode() * 10
    return Image(config=config, layer=layer, manifest=make_manifest(config=config, layers=[layer]))


class Registry:
    """A TestClient plus the store behind it, with helpers for the common pushes."""

    def __init__(self, client: test_utils.TestClient[Any, Any], settings: state.Settings) -> None:
        self.client = client
        self.settings = settings

    @property
    def store(self) -> store.Store:
        return self.settings.store

    async def push_blob(self, repo: str, data: bytes, **kw: Any) -> str:
        dgst = sha256(data)
        resp = await self.client.post(f"/v2/{repo}/blobs/uploads/?digest={dgst}", data=data, **kw)
        assert resp.status == 201, await resp.text()
        return dgst

    async def push_image(self, repo: str, image: Image, *, tag: str | None = "latest", **kw: Any) -> str:
        await self.push_blob(repo, image.config, **kw)
        await self.push_blob(repo, image.layer, **kw)
        ref = tag or image.digest
        resp = await self.client.put(
            f"/v2/{repo}/manifests/{ref}",
            data=image.manifest,
            headers={"Content-Type": OCI_MANIFEST, **kw.pop("headers", {})},
            **kw,
        )
        assert resp.status == 201, await resp.text()
        return image.digest


ClientFactory = Callable[..., Awaitable[Registry]]


@pytest.fixture
async def make_client(tmp_path: Path) -> AsyncIterator[ClientFactory]:
    clients: list[test_utils.TestClient[Any, Any]] = []

    async def factory(
        *,
        driver: base.Driver | None = None,
        authenticator: auth.Authenticator | None = None,
        delete_enabled: bool = True,
        accel_redirect: str | None = None,
        foreign_layer_urls: bool = False,
        clock: Callable[[], float] = time.time,
        upload_expiry: float = store.DEFAULT_UPLOAD_EXPIRY,
        max_uploads_per_owner: int | None = store.DEFAULT_MAX_UPLOADS_PER_OWNER,
        upload_sweep_seconds: float | None = 3600.0,
        trusted_proxies: tuple[state.Network, ...] = state.LOOPBACK,
        token_realm: str | None = None,
        body_file_dir: Path | None = None,
        body_ahead: bool = False,
    ) -> Registry:
        settings = state.Settings(
            store=store.Store(
                driver or filesystem.FilesystemDriver(tmp_path / "data"),
                foreign_layer_urls=foreign_layer_urls,
                clock=clock,
                upload_expiry=upload_expiry,
                max_uploads_per_owner=max_uploads_per_owner,
            ),
            authenticator=authenticator,
            delete_enabled=delete_enabled,
            accel_redirect=accel_redirect,
            upload_sweep_seconds=upload_sweep_seconds,
            trusted_proxies=trusted_proxies,
            token_realm=token_realm,
            body_file_dir=body_file_dir,
            body_ahead=bodyahead.Follower(body_file_dir) if body_ahead and body_file_dir else None,
        )
        client = test_utils.TestClient(test_utils.TestServer(app.create_app(settings)))
        await client.start_server()
        clients.append(client)
        return Registry(client, settings)

    yield factory
    for client in clients:
        await client.close()


@pytest.fixture
async def registry(make_client: ClientFactory, driver: base.Driver) -> Registry:
    """A registry without auth, over each storage driver in turn."""
    return await make_client(driver=driver)


@pytest.fixture
async def fs_registry(make_client: ClientFactory) -> Registry:
    """A registry without auth on the filesystem driver (for tests about files on disk)."""
    return await make_client()
