"""`dockyard-registry fsck` on a data dir filled by real clients, clean and then damaged on disk.

Covers:
- a data dir holding a skopeo-pushed image and an index over it: exit 0;
- one flipped byte in a layer's stored data: exit 1 and the message names that blob; fsck repairs
  nothing (the file is still damaged afterwards) and the registry still serves the image's manifest;
- a manifest's stored data removed: exit 1, naming the repository and the manifest;
- usage errors (a data dir that does not exist, no --data-dir) exit 2 with a message.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.registry import harness, images
from tests.integration.registry.clients import skopeo_push

pytestmark = pytest.mark.integration

ADMIN = harness.Credentials("fsck-admin", harness.new_password())


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[harness.Registry]:
    with harness.running_registry(tmp=tmp_path / "reg", users=[harness.User(ADMIN, access="admin")]) as r:
        yield r


def stored_file(data_dir: Path, digest: str) -> Path:
    """The file holding a blob's bytes, found by content: the test assumes no on-disk layout."""
    matches = [p for p in data_dir.rglob("*") if p.is_file() and harness.sha256(p.read_bytes()) == digest]
    assert len(matches) == 1, f"{digest} stored {len(matches)} times: {matches}"
    return matches[0]


def fsck(reg: harness.Registry) -> tuple[int, str]:
    done = harness.run_cli("fsck", "--data-dir", str(reg.data_dir))
    return done.returncode, done.stdout + done.stderr


@pytest.fixture
def image(reg: harness.Registry, tmp_path: Path) -> images.Image:
    cert_dir = harness.ca_dir(ca_file=reg.ca, into=tmp_path / "certs")
    img = images.random_image(label="fsck", layer_count=3)
    skopeo_push(img=img, ref=f"{reg.address}/fsck/app:v1", tmp=tmp_path, cert_dir=cert_dir, creds=ADMIN)
    client = reg.client(ADMIN)
    idx = images.index(platforms=[("amd64", img)])
    client.push_manifest("fsck/app", "multi", idx.data, media_type=images.INDEX)
    return img


def test_fsck_finds_nothing_wrong_with_what_real_clients_pushed(
    reg: harness.Registry, image: images.Image
) -> None:
    code, out = fsck(reg)

    assert code == 0, out


def test_fsck_reports_a_corrupted_layer_by_digest_and_repairs_nothing(
    reg: harness.Registry, image: images.Image
) -> None:
    victim = image.layers[1].blob
    path = stored_file(reg.data_dir, victim.digest)
    damaged = bytearray(victim.data)
    damaged[len(damaged) // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))

    code, out = fsck(reg)

    assert code == 1, out
    assert victim.digest in out, out
    assert path.read_bytes() == bytes(damaged), "fsck must not touch what it reports"
    assert reg.client(ADMIN).get_manifest("fsck/app", "v1").status == 200


def test_fsck_reports_a_manifest_whose_data_is_gone(reg: harness.Registry, image: images.Image) -> None:
    stored_file(reg.data_dir, image.digest).unlink()

    code, out = fsck(reg)

    assert code == 1, out
    assert "fsck/app" in out and image.digest in out, out


@pytest.mark.parametrize("args", [["--data-dir", "/nonexistent/dockyard"], []])
def test_fsck_usage_errors_exit_2_with_a_message(args: list[str]) -> None:
    done = harness.run_cli("fsck", *args)

    assert done.returncode == 2, f"exit {done.returncode}: {done.stdout}{done.stderr}"
    assert done.stderr.strip()
