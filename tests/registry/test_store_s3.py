"""The store on S3: `Store` over `storage.blocking.BlockingS3Driver` against a real gofakes3 server.

Covers: a chunked upload committed into a repository and read back (whole and from an offset); blob
redirect URLs are presigned and fetch the blob, and none when redirects are off; an upload whose chunks go
to two stores (two replicas) on the same bucket completes, its bytes hashed once committed; with a wrong
digest such an upload is refused and gone; a chunk that fails midway is rolled back; a manifest push,
fsck clean afterwards; gc removes an unreferenced blob and keeps the referenced ones; the facade refuses
to shorten an upload to anything but where its writer opened it; an upload whose multipart upload the
bucket aborted (a lifecycle rule, a server that restarted) is unknown and gone, and what was stored
stays; an endpoint that refuses connections is StorageUnavailableError (the HTTP edge's retryable 503).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from dockyard_registry import digest, fsck, gc, paths, store
from dockyard_registry.storage import blocking, s3
from tests.registry.conftest import OCI_MANIFEST, make_image
from tests.support import s3server


@pytest.fixture
def config(s3_server: s3server.S3Server) -> s3.S3Config:
    return s3.S3Config(
        bucket=s3_server.bucket,
        endpoint=s3_server.endpoint,
        prefix=f"t-{uuid.uuid4().hex}",
        access_key=s3server.ACCESS_KEY,
        secret_key=s3server.SECRET_KEY,
        part_size=64 * 1024,  # small parts: chunked pushes in these tests use real multipart uploads
    )


@pytest.fixture
def open_driver(config: s3.S3Config) -> Iterator[list[blocking.BlockingS3Driver]]:
    opened: list[blocking.BlockingS3Driver] = []
    yield opened
    for driver in opened:
        driver.close()


def _store(config: s3.S3Config, opened: list[blocking.BlockingS3Driver]) -> store.Store:
    driver = blocking.BlockingS3Driver.start(config)
    opened.append(driver)
    return store.Store(driver)


async def _body(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _failing(data: bytes) -> AsyncIterator[bytes]:
    yield data
    raise ConnectionResetError("client went away")


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 (an http URL we presigned)
        data: bytes = resp.read()
    return data


def _digest(data: bytes) -> digest.Digest:
    return digest.parse("sha256:" + hashlib.sha256(data).hexdigest())


async def _push(st: store.Store, repo: str, data: bytes) -> digest.Digest:
    upload = st.start_upload(repo)
    dgst = _digest(data)
    await st.finish_upload(repo, upload, dgst=dgst, body=_body(data))
    return dgst


async def test_chunked_upload_is_committed_and_read_back(
    config: s3.S3Config, open_driver: list[blocking.BlockingS3Driver]
) -> None:
    st = _store(config, open_driver)
    data = bytes(range(256)) * 1000  # several parts of 64 KiB and a tail
    upload = st.start_upload("team/app")
    assert await st.write_chunk("team/app", upload, body=_body(data[:100_000]), start=0) == 100_000
    size = await st.finish_upload("team/app", upload, dgst=_digest(data), body=_body(data[100_000:]))
    assert size == len(data)
    assert st.blob_size("team/app", _digest(data)) == len(data)
    with st.open_blob(_digest(data), offset=70_000) as f:
        assert f.read() == data[70_000:]
    assert st.maintenance.upload_ids() == []


async def test_blob_redirect_is_a_presigned_url_unless_turned_off(
    config: s3.S3Config, open_driver: list[blocking.BlockingS3Driver]
) -> None:
    st = _store(config, open_driver)
    dgst = await _push(st, "r", b"redirected bytes")
    url = st.blob_redirect_url(dgst)
    assert url is not None and "X-Amz-Signature" in url
    assert await asyncio.to_thread(_fetch, url) == b"redirected bytes"
    quiet = _store(dataclasses.replace(config, redirect=False), open_driver)
    assert quiet.blob_redirect_url(dgst) is None


async def test_upload_whose_chunks_go_to_two_replicas_completes(
    config: s3.S3Config, open_driver: list[blocking.BlockingS3Driver]
) -> None:
    one, two = _store(config, open_driver), _store(config, open_driver)
    data = b"".join(bytes([i]) * 50_000 for i in range(6))
    upload = one.start_upload("r")
    await one.write_chunk("r", upload, body=_body(data[:100_000]), start=0)
    await two.write_chunk("r", upload, body=_body(data[100_000:200_000]), start=100_000)
    assert one.upload_size("r", upload) == 200_000
    await one.write_chunk("r", upload, body=_body(data[200_000:250_000]), start=200_000)
    await two.finish_upload("r", upload, dgst=_digest(data), body=_body(data[250_000:]), start=250_000)
    with one.open_blob(_digest(data)) as f:
        assert f.read() == data
    assert one.blob_size("r", _digest(data)) == len(data)


async def test_upload_across_replicas_with_a_wrong_digest_is_refused_and_gone(
    config: s3.S3Config, open_driver: list[blocking.BlockingS3Driver]
) -> None:
    one, two = _store(config, open_driver), _store(config, open_driver)
    upload = one.start_upload("r")
    await one.write_chunk("r", upload, body=_body(b"first "), start=0)
    with pytest.raises(store.DigestMismatchError):
        await two.finish_upload("r", upload, dgst=_digest(b"other"), body=_body(b"second"))
    with pytest.raises(store.UploadUnknownError):
        one.upload_size("r", upload)
    with pytest.raises(store.BlobUnknownError):
        one.blob_size("r", _digest(b"first second"))


async def test_a_chunk_failing_midway_is_rolled_back(
    config: s3.S3Config, open_driver: list[blocking.BlockingS3Driver]
) -> None:
    st = _store(config, open_driver)
    upload = st.start_upload("r")
    await st.write_chunk("r", upload, body=_body(b"kept "), start=0)
    with pytest.raises(ConnectionResetError):
        await st.write_chunk("r", upload, body=_failing(b"x" * 100_000), start=5)
    assert st.upload_size("r", upload) == 5
    await st.finish_upload("r", upload, dgst=_digest(b"kept tail"), body=_body(b"tail"), start=5)
    with st.open_blob(_digest(b"kept tail")) as f:
        assert f.read() == b"kept tail"


async def test_gc_on_s3_removes_an_unreferenced_blob_and_fsck_is_clean(
    config: s3.S3Config, open_driver: list[blocking.BlockingS3Driver]
) -> None:
    st = _store(config, open_driver)
    image = make_image()
    await _push(st, "r", image.config)
    await _push(st, "r", image.layer)
    st.put_manifest("r", "v1", data=image.manifest, content_type=OCI_MANIFEST)
    orphan = await _push(st, "r", b"orphan bytes")
    later = time.time() + 7200  # an injected clock: everything stored is two hours old
    report = gc.collect(st, grace=3600, dry_run=False, clock=lambda: later)
    assert str(orphan) in report.blobs and not report.errors
    assert st.maintenance.blob_size(orphan) is None
    assert st.maintenance.blob_size(_digest(image.layer)) == len(image.layer)
    assert st.get_manifest("r", "v1").data == image.manifest
    checked = fsck.check(st)
    assert checked.corruption == [] and checked.dangling == []


def test_the_facade_refuses_to_shorten_an_upload_elsewhere(
    config: s3.S3Config, open_driver: list[blocking.BlockingS3Driver]
) -> None:
    driver = blocking.BlockingS3Driver.start(config)
    open_driver.append(driver)
    writer = driver.open_writer(paths.upload_data("0" * 32))
    writer.write(b"abc")
    with pytest.raises(OSError, match="rolls back only"):
        writer.truncate(1)
    writer.truncate(0)
    writer.close()
    assert driver.size(paths.upload_data("0" * 32)) == 0


async def test_an_upload_whose_multipart_upload_the_bucket_aborted_is_unknown_and_gone(
    s3_server: s3server.S3Server, config: s3.S3Config, open_driver: list[blocking.BlockingS3Driver]
) -> None:
    from botocore.session import get_session

    st = _store(config, open_driver)
    kept = await _push(st, "r", b"stored before")
    upload = st.start_upload("r")
    await st.write_chunk("r", upload, body=_body(b"a" * 100_000), start=0)  # one 64 KiB part and a tail
    client = get_session().create_client(
        "s3",
        endpoint_url=s3_server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=s3server.ACCESS_KEY,
        aws_secret_access_key=s3server.SECRET_KEY,
    )
    prefix = f"{config.prefix}/"
    for found in client.list_multipart_uploads(Bucket=s3_server.bucket).get("Uploads", []):
        if found["Key"].startswith(prefix):  # what a lifecycle rule or a restarted server does
            client.abort_multipart_upload(
                Bucket=s3_server.bucket, Key=found["Key"], UploadId=found["UploadId"]
            )
    client.close()

    with pytest.raises(store.UploadUnknownError, match="lost by the storage backend"):
        await st.write_chunk("r", upload, body=_body(b"b" * 100_000), start=100_000)
    with pytest.raises(store.UploadUnknownError):
        st.upload_size("r", upload)
    assert st.read_blob(kept) == b"stored before"


def test_an_unreachable_endpoint_is_storage_unavailable(config: s3.S3Config) -> None:
    from tests.support import procs

    closed = procs.reserve_port()  # reserved, never listening: connections are refused
    try:
        dead = dataclasses.replace(config, endpoint=f"http://127.0.0.1:{closed.number}")
        driver = blocking.BlockingS3Driver.start(dead)
        try:
            with pytest.raises(store.StorageUnavailableError, match="unreachable"):
                driver.get("anything")
        finally:
            driver.close()
    finally:
        closed.release()
