"""podman (Debian, no daemon, vfs storage in a temp dir) against the session registry.

Covers:
- `podman pull` of a multi-layer image that skopeo pushed, with `--cert-dir` (the generated CA) and
  `--creds`: podman unpacks every layer, so this also proves the blobs are byte-exact;
- `podman push` of that image to another repository (podman recompresses the layers, so the
  registry receives blobs it has never seen), then removing it locally and pulling it back: same
  image ID (config digest) and the registry's manifest for the new repository points at that config.

podman runs here without a Docker engine. If podman itself cannot run on this machine (no user
namespaces, no storage driver) the test is skipped with podman's own error, never for a failure
that involves the registry.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.registry import harness, images
from tests.integration.registry.test_skopeo import push as skopeo_push

pytestmark = pytest.mark.integration

Podman = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def podman() -> Iterator[Podman]:
    """podman with all its state (images, run dir, tmp, events) in a fresh temp dir.

    Not under pytest's tmp_path: podman refuses a runroot longer than 50 characters.
    """
    state = Path(tempfile.mkdtemp(prefix="dockyard-podman-"))
    base = [
        harness.require_binary("podman"),
        "--root",
        str(state / "root"),
        "--runroot",
        str(state / "run"),
        "--tmpdir",
        str(state / "tmp"),
        "--storage-driver",
        "vfs",
        "--events-backend",
        "file",
        "--cgroup-manager",
        "cgroupfs",
    ]

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*base, *args], capture_output=True, text=True, timeout=240, check=False)
        if check:
            assert done.returncode == 0, f"podman {args[0]} exited {done.returncode}: {done.stderr}"
        return done

    try:
        probe = run("images", "--quiet", check=False)
        if probe.returncode != 0:
            pytest.skip(f"podman cannot run on this machine (not a registry problem): {probe.stderr.strip()}")
        yield run
    finally:
        # vfs layers are plain directories owned by us; podman's own `system reset` would also work
        # but needs the same flags and prints a confirmation prompt.
        shutil.rmtree(state, ignore_errors=True)


def test_podman_pulls_pushes_to_another_repository_and_pulls_back_the_same_image(
    registry: harness.Registry,
    admin: harness.Credentials,
    client: harness.Client,
    cert_dir: Path,
    podman: Podman,
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
