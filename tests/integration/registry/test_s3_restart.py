"""A registry on S3 whose S3 server goes away mid-push (issue 14, "S3 server restarted mid-push").

gofakes3 keeps multipart uploads in memory on every backend, and its persistent backends do not work for
us (bolt dies copying a completed multipart upload; fs and directfs fail to list a prefix that does not
exist), so the tests run it on its memory backend and cover the two things a restart can do:
- the server is down, then back empty (memory backend): while it is down, a PATCH is answered 503 with
  Retry-After (retryable; nothing of the chunk counts); once it is back, the session is unknown
  (404 BLOB_UPLOAD_UNKNOWN: its records are gone, and retrying the same PATCH could never succeed), and a
  fresh push succeeds and pulls back whole;
- every object survives but the multipart uploads are gone (what a restart does to a server that keeps
  uploads in memory and objects on disk, and what an AbortIncompleteMultipartUpload lifecycle rule does;
  forced here by aborting every upload in the bucket): the next PATCH that needs the upload is answered
  BLOB_UPLOAD_UNKNOWN and the session is gone, a fresh push succeeds, and the image stored before pulls
  back whole, fsck clean.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.config import Config
from botocore.session import get_session

from tests.integration.registry import harness, images
from tests.integration.registry.replicas import (
    assert_pulls_whole,
    push_image,
    s3_flags,
    start_replica,
)
from tests.support import s3server

pytestmark = pytest.mark.integration
MIB = 1024 * 1024


@pytest.fixture
def own_s3_server(tmp_path: Path) -> Iterator[s3server.S3Server]:
    """A server of this test's own: it gets stopped and restarted."""
    reason = s3server.available()
    if reason is not None:
        pytest.skip(reason)
    (tmp_path / "s3").mkdir()
    with s3server.running(tmp_path / "s3") as server:
        yield server


def patch(client: harness.Client, location: str, data: bytes, offset: int) -> harness.Response:
    return client.request(
        "PATCH",
        location,
        body=data,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{offset}-{offset + len(data) - 1}",
            "Content-Length": str(len(data)),
        },
    )


def test_s3_server_restarted_mid_push_gives_a_retryable_503_then_upload_unknown(
    own_s3_server: s3server.S3Server, s3_env: None, tmp_path: Path
) -> None:
    flags = s3_flags(own_s3_server, "restart")
    reg = start_replica(tmp_path / "registry", flags)
    try:
        client = reg.client(None)
        blob = os.urandom(3 * MIB)
        started = client.request("POST", "/v2/s3/restart/blobs/uploads/")
        assert started.status == 202, started.describe()
        first = patch(client, harness.upload_path(started), blob[:MIB], 0)
        assert first.status == 202, first.describe()
        location = harness.upload_path(first)

        own_s3_server.process.stop()  # the server is down
        down = patch(client, location, blob[MIB : 2 * MIB], MIB)
        assert down.status == 503 and down.header("Retry-After"), down.describe()
        assert down.error_codes() == ["UNKNOWN"] and b"storage is unavailable" in down.body, down.describe()

        own_s3_server.restart()  # back, empty: the memory backend kept nothing
        again = patch(client, location, blob[MIB : 2 * MIB], MIB)
        assert again.status == 404 and again.error_codes() == ["BLOB_UPLOAD_UNKNOWN"], again.describe()
        status = client.request("GET", location)
        assert status.status == 404 and status.error_codes() == ["BLOB_UPLOAD_UNKNOWN"], status.describe()

        img = images.random_image(label="after-restart", layer_count=2, layer_size=MIB)
        push_image(client, "s3/restart", img, "v1")
        assert_pulls_whole(client, "s3/restart", img, "v1")
        checked = harness.run_cli("fsck", *flags)
        assert checked.returncode == 0 and "ok: no problems found" in checked.stdout, (
            checked.stdout + checked.stderr
        )
    finally:
        reg.stop()


def abort_every_multipart_upload(server: s3server.S3Server) -> int:
    s3 = get_session().create_client(
        "s3",
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=s3server.ACCESS_KEY,
        aws_secret_access_key=s3server.SECRET_KEY,
        config=Config(s3={"addressing_style": "path"}),
    )
    uploads = s3.list_multipart_uploads(Bucket=server.bucket).get("Uploads", [])
    for upload in uploads:
        s3.abort_multipart_upload(Bucket=server.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    s3.close()
    return len(uploads)


def test_multipart_uploads_lost_mid_push_give_upload_unknown_and_lose_nothing_stored(
    s3_server: s3server.S3Server, s3_env: None, tmp_path: Path
) -> None:
    flags = s3_flags(s3_server, f"lost-{uuid.uuid4().hex[:8]}")
    reg = start_replica(tmp_path / "registry", flags)
    try:
        client = reg.client(None)
        stored = images.random_image(label="stored-before", layer_count=2, layer_size=MIB)
        push_image(client, "s3/lost", stored, "v1")
        blob = os.urandom(20 * MIB)
        started = client.request("POST", "/v2/s3/lost/blobs/uploads/")
        assert started.status == 202, started.describe()
        first = patch(client, harness.upload_path(started), blob[: 9 * MIB], 0)  # one 8 MiB part + a tail
        assert first.status == 202, first.describe()
        location = harness.upload_path(first)

        assert abort_every_multipart_upload(s3_server) >= 1

        lost = patch(client, location, blob[9 * MIB :], 9 * MIB)  # needs the upload for its next part
        assert lost.status == 404 and lost.error_codes() == ["BLOB_UPLOAD_UNKNOWN"], lost.describe()
        assert b"start the upload again" in lost.body, lost.describe()
        status = client.request("GET", location)
        assert status.status == 404 and status.error_codes() == ["BLOB_UPLOAD_UNKNOWN"], status.describe()

        again = images.random_image(label="pushed-after", layer_count=1, layer_size=9 * MIB)
        push_image(client, "s3/lost", again, "v2")
        for img, tag in ((stored, "v1"), (again, "v2")):
            assert_pulls_whole(client, "s3/lost", img, tag)
        checked = harness.run_cli("fsck", *flags)
        assert checked.returncode == 0 and "ok: no problems found" in checked.stdout, (
            checked.stdout + checked.stderr
        )
    finally:
        reg.stop()
