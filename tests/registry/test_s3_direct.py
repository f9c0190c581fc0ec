"""The S3 driver's direct requests (storage/s3direct.py): what goes on the wire is what was signed.

Covers: every direct operation (PutObject with metadata, GetObject, HeadObject, DeleteObject(s),
UploadPart, ListObjectsV2) reaches a server that checks its SigV4 signature from the request as received
(raw path and query, the signed headers, the payload hash against the body; over https, verified
against the configured CA, UNSIGNED-PAYLOAD), with a key that needs quoting; gofakes3 checks no
signatures, so a small aiohttp server stands in for that check. Throttling and 5xx answers are retried
and a refusal is not; an error keeps botocore's shape (ClientError with the XML Code, "404" for a
bodiless HEAD) and a missing object is FileNotFoundError or None above it. Against gofakes3: keys with
spaces, plus signs, tildes and non-ASCII round-trip through put, head, list, get and delete. The base
URL comes from botocore's own addressing (path and virtual-hosted styles).
"""

from __future__ import annotations

import datetime
import hashlib
import pathlib
import ssl
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from dockyard_common import pki
from dockyard_registry.storage import s3, s3direct
from tests.support import s3server

ACCESS, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
KEY = "dir/a b+c~ü%.txt"  # every character that needs (or must not get) quoting in a path
LISTING = (
    b'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    b"<IsTruncated>false</IsTruncated><EncodingType>url</EncodingType><Contents><Key>dir/a+b%2Bc~%C3%BC%25.txt</Key>"
    b"<LastModified>2026-12-07T05:00:00.000Z</LastModified></Contents>"
    b"<CommonPrefixes><Prefix>dir/sub/</Prefix></CommonPrefixes></ListBucketResult>"
)


def _verify(request: web.Request, body: bytes) -> None:
    """Recompute the request's SigV4 signature from what arrived; AssertionError when it differs."""
    scheme, _, fields = request.headers["Authorization"].partition(" ")
    assert scheme == "AWS4-HMAC-SHA256"
    parts = dict(field.strip().split("=", 1) for field in fields.split(","))
    signed = parts["SignedHeaders"].split(";")
    assert {"host", "x-amz-date", "x-amz-content-sha256"} <= set(signed)
    received = AWSRequest(
        method=request.method,
        url=f"{request.scheme}://{request.host}{request.raw_path}",
        headers={name: request.headers[name] for name in signed if name != "host"},
    )
    received.context["timestamp"] = request.headers["X-Amz-Date"]
    signer = S3SigV4Auth(Credentials(ACCESS, SECRET), "s3", "us-east-1")
    expected = signer.signature(signer.string_to_sign(received, signer.canonical_request(received)), received)
    assert parts["Signature"] == expected, "signature does not match the request as received"
    # As s3.py configures the client: the payload's hash over plain http only.
    payload = "UNSIGNED-PAYLOAD" if request.secure else hashlib.sha256(body).hexdigest()
    assert request.headers["X-Amz-Content-SHA256"] == payload


