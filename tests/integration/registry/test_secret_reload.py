"""Credentials updated the way Kubernetes updates a mounted Secret, while the registry runs.

The operator renders `htpasswd` and `access.yaml` into one Secret mounted at /etc/dockyard/auth. The
kubelet updates such a volume atomically: it writes the new files into a fresh `..<timestamp>` dir,
swaps the `..data` symlink to it with a rename, and the visible files are symlinks through `..data`.
The file the registry watches therefore never changes in place: its path resolves to a new inode.

Covers, with the registry started on `--htpasswd <mount>/htpasswd --access <mount>/access.yaml`:
- a user removed from the Secret is refused, a changed password replaces the old one, and a user
  added can pull but (being `pull` only) not push;
- all without a restart, and the registry stays healthy across swaps.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import yaml

from tests.integration.registry import harness, images

pytestmark = pytest.mark.integration

ALICE = harness.Credentials("alice", harness.new_password())
ALICE_NEW = harness.Credentials("alice", harness.new_password())
BOB = harness.Credentials("bob", harness.new_password())
CAROL = harness.Credentials("carol", harness.new_password())


def htpasswd_lines(tmp: Path, users: list[harness.Credentials]) -> str:
    """bcrypt lines as the registry's own CLI writes them (what the operator renders is the same format)."""
    scratch = tmp / f"scratch-{time.monotonic_ns()}"
    for user in users:
        harness.add_user(data_dir=scratch, name=user.username, password=user.password)
    text = (scratch / "auth" / "htpasswd").read_text()
    shutil.rmtree(scratch)
    return text


def publish(mount: Path, files: Mapping[str, str]) -> None:
    """Update a Secret volume the way the kubelet's atomic writer does."""
    mount.mkdir(parents=True, exist_ok=True)
    old = [p for p in mount.iterdir() if p.name.startswith("..") and p.is_dir() and not p.is_symlink()]
    fresh = mount / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    fresh.mkdir()
    for name, text in files.items():
        (fresh / name).write_text(text)
    tmp_link = mount / "..data_tmp"
    tmp_link.symlink_to(fresh.name)
    os.replace(tmp_link, mount / "..data")
    for name in files:
        link = mount / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")
    for path in old:
        shutil.rmtree(path)


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[tuple[harness.Registry, Path]]:
    mount = tmp_path / "etc-dockyard-auth"
    access = {
        "anonymousPull": False,
        "users": {"alice": {"access": "admin"}, "bob": {"access": "push", "repositories": ["team/**"]}},
    }
    publish(
        mount, {"htpasswd": htpasswd_lines(tmp_path, [ALICE, BOB]), "access.yaml": yaml.safe_dump(access)}
    )
    data = tmp_path / "data"
    data.mkdir()
    registry = harness.make_registry(
        data_dir=data,
        log_file=tmp_path / "registry.log",
        extra_args=["--htpasswd", str(mount / "htpasswd"), "--access", str(mount / "access.yaml")],
    )
    registry.start()
    try:
        yield registry, mount
    finally:
        registry.stop()


def test_a_secret_style_swap_of_htpasswd_and_access_yaml_takes_effect_without_a_restart(
    reg: tuple[harness.Registry, Path], tmp_path: Path
) -> None:
    registry, mount = reg
    img = images.random_image(label="secret-swap", layer_count=1)
    alice = registry.client(ALICE)
    for blob in img.blobs():
        alice.push_blob("team/app", blob.data)
    alice.push_manifest("team/app", "v1", img.manifest.data)
    assert registry.client(BOB).request("POST", "/v2/team/app/blobs/uploads/").status == 202

    access = {
        "anonymousPull": False,
        "users": {"alice": {"access": "admin"}, "carol": {"access": "pull", "repositories": ["team/*"]}},
    }
    publish(
        mount,
        {"htpasswd": htpasswd_lines(tmp_path, [ALICE_NEW, CAROL]), "access.yaml": yaml.safe_dump(access)},
    )

    harness.wait_for(
        "the removed user is refused",
        lambda: registry.client(BOB).get_manifest("team/app", "v1").status == 401,
    )
    assert registry.client(ALICE).get_manifest("team/app", "v1").status == 401
    assert registry.client(ALICE_NEW).get_manifest("team/app", "v1").status == 200
    carol = registry.client(CAROL)
    assert carol.get_manifest("team/app", "v1").status == 200
    denied = carol.request("POST", "/v2/team/app/blobs/uploads/")
    assert denied.status == 403 and denied.error_codes() == ["DENIED"], denied.describe()
    assert registry.client(None).request("GET", "/healthz").status == 200
    assert registry.process is not None and registry.process.alive()
