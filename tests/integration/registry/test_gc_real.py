"""`dockyard-registry gc` on a real data dir, with images pushed by skopeo and the registry running.

Covers:
- two images sharing two layers, each with one layer and a config of its own; after one image's
  manifest is deleted (skopeo delete), `gc --dry-run` reports but changes no file in the data dir;
- `gc --grace 0` then removes the deleted image's own layer and config (no file or link under the
  data dir names the collected layer any more) and keeps the shared layers and everything of the
  remaining image;
- the remaining image still pulls with skopeo with identical digests, its blobs answer 200 and the
  collected ones 404 BLOB_UNKNOWN from the running registry, and fsck is clean afterwards;
- the collected image can be pushed again and pulls back (no stale link or cache survives gc);
- gc with its default grace period keeps the blobs of a push in progress (blobs pushed, manifest
  not yet) and an open upload session, which can then be completed;
- gc SIGKILLed in the middle of its sweep: running it again finishes the job, fsck is clean and the
  kept image still pulls;
- gc (default grace) run over and over while three skopeo pushes are under way: every push succeeds
  and pulls back, fsck is clean.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.registry import harness, images
from tests.integration.registry.clients import skopeo, skopeo_pull, skopeo_push

pytestmark = pytest.mark.integration

ADMIN = harness.Credentials("gc-admin", harness.new_password())


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[harness.Registry]:
    with harness.running_registry(tmp=tmp_path / "reg", users=[harness.User(ADMIN, access="admin")]) as r:
        yield r


def snapshot(data_dir: Path) -> dict[str, str]:
    """Every file under the data dir (except TLS and auth) with a hash of its content."""
    files = {}
    for path in sorted(data_dir.rglob("*")):
        rel = path.relative_to(data_dir)
        if path.is_file() and rel.parts[0] not in {"tls", "auth"}:
            files[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def test_gc_removes_only_blobs_no_manifest_references_and_dry_run_changes_nothing(
    reg: harness.Registry, tmp_path: Path
) -> None:
    cert_dir = harness.ca_dir(ca_file=reg.ca, into=tmp_path / "certs")
    shared = [images.random_layer(name=f"shared-{i}.bin") for i in range(2)]
    doomed_layer = images.random_layer(name="doomed.bin")
    kept_layer = images.random_layer(name="kept.bin")
    doomed = images.image(layers=[*shared, doomed_layer], label="gc-doomed")
    kept = images.image(layers=[*shared, kept_layer], label="gc-kept")
    for img, tag in ((doomed, "doomed"), (kept, "kept")):
        skopeo_push(img=img, ref=f"{reg.address}/gc/app:{tag}", tmp=tmp_path, cert_dir=cert_dir, creds=ADMIN)
    skopeo(
        "delete",
        "--cert-dir",
        str(cert_dir),
        "--creds",
        ADMIN.colon(),
        f"docker://{reg.address}/gc/app:doomed",
    )

    before = snapshot(reg.data_dir)
    dry = harness.run_cli("gc", "--data-dir", str(reg.data_dir), "--dry-run", "--grace", "0")
    assert dry.returncode == 0, dry.stderr
    assert snapshot(reg.data_dir) == before, "gc --dry-run changed the data dir"

    real = harness.run_cli("gc", "--data-dir", str(reg.data_dir), "--grace", "0")
    assert real.returncode == 0, real.stderr

    client = reg.client(ADMIN)
    for blob in [*kept.blobs(), *(layer.blob for layer in shared)]:
        resp = client.request("HEAD", f"/v2/gc/app/blobs/{blob.digest}")
        assert resp.status == 200, f"gc removed a blob still in use: {blob.digest}"
    for blob in (doomed_layer.blob, doomed.config):
        resp = client.get_blob("gc/app", blob.digest)
        assert resp.status == 404 and resp.error_codes() == ["BLOB_UNKNOWN"], (
            f"{blob.digest}: {resp.describe()}"
        )
    on_disk = "\n".join(snapshot(reg.data_dir))
    assert doomed_layer.blob.digest.removeprefix("sha256:") not in on_disk, (
        "collected blob (or a link) left on disk"
    )
    assert kept_layer.blob.digest.removeprefix("sha256:") in on_disk

    back = skopeo_pull(
        ref=f"{reg.address}/gc/app:kept", into=tmp_path / "back", cert_dir=cert_dir, creds=ADMIN
    )
    assert back.manifest_digest == kept.digest
    assert back.layer_digests == [layer.blob.digest for layer in kept.layers]
    fsck = harness.run_cli("fsck", "--data-dir", str(reg.data_dir))
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr

    # The collected image can be pushed again: nothing (a link, a cache) still claims its blobs exist.
    skopeo_push(img=doomed, ref=f"{reg.address}/gc/app:doomed", tmp=tmp_path, cert_dir=cert_dir, creds=ADMIN)
    again = skopeo_pull(
        ref=f"{reg.address}/gc/app:doomed", into=tmp_path / "again", cert_dir=cert_dir, creds=ADMIN
    )
    assert again.manifest_digest == doomed.digest


def test_gc_with_the_default_grace_keeps_fresh_blobs_and_open_uploads_of_a_push_in_progress(
    reg: harness.Registry,
) -> None:
    client = reg.client(ADMIN)
    img = images.random_image(label="gc-in-flight", layer_count=2)
    for blob in img.blobs():  # every blob pushed, the manifest not yet: a push in progress
        client.push_blob("gc/inflight", blob.data)
    extra = os.urandom(256 * 1024)
    started = client.request("POST", "/v2/gc/inflight/blobs/uploads/")
    patched = client.request(
        "PATCH",
        harness.upload_path(started),
        body=extra[:1000],
        headers={"Content-Type": "application/octet-stream", "Content-Range": "0-999"},
    )
    assert patched.status == 202, patched.describe()

    gc = harness.run_cli("gc", "--data-dir", str(reg.data_dir))
    assert gc.returncode == 0, gc.stderr

    for blob in img.blobs():
        assert client.request("HEAD", f"/v2/gc/inflight/blobs/{blob.digest}").status == 200
    client.push_manifest("gc/inflight", "v1", img.manifest.data)
    location = harness.upload_path(patched)
    sep = "&" if "?" in location else "?"
    done = client.request(
        "PUT",
        f"{location}{sep}digest={harness.sha256(extra)}",
        body=extra[1000:],
        headers={"Content-Type": "application/octet-stream", "Content-Range": f"1000-{len(extra) - 1}"},
    )
    assert done.status == 201, f"gc broke an open upload: {done.describe()}"


def _files_holding(data_dir: Path, digests: set[str]) -> dict[str, Path]:
    """Where on disk each blob's bytes live, found by content (the test does not assume a layout)."""
    found = {}
    for path in data_dir.rglob("*"):
        if path.is_file() and path.stat().st_size < 4096:
            digest = harness.sha256(path.read_bytes())
            if digest in digests:
                found[digest] = path
    assert set(found) == digests, "some pushed blobs are not on disk"
    return found


