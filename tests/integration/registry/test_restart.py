"""Crash safety: SIGKILL the registry in the middle of pushes, restart it on the same data dir.

Covers:
- killed between the chunks of a chunked upload (one PATCH committed, the next one half sent):
  `dockyard-registry fsck` finds the data dir clean, the upload's status after restart shows at least
  the committed range (and never more than was sent), the rest can be PATCHed and the upload
  completed with its digest; starting that blob over as a fresh upload also works;
- killed while a manifest PUT's body is half sent: fsck is clean and no trace of that manifest
  exists (not by tag, not by digest, not in the tag list); pushing it again works;
- killed right after a manifest PUT's body was fully sent, before the answer: after restart the
  manifest is either absent or complete and byte-exact — never partial;
- killed while a monolithic blob PUT (with its digest) is half sent: that blob is not visible after
  restart, and pushing it again works;
- killed while a real `skopeo copy` is pushing a six-layer image (as soon as a first layer landed):
  fsck is clean and simply running the same `skopeo copy` again succeeds and pulls back identical;
- in every case an image pushed (by skopeo) before the crash is still there, byte for byte;
- SIGTERM stops the registry cleanly (exit 0), the way Kubernetes stops a pod; with an upload in
  flight it stops accepting connections at once, exits 0 when that client goes away, and the upload's
  committed chunk is still there after a restart.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.registry import harness, images
from tests.integration.registry.clients import skopeo_pull, skopeo_push

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


@pytest.fixture
def admin() -> harness.Credentials:
    return harness.Credentials(username="crash", password=harness.new_password())


@pytest.fixture
def reg(tmp_path: Path, admin: harness.Credentials) -> Iterator[harness.Registry]:
    with harness.running_registry(tmp=tmp_path / "reg", users=[harness.User(admin, access="admin")]) as r:
        yield r


@pytest.fixture
def earlier(reg: harness.Registry, admin: harness.Credentials, tmp_path: Path) -> tuple[images.Image, Path]:
    """An image committed (pushed with skopeo) before any crash, and a CA dir to pull it back with."""
    cert_dir = harness.ca_dir(ca_file=reg.ca, into=tmp_path / "certs")
    img = images.random_image(label="committed-before-crash", layer_count=3)
    skopeo_push(img=img, ref=f"{reg.address}/keep/me:v1", tmp=tmp_path, cert_dir=cert_dir, creds=admin)
    return img, cert_dir


def assert_fsck_clean(reg: harness.Registry) -> None:
    done = harness.run_cli("fsck", "--data-dir", str(reg.data_dir))
    assert done.returncode == 0, f"fsck exited {done.returncode}:\n{done.stdout}\n{done.stderr}"


def assert_earlier_image_intact(
    *, reg: harness.Registry, admin: harness.Credentials, earlier: tuple[images.Image, Path], into: Path
) -> None:
    img, cert_dir = earlier
    back = skopeo_pull(ref=f"{reg.address}/keep/me:v1", into=into, cert_dir=cert_dir, creds=admin)
    assert back.manifest_digest == img.digest
    assert back.layer_digests == [layer.blob.digest for layer in img.layers]


def _range_end(resp: harness.Response) -> int:
    """The last committed byte offset from an upload's `Range: 0-<end>` header."""
    value = resp.header("Range")
    assert value is not None and value.startswith("0-"), resp.describe()
    return int(value.removeprefix("0-"))


def test_sigkill_between_upload_chunks_then_restart_resumes_the_upload(
    reg: harness.Registry, admin: harness.Credentials, earlier: tuple[images.Image, Path], tmp_path: Path
) -> None:
    client = reg.client(admin)
    blob = os.urandom(3 * MIB)
    digest = harness.sha256(blob)
    started = client.request("POST", "/v2/crash/chunked/blobs/uploads/")
    assert started.status == 202, started.describe()
    location = harness.upload_path(started)
    first = client.request(
        "PATCH",
        location,
        body=blob[:MIB],
        headers={"Content-Type": "application/octet-stream", "Content-Range": f"0-{MIB - 1}"},
    )
    assert first.status == 202 and _range_end(first) == MIB - 1, first.describe()
    location = harness.upload_path(first)
    half_sent = MIB // 4

    with client.partial_request(
        "PATCH",
        location,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{MIB}-{2 * MIB - 1}",
            "Content-Length": str(MIB),
        },
        body_prefix=blob[MIB : MIB + half_sent],
    ):
        reg.kill()
    assert_fsck_clean(reg)
    reg.start()

    status = client.request("GET", location)
    assert status.status == 204, f"upload forgotten after restart: {status.describe()}"
    end = _range_end(status)
    # The committed chunk survives; bytes of the interrupted PATCH may or may not, never more than sent.
    assert MIB - 1 <= end < MIB + half_sent, status.describe()
    location = harness.upload_path(status)
    rest = client.request(
        "PATCH",
        location,
        body=blob[end + 1 :],
        headers={"Content-Type": "application/octet-stream", "Content-Range": f"{end + 1}-{len(blob) - 1}"},
    )
    assert rest.status == 202 and _range_end(rest) == len(blob) - 1, rest.describe()
    sep = "&" if "?" in harness.upload_path(rest) else "?"
    done = client.request(
        "PUT", f"{harness.upload_path(rest)}{sep}digest={digest}", headers={"Content-Length": "0"}
    )
    assert done.status == 201, done.describe()

    fetched = client.get_blob("crash/chunked", digest)
    assert fetched.status == 200 and fetched.body == blob, fetched.describe()
    assert_earlier_image_intact(reg=reg, admin=admin, earlier=earlier, into=tmp_path / "back")
    reg.stop()
    assert_fsck_clean(reg)


