"""A data dir that runs out of space: pushes fail cleanly, nothing stored is lost, space comes back.

The registry's data dir is a small tmpfs (mounting needs root; without it the test is skipped with
that reason). Covers:
- an upload bigger than the free space fails with an error status and an OCI error body (no hang,
  no traceback), the registry stays healthy, and that blob is not visible;
- the failed upload's bytes are released (rolled back), so a small push right after succeeds;
- an image pushed earlier with skopeo still pulls byte for byte, and fsck finds the data dir clean;
- a manifest PUT on a full disk fails with an error status and OCI body and leaves no tag; once an
  upload is cancelled the same PUT works and fsck is clean.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.registry import harness, images
from tests.integration.registry.clients import skopeo_pull, skopeo_push

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
ADMIN = harness.Credentials("full-disk", harness.new_password())


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs for the data dir (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.fixture
def reg(small_disk: Path, tmp_path: Path) -> Iterator[harness.Registry]:
    data = small_disk / "data"
    harness.add_user(data_dir=data, name=ADMIN.username, password=ADMIN.password, access="admin")
    registry = harness.make_registry(data_dir=data, log_file=tmp_path / "registry.log")
    registry.start()
    try:
        yield registry
    finally:
        registry.stop()  # before the tmpfs is unmounted


def test_a_push_bigger_than_the_free_space_fails_cleanly_and_loses_nothing(
    reg: harness.Registry, tmp_path: Path
) -> None:
    cert_dir = harness.ca_dir(ca_file=reg.ca, into=tmp_path / "certs")
    kept = images.random_image(label="before-the-disk-filled", layer_count=2, layer_size=MIB)
    skopeo_push(img=kept, ref=f"{reg.address}/full/kept:v1", tmp=tmp_path, cert_dir=cert_dir, creds=ADMIN)
    client = reg.client(ADMIN)
    size, seed = 40 * MIB, os.urandom(MIB)

    def chunks() -> Iterator[bytes]:
        for i in range(size // MIB):
            yield i.to_bytes(8, "big") + seed[8:]

    started = client.request("POST", "/v2/full/big/blobs/uploads/")
    assert started.status == 202, started.describe()
    try:
        failed: harness.Response | None = client.upload_stream(
            "PATCH",
            harness.upload_path(started),
            chunks=chunks(),
            length=size,
            headers={"Content-Type": "application/octet-stream"},
        )
    except (BrokenPipeError, ConnectionResetError):
        failed = None  # the registry answered and closed while we were still sending: also fine

    if failed is not None:
        assert failed.status >= 400 and failed.error_codes(), failed.describe()
    assert "Traceback" not in reg.log(), reg.log_tail()
    assert client.request("GET", "/healthz").status == 200
    assert client.request("GET", harness.upload_path(started)).status in (204, 404)
    small = os.urandom(4 * MIB)
    assert client.push_blob("full/after", small) == harness.sha256(small)
    back = skopeo_pull(
        ref=f"{reg.address}/full/kept:v1", into=tmp_path / "back", cert_dir=cert_dir, creds=ADMIN
    )
    assert back.manifest_digest == kept.digest
    fsck = harness.run_cli("fsck", "--data-dir", str(reg.data_dir))
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def test_a_manifest_put_on_a_full_disk_fails_cleanly_and_works_once_space_is_freed(
    reg: harness.Registry, small_disk: Path
) -> None:
    client = reg.client(ADMIN)
    img = images.random_image(label="manifest-on-a-full-disk", layer_count=1)
    for blob in img.blobs():
        client.push_blob("full/manifest", blob.data)
    doc = json.loads(img.manifest.data)
    doc["annotations"] = {"dev.dockyard.padding": "x" * 100_000}  # bigger than the space left below
    manifest = json.dumps(doc).encode()
    # Fill the disk with an open upload, leaving a couple of KiB.
    filler = harness.upload_path(client.request("POST", "/v2/full/filler/blobs/uploads/"))
    stat = os.statvfs(small_disk)
    filled = client.request(
        "PATCH",
        filler,
        body=os.urandom(stat.f_bavail * stat.f_frsize - 2048),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert filled.status == 202, filled.describe()

    refused = client.request(
        "PUT", "/v2/full/manifest/manifests/v1", body=manifest, headers={"Content-Type": images.MANIFEST}
    )

    assert refused.status >= 500 and refused.error_codes(), refused.describe()
    assert client.get_manifest("full/manifest", "v1").status == 404
    assert client.request("DELETE", filler).status == 204  # cancelling the upload frees its space
    client.push_manifest("full/manifest", "v1", manifest)
    assert client.get_manifest("full/manifest", "v1").body == manifest
    fsck = harness.run_cli("fsck", "--data-dir", str(reg.data_dir))
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert "Traceback" not in reg.log(), reg.log_tail()