class _Server:
    """Answers as S3 would, after checking each request's signature; `script` can override answers."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []  # method, decoded path, raw query
        self.script: list[Callable[[], web.Response]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        _verify(request, body)
        path, _, query = request.raw_path.partition("?")
        self.seen.append((request.method, urllib.parse.unquote(path), query))
        if self.script:
            return self.script.pop(0)()
        if request.method == "HEAD":
            modified = "Mon, 07 Dec 2026 05:00:00 GMT"
            headers = {"Content-Length": "5", "Last-Modified": modified, "x-amz-meta-size": "42"}
            return web.Response(headers=headers)
        if request.method == "GET" and "list-type" in request.query:
            return web.Response(body=LISTING, content_type="application/xml")
        if request.method == "GET":
            return web.Response(body=b"hello")
        return web.Response(
            headers={"ETag": '"abc"'}, body=b"<DeleteResult/>" if request.method == "POST" else b""
        )


@pytest.fixture(params=["http", "https"])
async def signed(
    request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> AsyncIterator[tuple[_Server, s3.S3Driver]]:
    """The checking server and a driver on it: over plain http, or https with the driver given its CA."""
    tls, ca_file = None, None
    if request.param == "https":
        now, year = datetime.datetime.now(datetime.UTC), datetime.timedelta(days=365)
        ca = pki.new_ca(common_name="test S3 CA", now=now, duration=year)
        cert = pki.issue_server_cert(
            ca=ca, common_name="s3", dns_names=[], ip_addresses=["127.0.0.1"], now=now, duration=year
        )
        (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
        (tmp_path / "tls.crt").write_bytes(cert.cert_pem)
        (tmp_path / "tls.key").write_bytes(cert.key_pem)
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
        ca_file = tmp_path / "ca.crt"
    server = _Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    config = s3.S3Config(
        bucket="b", endpoint=f"{request.param}://127.0.0.1:{port}", access_key=ACCESS, secret_key=SECRET,
        ca_file=ca_file,
    )  # fmt: skip
    driver = await s3.S3Driver(config).start()
    try:
        yield server, driver
    finally:
        await driver.aclose()
        await runner.cleanup()


async def test_every_direct_request_is_signed_as_it_arrives(signed: tuple[_Server, s3.S3Driver]) -> None:
    server, driver = signed
    direct = driver.direct
    assert await direct.put(KEY, b"hello", metadata={"size": "5"}) == '"abc"'
    assert await direct.get(KEY) == b"hello"
    head = await direct.head(KEY)
    assert (head.size, head.metadata, head.modified) == (5, {"size": "42"}, 1796619600.0)
    await direct.delete(KEY)
    await direct.delete_many([KEY, "other<&>"])
    assert await direct.upload_part(KEY, "id/with+odd=chars", 3, bytearray(b"part")) == '"abc"'
    page = await direct.list_page("dir/", delimiter="/", max_keys=5)
    assert page.keys == [("dir/a b+c~ü%.txt", 1796619600.0)] and page.prefixes == ["dir/sub/"]
    assert page.next_token is None
    methods = [(m, p) for m, p, _ in server.seen]
    on_key = [("PUT", f"/b/{KEY}"), ("GET", f"/b/{KEY}"), ("HEAD", f"/b/{KEY}"), ("DELETE", f"/b/{KEY}")]
    assert methods == [*on_key, ("POST", "/b"), ("PUT", f"/b/{KEY}"), ("GET", "/b")]
    assert server.seen[5][2] == "partNumber=3&uploadId=id%2Fwith%2Bodd%3Dchars"


async def test_throttling_is_retried_and_a_refusal_is_not(
    signed: tuple[_Server, s3.S3Driver], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, driver = signed
    monkeypatch.setattr(s3direct, "MAX_BACKOFF", 0.0)
    slow = b"<Error><Code>SlowDown</Code><Message>reduce your rate</Message></Error>"
    server.script = [lambda: web.Response(status=503, body=slow), lambda: web.Response(status=500)]
    await driver.put("k", b"data")
    assert len(server.seen) == 3
    denied = b"<Error><Code>AccessDenied</Code><Message>no</Message></Error>"
    server.script = [lambda: web.Response(status=403, body=denied)]
    with pytest.raises(ClientError) as refused:
        await driver.put("k", b"data")
    assert refused.value.response["Error"] == {"Code": "AccessDenied", "Message": "no"}
    assert len(server.seen) == 4
    server.script = [lambda: web.Response(status=500)] * s3direct.MAX_ATTEMPTS
    with pytest.raises(ClientError):
        await driver.put("k", b"data")
    assert len(server.seen) == 4 + s3direct.MAX_ATTEMPTS
    missing = b"<Error><Code>NoSuchKey</Code><Message>gone</Message></Error>"
    server.script = [lambda: web.Response(status=404, body=missing), lambda: web.Response(status=404)]
    with pytest.raises(FileNotFoundError):
        await driver.get("k")
    assert await driver.head("k") is None


@pytest.mark.parametrize(
    ("addressing", "base"),
    [("path", "https://s3.example.test/bucket/"), ("virtual", "https://bucket.s3.example.test/")],
)
async def test_the_base_url_follows_botocores_addressing(addressing: str, base: str) -> None:
    config = s3.S3Config(
        bucket="bucket",
        endpoint="https://s3.example.test",
        addressing=addressing,
        access_key="id",
        secret_key="s",
    )
    async with s3.S3Driver(config) as driver:  # no request is made
        assert driver.direct._base == base


async def test_keys_needing_quotes_round_trip_on_a_real_server(s3_server: s3server.S3Server) -> None:
    config = s3.S3Config(
        bucket=s3_server.bucket, endpoint=s3_server.endpoint, prefix=f"t-{uuid.uuid4().hex}",
        access_key=s3server.ACCESS_KEY, secret_key=s3server.SECRET_KEY,
    )  # fmt: skip
    async with s3.S3Driver(config) as driver:
        await driver.put(KEY, b"odd")
        await driver.put("dir/plain", b"plain")
        info = await driver.stat(KEY)
        assert info is not None and info.size == 3
        assert await driver.list("dir") == ["a b+c~ü%.txt", "plain"]
        assert await driver.get(KEY) == b"odd"
        await driver.delete("dir")
        assert await driver.list("dir") == [] and await driver.stat(KEY) is None
