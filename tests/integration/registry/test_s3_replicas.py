"""Several registry processes on one gofakes3 bucket: gc on one while another accepts pushes.

Covers (issue 14, "GC with several replicas"): `dockyard-registry gc --grace 0` runs as its own process
against the bucket two live registries serve. Once its run marker is in the bucket, the second replica
takes a manifest naming blobs that are old and unreferenced (the race the gc fence exists for). It also
takes another such manifest once the sweep has deleted its first orphan, and keeps taking fresh pushes
(through both replicas) until gc exits. Every push is either accepted or refused with
MANIFEST_BLOB_UNKNOWN (then pushed again); afterwards every orphan is gone, `fsck` is clean and every
accepted image pulls back whole, digests matching, from both replicas.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_registry.storage import blocking, s3
from tests.integration.registry import harness, images
from tests.support import procs, s3server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[s3server.S3Server]:
    reason = s3server.available()
    if reason is not None:
        pytest.skip(reason)
    with s3server.running(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(scope="module")
def s3_env(s3_server: s3server.S3Server) -> Iterator[None]:
    """The credentials every registry process and CLI run below inherits."""
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ["AWS_ACCESS_KEY_ID"] = s3server.ACCESS_KEY
    os.environ["AWS_SECRET_ACCESS_KEY"] = s3server.SECRET_KEY
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def s3_flags(server: s3server.S3Server, prefix: str) -> list[str]:
    return [
        "--storage-driver", "s3", "--s3-endpoint", server.endpoint, "--s3-bucket", server.bucket,
        "--s3-prefix", prefix, "--no-s3-redirect",
    ]  # fmt: skip


def start_replica(tmp: Path, flags: list[str]) -> harness.Registry:
    """`serve --no-tls --no-auth` on the bucket, no local directory at all."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = procs.reserve_port()
    reg = harness.Registry(
        data_dir=tmp,
        host="127.0.0.1",
        port=port.number,
        ca_file=None,
        log_file=tmp / "registry.log",
        argv=[
            str(harness.registry_bin()),
            *("serve", "--listen", f"127.0.0.1:{port.number}", "--no-tls", "--no-auth"),
            *flags,
        ],
        reserved=port,
    )
    reg.start()
    return reg


def push_image(client: harness.Client, repo: str, img: images.Image, tag: str) -> None:
    for blob in img.blobs():
        client.push_blob(repo, blob.data)
    client.push_manifest(repo, tag, img.manifest.data)


def put_manifest_or_push_again(client: harness.Client, repo: str, img: images.Image, tag: str) -> str:
    """PUT a manifest whose blobs were pushed earlier; if gc collected them meanwhile the registry must
    say MANIFEST_BLOB_UNKNOWN, and pushing the blobs again then succeeds. Returns what happened."""
    resp = client.request(
        "PUT",
        f"/v2/{repo}/manifests/{tag}",
        body=img.manifest.data,
        headers={"Content-Type": images.MANIFEST},
    )
    if resp.status == 201:
        return "accepted"
    assert resp.status == 400 and resp.error_codes() == ["MANIFEST_BLOB_UNKNOWN"], resp.describe()
    push_image(client, repo, img, tag)
    return "refused, pushed again"


def assert_pulls_whole(client: harness.Client, repo: str, img: images.Image, tag: str) -> None:
    manifest = client.get_manifest(repo, tag)
    assert manifest.status == 200 and harness.sha256(manifest.body) == img.digest, manifest.describe()
    for blob in img.blobs():
        resp, got, size = client.download_digest(f"/v2/{repo}/blobs/{blob.digest}")
        assert resp.status == 200 and (got, size) == (blob.digest, len(blob.data)), (repo, tag, blob.digest)


def test_gc_on_one_process_while_another_replica_accepts_pushes_loses_nothing(
    s3_server: s3server.S3Server, s3_env: None, tmp_path: Path
) -> None:
    prefix = f"replicas-{uuid.uuid4().hex[:8]}"
    flags = s3_flags(s3_server, prefix)
    bucket = blocking.BlockingS3Driver.start(
        s3.S3Config(
            bucket=s3_server.bucket,
            endpoint=s3_server.endpoint,
            prefix=prefix,
            access_key=s3server.ACCESS_KEY,
            secret_key=s3server.SECRET_KEY,
        )
    )
    one = start_replica(tmp_path / "one", flags)
    two = start_replica(tmp_path / "two", flags)
    gc: subprocess.Popen[str] | None = None
    try:
        a, b = one.client(None), two.client(None)
        accepted: list[tuple[str, images.Image, str]] = []
        kept = images.random_image(label="kept", layer_count=1, layer_size=8192)
        push_image(a, "s3/kept", kept, "v1")
        accepted.append(("s3/kept", kept, "v1"))
        # Blobs pushed but named by no manifest yet: old and unreferenced once gc starts.
        early = images.random_image(label="reused-early", layer_count=2, layer_size=8192)
        late = images.random_image(label="reused-late", layer_count=2, layer_size=8192)
        for blob in [*early.blobs(), *late.blobs()]:
            a.push_blob("s3/reused", blob.data)
        orphans = [a.push_blob("s3/orphans", os.urandom(2048)) for _ in range(60)]
        time.sleep(1.5)  # `--grace 0` collects what is older than the run's start (to the second)

        gc = subprocess.Popen(
            [str(harness.registry_bin()), "gc", *flags, "--grace", "0", "--upload-expiry", "1h"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        harness.wait_for("gc's run marker in the bucket", lambda: bool(bucket.list("gc/runs")), timeout=60)
        assert gc.poll() is None, "gc ended before the race could be run"
        outcomes = {"early": put_manifest_or_push_again(b, "s3/reused", early, "early")}
        accepted.append(("s3/reused", early, "early"))
        harness.wait_for(
            "gc's sweep to delete an orphan",
            lambda: any(b.request("HEAD", f"/v2/s3/orphans/blobs/{o}").status == 404 for o in orphans),
            timeout=120,
        )
        outcomes["late"] = put_manifest_or_push_again(b, "s3/reused", late, "late")
        accepted.append(("s3/reused", late, "late"))
        n = 0
        while gc.poll() is None or n < 2:
            fresh = images.random_image(label=f"during-gc-{n}", layer_count=2, layer_size=8192)
            push_image((b, a)[n % 2], "s3/fresh", fresh, f"v{n}")
            accepted.append(("s3/fresh", fresh, f"v{n}"))
            n += 1
        out, err = gc.communicate(timeout=120)
        assert gc.returncode == 0, err
        assert "deleted blob" in out, out

        for orphan in orphans:
            assert b.request("HEAD", f"/v2/s3/orphans/blobs/{orphan}").status == 404, orphan
        for client in (a, b):
            for repo, img, tag in accepted:
                assert_pulls_whole(client, repo, img, tag)
        checked = harness.run_cli("fsck", *flags)
        assert checked.returncode == 0 and "ok: no problems found" in checked.stdout, (
            checked.stdout + checked.stderr
        )
        assert bucket.list("gc/runs") == []  # the run removed its marker
        print(f"manifests naming old unreferenced blobs during gc: {outcomes}; {n} pushes during the run")
    finally:
        if gc is not None and gc.poll() is None:
            gc.kill()
            gc.wait()
        one.stop()
        two.stop()
        bucket.close()
