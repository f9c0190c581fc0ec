"""podman (Debian, no daemon, vfs storage in a temp dir) against the session registry.

Covers:
- `podman pull` of a multi-layer image that skopeo pushed, with `--cert-dir` (the generated CA) and
  `--creds`: podman unpacks every layer, so this also proves the blobs are byte-exact;
- `podman push` of that image to another repository (podman recompresses the layers, so the
  registry receives blobs it has never seen), then removing it locally and pulling it back: same
  image ID (config digest) and the registry's manifest for the new repository points at that config.

podman runs here without a Docker engine. If podman itself cannot run on this machine (no user
namespaces, no storage driver) the `podman` fixture (conftest.py) skips with podman's own error,
never for a failure that involves the registry.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.registry import harness, images
from tests.integration.registry.clients import skopeo_push

pytestmark = pytest.mark.integration


def test_podman_pulls_pushes_to_another_repository_and_pulls_back_the_same_image(
    registry: harness.Registry,
    admin: harness.Credentials,
    client: harness.Client,
    cert_dir: Path,
    podman: harness.Podman,
    tmp_path: Path,
) -> None:
    img = images.random_image(label="podman", layer_count=3, layer_size=128 * 1024)
    source = f"{registry.address}/podman/source:v1"
    target = f"{registry.address}/podman/target:v1"
    skopeo_push(img=img, ref=source, tmp=tmp_path, cert_dir=cert_dir, creds=admin)
    tls = ["--cert-dir", str(cert_dir), "--creds", admin.colon()]

    podman("pull", "--quiet", *tls, source)
    pulled_id = podman("image", "inspect", "--format", "{{.Id}}", source).stdout.strip()
    assert f"sha256:{pulled_id}" == img.config.digest

    podman("push", "--quiet", *tls, source, f"docker://{target}")
    podman("rmi", "--all", "--force")
    assert podman("images", "--quiet").stdout.strip() == ""
    podman("pull", "--quiet", *tls, target)
    back_id = podman("image", "inspect", "--format", "{{.Id}}", target).stdout.strip()

    assert f"sha256:{back_id}" == img.config.digest
    stored = client.get_manifest("podman/target", "v1")
    assert stored.status == 200, stored.describe()
    manifest = json.loads(stored.body)
    assert manifest["config"]["digest"] == img.config.digest
    assert len(manifest["layers"]) == 3
    assert stored.header("Docker-Content-Digest") == harness.sha256(stored.body)
