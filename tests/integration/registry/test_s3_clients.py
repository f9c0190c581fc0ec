"""oras and podman push and pull against `serve --storage-driver s3` on a real S3 server (gofakes3).

Covers (issue 14: "skopeo/podman/oras push-pull all run against the S3 driver"; skopeo and crane are in
test_s3.py):
- `oras push` of an artifact (two files, an artifact type) and `oras pull` of it into a fresh directory:
  the files come back byte for byte (blob GETs follow the registry's presigned redirects to the bucket),
  the manifest the registry stores is the one oras pushed (same digest), and its layers name the files'
  digests;
- podman pulls an image skopeo pushed (every layer unpacked, so byte-exact), pushes it to another
  repository (recompressed: blobs the bucket has never seen), removes it locally and pulls it back: the
  same image ID, and the stored manifest points at that config.

The registry runs with TLS and auth files in a local --data-dir and content in the bucket, redirects
on (the default). The `podman` fixture (conftest.py) skips only when podman itself cannot run here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.registry import harness, images
from tests.integration.registry.clients import oras, skopeo_push
from tests.support import s3server

pytestmark = pytest.mark.integration

ARTIFACT = "application/vnd.dockyard.test.bundle"


@pytest.fixture(scope="module")
def admin() -> harness.Credentials:
    return harness.Credentials(username="admin", password=harness.new_password())


@pytest.fixture(scope="module")
def s3_registry(
    s3_server: s3server.S3Server,
    s3_env: None,
    admin: harness.Credentials,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[harness.Registry]:
    """TLS auto and the auth files under a local --data-dir; every blob and manifest in the bucket."""
    flags = [
        "--storage-driver", "s3", "--s3-endpoint", s3_server.endpoint, "--s3-bucket", s3_server.bucket,
        "--s3-prefix", "clients",
    ]  # fmt: skip
    with harness.running_registry(
        tmp=tmp_path_factory.mktemp("s3-clients"),
        users=[harness.User(admin, access="admin")],
        extra_args=flags,
    ) as reg:
        yield reg


def test_oras_pushes_and_pulls_an_artifact_on_s3_with_every_digest_intact(
    s3_registry: harness.Registry, admin: harness.Credentials, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    files = {"model.bin": os.urandom(6 * 1024 * 1024), "meta.json": b'{"name": "bundle"}\n'}
    for name, data in files.items():
        (src / name).write_bytes(data)
    ref = f"{s3_registry.address}/s3/oras:v1"

    oras(
        "push", "--artifact-type", ARTIFACT, "--export-manifest", str(tmp_path / "pushed.json"), ref,
        "model.bin:application/octet-stream", "meta.json:application/json",
        registry=s3_registry, creds=admin, cwd=src,
    )  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    oras("pull", "--output", str(out), ref, registry=s3_registry, creds=admin, cwd=tmp_path)

    for name, data in files.items():
        assert (out / name).read_bytes() == data, name
    pushed = (tmp_path / "pushed.json").read_bytes()
    stored = s3_registry.client(admin).get_manifest("s3/oras", "v1")
    assert stored.status == 200, stored.describe()
    assert harness.sha256(stored.body) == harness.sha256(pushed)
    assert stored.header("Docker-Content-Digest") == harness.sha256(pushed)
    manifest = json.loads(stored.body)
    assert manifest["artifactType"] == ARTIFACT
    assert sorted(layer["digest"] for layer in manifest["layers"]) == sorted(
        harness.sha256(data) for data in files.values()
    )


def test_podman_pulls_pushes_and_pulls_back_on_s3(
    s3_registry: harness.Registry, admin: harness.Credentials, podman: harness.Podman, tmp_path: Path
) -> None:
    cert_dir = harness.ca_dir(ca_file=s3_registry.ca, into=tmp_path / "certs")
    img = images.random_image(label="s3-podman", layer_count=3, layer_size=2 * 1024 * 1024)
    source = f"{s3_registry.address}/s3/podman-source:v1"
    target = f"{s3_registry.address}/s3/podman-target:v1"
    skopeo_push(img=img, ref=source, tmp=tmp_path, cert_dir=cert_dir, creds=admin)
    tls = ["--cert-dir", str(cert_dir), "--creds", admin.colon()]

    podman("pull", "--quiet", *tls, source)
    assert "sha256:" + podman("image", "inspect", "--format", "{{.Id}}", source).stdout.strip() == (
        img.config.digest
    )
    podman("push", "--quiet", *tls, source, f"docker://{target}")
    podman("rmi", "--all", "--force")
    assert podman("images", "--quiet").stdout.strip() == ""
    podman("pull", "--quiet", *tls, target)

    back_id = podman("image", "inspect", "--format", "{{.Id}}", target).stdout.strip()
    assert f"sha256:{back_id}" == img.config.digest
    stored = s3_registry.client(admin).get_manifest("s3/podman-target", "v1")
    assert stored.status == 200, stored.describe()
    manifest = json.loads(stored.body)
    assert manifest["config"]["digest"] == img.config.digest and len(manifest["layers"]) == 3
    assert stored.header("Docker-Content-Digest") == harness.sha256(stored.body)