def test_gc_killed_mid_sweep_is_finished_by_the_next_run_and_leaves_a_clean_data_dir(
    reg: harness.Registry, tmp_path: Path
) -> None:
    cert_dir = harness.ca_dir(ca_file=reg.ca, into=tmp_path / "certs")
    kept = images.random_image(label="gc-survivor", layer_count=2)
    skopeo_push(img=kept, ref=f"{reg.address}/gc/keep:v1", tmp=tmp_path, cert_dir=cert_dir, creds=ADMIN)
    client = reg.client(ADMIN)
    # Unreferenced blobs, each linked into a repository: what gc deletes, and links it must clean up.
    doomed = {client.push_blob("gc/junk", b"junk %d " % i + os.urandom(32)) for i in range(300)}
    files = list(_files_holding(reg.data_dir, doomed).values())

    sweeper = subprocess.Popen(
        [str(harness.registry_bin()), "gc", "--data-dir", str(reg.data_dir), "--grace", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # SIGKILL as soon as the first blob is gone, in the middle of the sweep. Where exactly it lands
        # varies from run to run (it may even miss); what must hold afterwards does not.
        while sweeper.poll() is None and all(f.exists() for f in files):
            pass
        sweeper.send_signal(signal.SIGKILL)
    finally:
        sweeper.wait(timeout=60)

    rerun = harness.run_cli("gc", "--data-dir", str(reg.data_dir), "--grace", "0")
    assert rerun.returncode == 0, rerun.stderr
    fsck = harness.run_cli("fsck", "--data-dir", str(reg.data_dir))
    assert fsck.returncode == 0, (
        f"fsck after an interrupted gc and a full re-run:\n{fsck.stdout}{fsck.stderr}"
    )
    for digest in list(doomed)[:20]:
        gone = client.request("HEAD", f"/v2/gc/junk/blobs/{digest}")
        assert gone.status == 404, gone.describe()
    back = skopeo_pull(
        ref=f"{reg.address}/gc/keep:v1", into=tmp_path / "back", cert_dir=cert_dir, creds=ADMIN
    )
    assert back.manifest_digest == kept.digest


def test_gc_running_over_and_over_during_real_pushes_never_breaks_them(
    reg: harness.Registry, tmp_path: Path
) -> None:
    cert_dir = harness.ca_dir(ca_file=reg.ca, into=tmp_path / "certs")
    imgs = [
        images.random_image(label=f"pushed-during-gc-{n}", layer_count=4, layer_size=1024 * 1024)
        for n in range(3)
    ]
    pushers = []
    for n, img in enumerate(imgs):
        layout = images.write_layout(directory=tmp_path / f"src{n}", tag="src", img=img)
        pushers.append(
            subprocess.Popen(
                [
                    harness.require_binary("skopeo"), "copy", "--quiet", f"oci:{layout}:src",
                    f"docker://{reg.address}/gc/busy:v{n}",
                    "--dest-cert-dir", str(cert_dir), "--dest-creds", ADMIN.colon(),
                ],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )
        )  # fmt: skip
    runs = 0
    # gc with its default grace period, again and again until every push is done (at least twice).
    while runs < 2 or any(p.poll() is None for p in pushers):
        swept = harness.run_cli("gc", "--data-dir", str(reg.data_dir))
        assert swept.returncode == 0, swept.stderr
        runs += 1
    for p in pushers:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err

    for n, img in enumerate(imgs):
        back = skopeo_pull(
            ref=f"{reg.address}/gc/busy:v{n}", into=tmp_path / f"back{n}", cert_dir=cert_dir, creds=ADMIN
        )
        assert back.manifest_digest == img.digest
    fsck = harness.run_cli("fsck", "--data-dir", str(reg.data_dir))
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
