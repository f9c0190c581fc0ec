"""A mirror's `anonymousPull` against a REAL upstream (Distribution with Basic auth) and real crane pulls.

Nodes wired to a mirror send the registry no credentials (a Pod's pull secret names the upstream's host),
so a mirror may open its own prefix to anonymous pulls. Here Dockyard runs with auth on and two mirrors
of the same upstream: `open` (anonymousPull: true) and `closed` (credentials, so closed by default).

Covers:
- an anonymous `crane pull` through `open/` gets the upstream's image byte-identical;
- anonymous pulls of `closed/` and of an ordinary repository a user pushed are refused (401), so are
  anonymous pushes under `open/`; the user still pulls `closed/`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.integration.registry import harness, images
from tests.integration.registry import test_mirror_real as real
from tests.integration.registry.test_mirror_real import upstream, upstream_crane  # noqa: F401

pytestmark = pytest.mark.integration


def test_anonymous_pulls_reach_the_open_mirror_and_nothing_else(
    upstream: real.Upstream,  # noqa: F811
    upstream_crane: real.Crane,  # noqa: F811
    tmp_path: Path,
) -> None:
    img = images.random_image(label="mirror-anonymous", layer_count=2, layer_size=64 * 1024)
    real._push(upstream_crane, img=img, ref=f"{upstream.address}/team/app:v1", tmp=tmp_path)
    (tmp_path / "user").write_text(real.UPSTREAM_USER)
    (tmp_path / "pass").write_text(upstream.password)
    common = {"upstream": f"https://{upstream.address}", "caFile": str(upstream.tls.ca_file),
              "usernameFile": str(tmp_path / "user"), "passwordFile": str(tmp_path / "pass")}  # fmt: skip
    doc = {"mirrors": [{"prefix": "open", **common, "anonymousPull": True}, {"prefix": "closed", **common}]}
    (tmp_path / "mirrors.yaml").write_text(json.dumps(doc))
    alice = harness.Credentials(username="alice", password=harness.new_password())
    anonymous = real._crane(env={**os.environ, "DOCKER_CONFIG": str(tmp_path / "anonymous")})
    logged_in = real._crane(env={**os.environ, "DOCKER_CONFIG": str(tmp_path / "alice")})
    with harness.running_registry(
        tmp=tmp_path / "dockyard",
        users=[harness.User(credentials=alice)],
        tls_args=("--no-tls",),
        extra_args=["--mirrors", str(tmp_path / "mirrors.yaml")],
    ) as reg:
        logged_in("auth", "login", "--insecure", reg.address, "--username", alice.username,
                  "--password-stdin", stdin=alice.password)  # fmt: skip
        layout = tmp_path / f"layout-{img.digest[7:19]}"
        logged_in("push", "--insecure", str(layout), f"{reg.address}/own/app:v1")

        through = f"{reg.address}/open/team/app:v1"
        anonymous("pull", "--insecure", "--format", "oci", through, str(tmp_path / "o"))
        for blob in [*img.blobs(), img.manifest]:
            pulled = tmp_path / "o" / "blobs" / "sha256" / blob.digest.removeprefix("sha256:")
            assert pulled.read_bytes() == blob.data, blob.digest

        for ref in ("closed/team/app:v1", "own/app:v1"):
            refused = anonymous("manifest", "--insecure", f"{reg.address}/{ref}", check=False)
            assert refused.returncode != 0 and "UNAUTHORIZED" in refused.stderr, (ref, refused.stderr)
        pushed = anonymous("push", "--insecure", str(layout), f"{reg.address}/open/team/mine:v1", check=False)
        assert pushed.returncode != 0 and "UNAUTHORIZED" in pushed.stderr, pushed.stderr
        assert logged_in("manifest", "--insecure", f"{reg.address}/closed/team/app:v1").stdout.encode() == (
            img.manifest.data
        )
    assert upstream.password not in reg.log()
