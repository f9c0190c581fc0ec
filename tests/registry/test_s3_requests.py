"""What a push costs on S3, and the writer state's layout, against a real gofakes3 server.

Covers: a small blob pushed as skopeo pushes it (HEAD, POST, PATCH, PUT) stays within a request budget,
creates no multipart upload and copies nothing (it is one PUT, straight to its content-addressed key), and
leaves no session or writer state behind; a blob that fills parts is completed and moved into place with
no multipart upload left open; an upload opened by the previous version (state JSON plus a separate tail
object) is resumed, completed and cleaned up; abandoning a writer aborts a multipart upload it created and
never recorded; parts go out in parallel, never more than MAX_IN_FLIGHT at once, from buffers filled
again once their part is stored (never while it is being sent); payloads are signed over plain http only
(https sends UNSIGNED-PAYLOAD).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from botocore.session import get_session

from dockyard_registry import digest, fence, paths, store
from dockyard_registry.storage import blocking, s3, s3writer
from tests.support import s3server

# Requests one small blob may cost through the store: HEAD (missing) + POST + PATCH + PUT, and one read of
# the gc fence. Before issue 14's request diet it took 50 (a missing path was three requests, every upload a
# multipart upload, every commit a copy and a delete); now it is 20.
SMALL_PUSH_BUDGET = 22


@pytest.fixture
def config(s3_server: s3server.S3Server) -> s3.S3Config:
    return s3.S3Config(
        bucket=s3_server.bucket,
        endpoint=s3_server.endpoint,
        prefix=f"t-{uuid.uuid4().hex}",
        access_key=s3server.ACCESS_KEY,
        secret_key=s3server.SECRET_KEY,
        part_size=64 * 1024,
    )


@pytest.fixture
def raw(s3_server: s3server.S3Server) -> Iterator[Any]:
    """A plain botocore client on the same bucket: what the test sees of the bucket, behind the driver."""
    client = get_session().create_client(
        "s3",
        endpoint_url=s3_server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=s3server.ACCESS_KEY,
        aws_secret_access_key=s3server.SECRET_KEY,
    )
    yield client
    client.close()


@pytest.fixture
def facade(config: s3.S3Config) -> Iterator[blocking.BlockingS3Driver]:
    driver = blocking.BlockingS3Driver.start(config)
    yield driver
    driver.close()


def _keys(raw: Any, bucket: str, prefix: str) -> list[str]:
    listed = raw.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for item in listed.get("Contents") or [])


def _open_multipart(raw: Any, bucket: str, prefix: str) -> list[str]:
    found = raw.list_multipart_uploads(Bucket=bucket).get("Uploads") or []
    return [u["Key"] for u in found if u["Key"].startswith(prefix)]


class _Calls:
    """Every S3 operation the driver asks for from now on, by name: through its aiobotocore client and
    through its direct requests (s3direct.py)."""

    def __init__(self, driver: blocking.BlockingS3Driver) -> None:
        self._client: collections.Counter[str] = collections.Counter()
        self._direct = driver._driver.direct.calls
        self._direct_before = collections.Counter(self._direct)
        driver._driver._client.meta.events.register("before-call.s3", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self._client[model.name] += 1

    def spent(self) -> dict[str, int]:
        return dict(self._client + (self._direct - self._direct_before))


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _digest(data: bytes) -> digest.Digest:
    return digest.parse("sha256:" + hashlib.sha256(data).hexdigest())


async def test_a_small_blob_push_is_a_few_requests_and_one_put_of_its_bytes(
    config: s3.S3Config, facade: blocking.BlockingS3Driver, raw: Any
) -> None:
    # The fence's "no gc run is live" read is amortised over 2 s of pushes; a frozen clock makes it one read
    # here, however slowly this machine runs the push.
    st = store.Store(facade, gc_fence=fence.GcFence(facade, clock=lambda: 0.0))
    data = os.urandom(48 * 1024)  # less than a part
    dgst = _digest(data)
    calls = _Calls(facade)
    with pytest.raises(store.BlobUnknownError):
        st.blob_size("r", dgst)  # the client's HEAD before it uploads
    upload = st.start_upload("r")
    await st.write_chunk("r", upload, body=_body(data))
    await st.finish_upload("r", upload, dgst=dgst)
    spent = calls.spent()
    assert sum(spent.values()) <= SMALL_PUSH_BUDGET, spent
    assert "CreateMultipartUpload" not in spent and "CopyObject" not in spent, spent
    assert st.read_blob(dgst) == data
    left = _keys(raw, config.bucket, config.prefix + "/")
    assert not [k for k in left if "/_s3writers/" in k or "/uploads/" in k], left


async def test_a_blob_filling_parts_is_completed_and_no_multipart_upload_stays_open(
    config: s3.S3Config, facade: blocking.BlockingS3Driver, raw: Any
) -> None:
    st = store.Store(facade)
    data = os.urandom(300 * 1024)  # four 64 KiB parts and a tail, sent over two requests
    dgst = _digest(data)
    upload = st.start_upload("r")
    await st.write_chunk("r", upload, body=_body(data[:150_000]), start=0)
    assert st.upload_size("r", upload) == 150_000
    await st.finish_upload("r", upload, dgst=dgst, body=_body(data[150_000:]), start=150_000)
    with st.open_blob(dgst) as f:
        assert f.read() == data
    assert _open_multipart(raw, config.bucket, config.prefix + "/") == []
    left = _keys(raw, config.bucket, config.prefix + "/")
    assert not [k for k in left if "/_s3writers/" in k or "/uploads/" in k], left


async def test_an_upload_in_the_previous_layout_resumes_and_leaves_nothing(
    config: s3.S3Config, raw: Any
) -> None:
    # What the previous version left in the bucket mid-upload: a multipart upload with one part, the
    # bytes past it in a tail object, and a JSON state naming both.
    path = paths.upload_data("a" * 32)
    key = f"{config.prefix}/{path}"
    state_key = f"{config.prefix}/{s3.WRITERS}/{path}/state"
    tail_key = f"{config.prefix}/{s3.WRITERS}/{path}/tail-{uuid.uuid4().hex}"
    first, tail, more = os.urandom(64 * 1024), os.urandom(1000), os.urandom(100 * 1024)
    upload_id = raw.create_multipart_upload(Bucket=config.bucket, Key=key)["UploadId"]
    etag = raw.upload_part(Bucket=config.bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=first)[
        "ETag"
    ]
    raw.put_object(Bucket=config.bucket, Key=tail_key, Body=tail)
    old = {"upload_id": upload_id, "parts": [[1, etag, len(first)]], "tail": tail_key, "tail_size": len(tail)}
    raw.put_object(Bucket=config.bucket, Key=state_key, Body=json.dumps(old).encode())

    async with s3.S3Driver(config) as driver:
        info = await driver.writer_stat(path)
        assert info is not None and info.size == len(first) + len(tail)
        writer = await driver.writer(path)
        assert writer.size == len(first) + len(tail)
        await writer.write(more)
        await writer.close()
        assert _keys(raw, config.bucket, tail_key) == []  # the new state carries the tail itself
        writer = await driver.writer(path)
        await writer.commit()
        assert await driver.get(path) == first + tail + more
    assert _keys(raw, config.bucket, f"{config.prefix}/{s3.WRITERS}/") == []
    assert _open_multipart(raw, config.bucket, config.prefix + "/") == []


async def test_abandon_aborts_a_multipart_upload_the_handle_created_and_never_recorded(
    config: s3.S3Config, raw: Any
) -> None:
    async with s3.S3Driver(config) as driver:
        writer = await driver.writer("u/data")
        await writer.write(b"kept")
        await writer.close()
        writer = await driver.writer("u/data")
        await writer.write(os.urandom(200 * 1024))  # a failed chunk: three parts sent, a multipart upload
        assert writer.multipart
        await writer.abandon()
        assert _open_multipart(raw, config.bucket, config.prefix + "/") == []
        writer = await driver.writer("u/data")
        assert writer.size == 4 and not writer.multipart
        await writer.write(b" and more")
        await writer.commit()
        assert await driver.get("u/data") == b"kept and more"


async def test_parts_are_sent_in_parallel_up_to_the_bound(
    config: s3.S3Config, raw: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with s3.S3Driver(config) as driver:
        sending, most = 0, 0
        upload_part = driver.direct.upload_part

        async def slow_part(*args: Any) -> str:
            nonlocal sending, most
            sending += 1
            most = max(most, sending)
            try:
                await asyncio.sleep(0.01)  # a slow server: the writer fills the next parts meanwhile
                return await upload_part(*args)
            finally:
                sending -= 1

        monkeypatch.setattr(driver.direct, "upload_part", slow_part)
        data = os.urandom(10 * 64 * 1024 + 5)  # ten parts and a tail, in one write
        writer = await driver.writer("u/data")
        await writer.write(data)
        await writer.commit()
        assert most == s3writer.MAX_IN_FLIGHT == 2
        assert await driver.get("u/data") == data
    assert _open_multipart(raw, config.bucket, config.prefix + "/") == []


async def test_part_buffers_are_filled_again_and_every_part_keeps_its_bytes(
    config: s3.S3Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with s3.S3Driver(config) as driver:
        sent: list[Any] = []  # every part's buffer, kept alive so that identities stay distinct
        upload_part = driver.direct.upload_part

        async def slow_part(key: str, upload_id: str, number: int, body: memoryview) -> str:
            sent.append(body.obj)
            await asyncio.sleep(0.005)  # parts still in flight while the next ones fill
            return await upload_part(key, upload_id, number, body)

        monkeypatch.setattr(driver.direct, "upload_part", slow_part)
        data = os.urandom(12 * 64 * 1024 + 77)  # twelve parts and a tail
        writer = await driver.writer("u/data")
        for start in range(0, len(data), 10_000):  # writes that straddle the parts' edges
            await writer.write(data[start : start + 10_000])
        await writer.commit()
        # A buffer reused while its part was still being sent would have changed that part's bytes.
        assert await driver.get("u/data") == data
        assert len(sent) == 13
        assert len({id(b) for b in sent}) <= s3writer.MAX_IN_FLIGHT + 1


@pytest.mark.parametrize(
    ("endpoint", "signed"), [("http://127.0.0.1:9", True), ("https://s3.example.test", False)]
)
async def test_payloads_are_signed_over_plain_http_only(endpoint: str, signed: bool) -> None:
    config = s3.S3Config(bucket="b", endpoint=endpoint, access_key="id", secret_key="secret")
    async with s3.S3Driver(config) as driver:  # no request is made
        assert driver._client.meta.config.s3["payload_signing_enabled"] is signed