def test_sigkill_mid_upload_then_restart_lets_the_client_start_the_blob_over(
    reg: harness.Registry, admin: harness.Credentials, earlier: tuple[images.Image, Path], tmp_path: Path
) -> None:
    client = reg.client(admin)
    blob = os.urandom(2 * MIB)
    started = client.request("POST", "/v2/crash/restarted/blobs/uploads/")
    assert started.status == 202, started.describe()
    with client.partial_request(
        "PATCH",
        harness.upload_path(started),
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(blob))},
        body_prefix=blob[:MIB],
    ):
        reg.kill()
    assert_fsck_clean(reg)
    reg.start()

    digest = client.push_blob("crash/restarted", blob)

    fetched = client.get_blob("crash/restarted", digest)
    assert fetched.status == 200 and fetched.body == blob
    assert_earlier_image_intact(reg=reg, admin=admin, earlier=earlier, into=tmp_path / "back")


def _push_image_blobs(client: harness.Client, repo: str, img: images.Image) -> None:
    for blob in img.blobs():
        client.push_blob(repo, blob.data)


def test_sigkill_during_a_manifest_put_leaves_no_trace_of_that_manifest(
    reg: harness.Registry, admin: harness.Credentials, earlier: tuple[images.Image, Path], tmp_path: Path
) -> None:
    client = reg.client(admin)
    repo = "crash/manifest"
    img = images.random_image(label="manifest-cut-off", layer_count=2)
    _push_image_blobs(client, repo, img)
    body = img.manifest.data

    with client.partial_request(
        "PUT",
        f"/v2/{repo}/manifests/v1",
        headers={"Content-Type": images.MANIFEST, "Content-Length": str(len(body))},
        body_prefix=body[: len(body) // 2],
    ):
        reg.kill()
    assert_fsck_clean(reg)
    reg.start()

    by_tag = client.get_manifest(repo, "v1")
    assert by_tag.status == 404 and by_tag.error_codes() == ["MANIFEST_UNKNOWN"], by_tag.describe()
    by_digest = client.get_manifest(repo, img.digest)
    assert by_digest.status == 404, by_digest.describe()
    tags = client.request("GET", f"/v2/{repo}/tags/list")
    if tags.status == 200:
        assert "v1" not in (json.loads(tags.body)["tags"] or []), tags.describe()
    else:
        assert tags.status == 404 and tags.error_codes() == ["NAME_UNKNOWN"], tags.describe()

    client.push_manifest(repo, "v1", body)
    again = client.get_manifest(repo, "v1")
    assert again.status == 200 and again.body == body
    assert_earlier_image_intact(reg=reg, admin=admin, earlier=earlier, into=tmp_path / "back")


def test_sigkill_right_after_a_manifest_put_leaves_it_whole_or_absent(
    reg: harness.Registry, admin: harness.Credentials, earlier: tuple[images.Image, Path], tmp_path: Path
) -> None:
    client = reg.client(admin)
    repo = "crash/racing"
    img = images.random_image(label="manifest-racing-the-kill", layer_count=2)
    _push_image_blobs(client, repo, img)
    body = img.manifest.data

    with client.partial_request(
        "PUT",
        f"/v2/{repo}/manifests/v1",
        headers={"Content-Type": images.MANIFEST, "Content-Length": str(len(body))},
        body_prefix=body,
    ):
        reg.kill()
    assert_fsck_clean(reg)
    reg.start()

    by_tag = client.get_manifest(repo, "v1")
    if by_tag.status == 200:
        assert by_tag.body == body, "a manifest survived the crash with different bytes"
        by_digest = client.get_manifest(repo, img.digest)
        assert by_digest.status == 200 and by_digest.body == body, by_digest.describe()
        assert json.loads(by_tag.body)["config"]["digest"] == img.config.digest
    else:
        assert by_tag.status == 404 and by_tag.error_codes() == ["MANIFEST_UNKNOWN"], by_tag.describe()
    assert_earlier_image_intact(reg=reg, admin=admin, earlier=earlier, into=tmp_path / "back")


def test_sigkill_during_a_monolithic_blob_put_never_exposes_a_partial_blob(
    reg: harness.Registry, admin: harness.Credentials, earlier: tuple[images.Image, Path], tmp_path: Path
) -> None:
    client = reg.client(admin)
    blob = os.urandom(4 * MIB)
    digest = harness.sha256(blob)
    started = client.request("POST", "/v2/crash/monolithic/blobs/uploads/")
    assert started.status == 202, started.describe()
    location = harness.upload_path(started)
    sep = "&" if "?" in location else "?"

    with client.partial_request(
        "PUT",
        f"{location}{sep}digest={digest}",
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(blob))},
        body_prefix=blob[: 3 * MIB],
    ):
        reg.kill()
    assert_fsck_clean(reg)
    reg.start()

    head = client.request("HEAD", f"/v2/crash/monolithic/blobs/{digest}")
    assert head.status == 404, f"a blob whose upload was cut off is visible: {head.describe()}"
    client.push_blob("crash/monolithic", blob)
    assert client.get_blob("crash/monolithic", digest).body == blob
    assert_earlier_image_intact(reg=reg, admin=admin, earlier=earlier, into=tmp_path / "back")


