"""The node agent's registries.conf.d drop-in, read by a real skopeo (containers/image), pulling an image by
the upstream's own name through a real Dockyard mirror of a real Distribution.

Covers:
- the drop-in exactly as `nodetrust.layout.registries_conf` renders it for the agent makes skopeo pull
  `<upstream>/team/app:v1` through Dockyard's mirror prefix first: the copy succeeds without the upstream's
  credentials (only Dockyard has them), and again byte-identical with the upstream stopped.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from dockyard_operator.nodetrust import layout
from tests.integration.registry import harness, images
from tests.integration.registry import test_mirror_real as real
from tests.integration.registry.test_mirror_real import (  # noqa: F401
    crane,
    mirror,
    mirror_metrics_port,
    upstream,
    upstream_crane,
)

pytestmark = pytest.mark.integration


def _skopeo_copy(conf: Path, source: str, dest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [harness.require_binary("skopeo"), "--registries-conf", str(conf), "copy", "--src-tls-verify=false",
         f"docker://{source}", f"dir:{dest}"],
        capture_output=True, text=True, timeout=180, check=False,
        env={**os.environ, "REGISTRY_AUTH_FILE": str(dest.parent / "no-auth.json")},
    )  # fmt: skip


def test_skopeo_pulls_the_upstreams_own_name_through_the_mirror_with_the_drop_in(
    upstream: real.Upstream,  # noqa: F811
    upstream_crane: real.Crane,  # noqa: F811
    mirror: harness.Registry,  # noqa: F811
    tmp_path: Path,
) -> None:
    img = images.random_image(label="mirror-dropin", layer_count=2, layer_size=64 * 1024)
    real._push(upstream_crane, img=img, ref=f"{upstream.address}/team/app:v1", tmp=tmp_path)
    wiring = layout.MirrorWiring(
        upstream=f"https://{upstream.address}", registry=mirror.address, prefix="hub"
    )
    conf = tmp_path / layout.REGISTRIES_CONF_FILE
    conf.write_text(layout.registries_conf({upstream.address: wiring}))
    (tmp_path / "no-auth.json").write_text("{}")

    first = _skopeo_copy(conf, f"{upstream.address}/team/app:v1", tmp_path / "first")
    assert first.returncode == 0, first.stderr  # no upstream credentials here: only the mirror can answer
    upstream.process.stop()
    again = _skopeo_copy(conf, f"{upstream.address}/team/app:v1", tmp_path / "again")
    assert again.returncode == 0, again.stderr
    for blob in img.blobs():
        name = blob.digest.removeprefix("sha256:")
        assert (tmp_path / "again" / name).read_bytes() == blob.data
