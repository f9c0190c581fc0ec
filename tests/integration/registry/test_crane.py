"""crane (go-containerregistry) against the session registry: a second, independent client stack.

crane uploads differently from skopeo (streamed PATCH without Content-Range, cross-repository
mounts on copy, manifest edits in place), so it reaches code paths skopeo does not. TLS is verified
against the generated CA through SSL_CERT_FILE (Go's standard trust override) and credentials come
from `crane auth login --password-stdin` into a temporary DOCKER_CONFIG.

Covers:
- `crane push` of an OCI layout keeps the manifest digest; `crane validate --remote` downloads every
  layer and checks digests and diff_ids;
- `crane copy` to another repository (a cross-repository mount) keeps the digest;
- `crane tag` and `crane ls`; `crane mutate --label` writes a new config and manifest that
  `crane config` reads back; `crane delete` removes a manifest by digest.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import support
from tests.integration.registry import harness, images

pytestmark = pytest.mark.integration

Crane = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def crane(registry: harness.Registry, admin: harness.Credentials, tmp_path: Path) -> Crane:
    env = {**os.environ, "DOCKER_CONFIG": str(tmp_path / "docker-config"), "SSL_CERT_FILE": str(registry.ca)}

    def run(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(support.tool("crane")), *args],
            input=stdin,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if check:
            assert done.returncode == 0, f"crane {args[0]} exited {done.returncode}: {done.stderr}"
        return done

    run(
        "auth",
        "login",
        registry.address,
        "--username",
        admin.username,
        "--password-stdin",
        stdin=admin.password,
    )
    return run


def test_crane_push_validate_copy_tag_mutate_and_delete(
    registry: harness.Registry, crane: Crane, client: harness.Client, tmp_path: Path
) -> None:
    img = images.random_image(label="crane", layer_count=3, layer_size=512 * 1024)
    layout = images.write_layout(directory=tmp_path / "layout", tag="v1", img=img)
    src = f"{registry.address}/crane/src:v1"
    dst = f"{registry.address}/crane/dst:v1"

    crane("push", str(layout), src)
    assert crane("digest", src).stdout.strip() == img.digest
    crane("validate", "--remote", src)

    crane("copy", src, dst)
    assert crane("digest", dst).stdout.strip() == img.digest
    crane("tag", dst, "v2")
    assert sorted(crane("ls", f"{registry.address}/crane/dst").stdout.split()) == ["v1", "v2"]

    mutated = crane("mutate", "--label", "dev.dockyard.mutated=yes", dst).stdout.strip()
    assert mutated.startswith(f"{registry.address}/crane/dst@sha256:"), mutated
    labels = json.loads(crane("config", dst).stdout)["config"]["Labels"]
    assert labels == {"dev.dockyard.test": "crane", "dev.dockyard.mutated": "yes"}
    crane("validate", "--remote", dst)

    crane("delete", f"{registry.address}/crane/src@{img.digest}")
    gone = crane("manifest", src, check=False)
    assert gone.returncode != 0 and "MANIFEST_UNKNOWN" in gone.stderr, gone.stderr
    assert client.get_manifest("crane/dst", "v2").status == 200  # the copy is untouched