def test_sigkill_during_a_real_skopeo_push_then_the_push_can_simply_be_repeated(
    reg: harness.Registry, admin: harness.Credentials, earlier: tuple[images.Image, Path], tmp_path: Path
) -> None:
    _, cert_dir = earlier
    client = reg.client(admin)
    img = images.random_image(label="killed-mid-push", layer_count=6, layer_size=4 * MIB)
    layout = images.write_layout(directory=tmp_path / "src", tag="src", img=img)
    ref = f"{reg.address}/crash/skopeo:v1"
    argv = [
        harness.require_binary("skopeo"), "copy", "--quiet", f"oci:{layout}:src", f"docker://{ref}",
        "--dest-cert-dir", str(cert_dir), "--dest-creds", admin.colon(),
    ]  # fmt: skip
    pusher = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # Kill as soon as the first layer has landed: the push is then under way with more to send.
        # Where exactly the kill lands varies from run to run; what must hold afterwards does not.
        harness.wait_for(
            "skopeo to land a first layer",
            lambda: pusher.poll() is not None
            or any(client.request("HEAD", f"/v2/crash/skopeo/blobs/{layer.blob.digest}").status == 200
                   for layer in img.layers),
            timeout=120,
        )  # fmt: skip
        reg.kill()
        pusher.wait(timeout=180)
    finally:
        if pusher.poll() is None:
            pusher.kill()
            pusher.wait()
    assert_fsck_clean(reg)
    reg.start()

    again = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr
    back = skopeo_pull(ref=ref, into=tmp_path / "pushed", cert_dir=cert_dir, creds=admin)
    assert back.manifest_digest == img.digest
    assert_earlier_image_intact(reg=reg, admin=admin, earlier=earlier, into=tmp_path / "back")
    reg.stop()
    assert_fsck_clean(reg)


def test_sigterm_during_an_upload_stops_accepting_then_exits_cleanly_when_the_client_leaves(
    reg: harness.Registry, admin: harness.Credentials
) -> None:
    client = reg.client(admin)
    blob = os.urandom(2 * MIB)
    started = client.request("POST", "/v2/crash/sigterm/blobs/uploads/")
    first = client.request(
        "PATCH",
        harness.upload_path(started),
        body=blob[:MIB],
        headers={"Content-Type": "application/octet-stream", "Content-Range": f"0-{MIB - 1}"},
    )
    assert first.status == 202, first.describe()
    location = harness.upload_path(first)
    assert reg.process is not None

    with client.partial_request(
        "PATCH",
        location,
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(MIB)},
        body_prefix=blob[MIB : MIB + 1000],
    ):
        reg.process.popen.send_signal(signal.SIGTERM)
        harness.wait_for("the registry to stop accepting connections", lambda: not _accepting(client))
    # The stalled client is gone now; the registry has nothing left to wait for.
    assert reg.process.popen.wait(timeout=harness.STOP_TIMEOUT) == 0, reg.log_tail()
    assert_fsck_clean(reg)
    reg.start()

    status = client.request("GET", location)
    assert status.status == 204 and _range_end(status) >= MIB - 1, status.describe()


def _accepting(client: harness.Client) -> bool:
    try:
        client.request("GET", "/healthz")
    except OSError:
        return False
    return True


def test_sigterm_stops_the_registry_with_exit_code_zero(reg: harness.Registry) -> None:
    assert reg.stop() == 0, reg.log_tail()
