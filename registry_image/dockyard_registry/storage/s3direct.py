"""The S3 driver's hot requests, signed by botocore's SigV4 signer and sent on aiohttp without botocore's
request pipeline (issue 14: small pushes on S3 were bound by the client's CPU per request).

Owns: PutObject of a body in memory, GetObject of a whole object, HeadObject, DeleteObject(s) and
UploadPart, for s3.py and s3writer.py. Must not: take over anything else. CreateMultipartUpload,
CompleteMultipartUpload (whose 200 may carry an error), CopyObject, listings, ranged streaming reads and
presigning stay on the aiobotocore client, which also resolves the endpoint and the credentials used here.

Why: a small push is about twenty S3 requests, and each cost about 2.5 ms of CPU in botocore (measured with
`bench.s3_store_cpu` and cProfile): event hooks, parameter validation and serialisation through the service
model, endpoint ruleset resolution, a user-agent string rebuilt twice, response parsing through the model.
These five operations are a URL, a few headers and a status; what must stay exactly right is the signature,
so that is botocore's own `S3SigV4Auth` (payload signing as the client's config says: over plain http the
body's sha256, over https UNSIGNED-PAYLOAD). The URL's base is taken once from a presigned URL made by the
client, so addressing style, custom endpoints and AWS's regional hosts are botocore's decision, not ours.

Errors keep botocore's shape, so the callers' handling is one: an S3 error response is a `ClientError` with
the XML body's Code (a bodiless HEAD error: the status, "404"), and a transport failure after the last
attempt is botocore's `EndpointConnectionError`, `ConnectionClosedError` or `ReadTimeoutError`. Retries
follow botocore's "standard" mode as the client is configured (5 attempts; connection errors, timeouts,
500/502/503/504, throttling and transient codes; full-jitter backoff, base 2, at most 20 s), without its
client-wide retry quota. Timeouts are botocore's defaults: 60 s to connect, 60 s between reads.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import datetime
import email.utils
import hashlib
import random
import ssl
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

import aiohttp
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import SSLError as BotoSSLError
from botocore.httpsession import get_cert_path
from yarl import URL

if TYPE_CHECKING:
    from aiohttp.abc import AbstractStreamWriter

MAX_ATTEMPTS = 5
MAX_BACKOFF = 20.0
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=60, sock_read=60)
# A request body goes to the socket this much at a time (see _Slices).
SEND_SLICE = 256 << 10
_RETRY_STATUS = {429, 500, 502, 503, 504}
_RETRY_CODES = {
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "RequestLimitExceeded", "BandwidthLimitExceeded", "LimitExceededException",
    "RequestThrottled", "SlowDown", "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete",
}  # fmt: skip
_META = "x-amz-meta-"
_BODIES = ("PUT", "POST")
# A request body: a part being sent is a view of the writer's buffer (s3writer.py), not a copy of it.
Body = bytes | bytearray | memoryview


@dataclasses.dataclass(frozen=True)
class Head:
    """What HeadObject says of an object."""

    size: int
    modified: float  # seconds since the epoch
    metadata: dict[str, str]


@dataclasses.dataclass(frozen=True)
class Listing:
    """One page of ListObjectsV2: keys with last-modified times, common prefixes, the next page's token."""

    keys: list[tuple[str, float]]
    prefixes: list[str]
    next_token: str | None


@dataclasses.dataclass(frozen=True)
class _Response:
    status: int
    headers: Mapping[str, str]  # aiohttp's case-insensitive headers
    body: bytes


class DirectS3:
    """Open with `await DirectS3.open(client, credentials, ...)`; `aclose()` closes its connections."""

    def __init__(
        self, *, base: str, region: str, credentials: Any, config: Config, session: aiohttp.ClientSession,
        proxy: str | None = None,
    ) -> None:  # fmt: skip
        self._base = base  # "<scheme>://<host>/[<bucket>/]": a key's quoted path is appended
        self._region = region
        self._credentials = credentials
        self._config = config  # its s3.payload_signing_enabled decides the payload hash, as for the client
        self._session = session
        self._proxy = proxy
        self.calls: collections.Counter[str] = collections.Counter()  # operations asked for, by name

    @classmethod
    async def open(
        cls, client: Any, *, bucket: str, credentials: Any, config: Config, ca_file: str | None,
        max_connections: int,
    ) -> DirectS3:  # fmt: skip
        probe: str = await client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"})
        split = urllib.parse.urlsplit(probe)
        if not split.path.endswith("/k"):
            raise ValueError(f"cannot derive the bucket's URL from {probe!r}")
        base = urllib.parse.urlunsplit((split.scheme, split.netloc, split.path[:-1], "", ""))
        # The CA bundle botocore would use: the configured one, else certifi's (get_cert_path).
        https = split.scheme == "https"
        context = ssl.create_default_context(cafile=ca_file or get_cert_path(True)) if https else None
        # Proxies from the environment as botocore reads them, looked up once (aiohttp's trust_env would
        # look them up, and the netrc file, in a worker thread for every request).
        proxy = (
            None
            if urllib.request.proxy_bypass(split.netloc)
            else urllib.request.getproxies().get(split.scheme)
        )
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max_connections, ssl=context if context else True),
            timeout=TIMEOUT, auto_decompress=False, skip_auto_headers=("Content-Type",),
        )  # fmt: skip
        return cls(
            base=base, region=client.meta.region_name, credentials=credentials, config=config,
            session=session, proxy=proxy,
        )  # fmt: skip

    async def aclose(self) -> None:
        await self._session.close()

    # ------------------------------------------------------------------------------------ operations
    async def put(self, key: str, body: Body, *, metadata: Mapping[str, str] | None = None) -> str:
        """PutObject; the new object's ETag."""
        headers = {f"{_META}{k}": v for k, v in (metadata or {}).items()}
        resp = await self._request("PutObject", "PUT", key, headers=headers, body=body)
        return resp.headers.get("ETag", "")

    async def get(self, key: str) -> bytes:
        return (await self._request("GetObject", "GET", key)).body

    async def head(self, key: str) -> Head:
        resp = await self._request("HeadObject", "HEAD", key)
        h = resp.headers
        metadata = {k.lower()[len(_META) :]: v for k, v in h.items() if k.lower().startswith(_META)}
        modified = email.utils.parsedate_to_datetime(h["Last-Modified"]).timestamp()
        return Head(size=int(h.get("Content-Length", "0")), modified=modified, metadata=metadata)

    async def delete(self, key: str) -> None:
        await self._request("DeleteObject", "DELETE", key)

    async def delete_many(self, keys: list[str]) -> None:
        """DeleteObjects (quiet) of at most 1,000 keys; missing keys are no error."""
        objects = "".join(f"<Object><Key>{escape(k)}</Key></Object>" for k in keys)
        body = f"<Delete><Quiet>true</Quiet>{objects}</Delete>".encode()
        md5 = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
        await self._request("DeleteObjects", "POST", "", query={"delete": ""}, body=body,
                            headers={"Content-MD5": md5, "Content-Type": "application/xml"})  # fmt: skip

    async def upload_part(self, key: str, upload_id: str, number: int, body: Body) -> str:
        """UploadPart; the part's ETag."""
        query = {"partNumber": str(number), "uploadId": upload_id}
        resp = await self._request("UploadPart", "PUT", key, query=query, body=body)
        return resp.headers.get("ETag", "")

    async def list_page(
        self,
        prefix: str,
        *,
        delimiter: str | None = None,
        max_keys: int | None = None,
        token: str | None = None,
    ) -> Listing:
        """One page of ListObjectsV2 under `prefix` (keys URL-encoded on the wire, as botocore asks)."""
        query = {"list-type": "2", "prefix": prefix, "encoding-type": "url"}
        if delimiter is not None:
            query["delimiter"] = delimiter
        if max_keys is not None:
            query["max-keys"] = str(max_keys)
        if token is not None:
            query["continuation-token"] = token
        root = _xml((await self._request("ListObjectsV2", "GET", "", query=query)).body)
        ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
        # Decoded only when the answer says it is encoded (some servers ignore encoding-type), as botocore.
        decode = urllib.parse.unquote_plus if root.findtext(f"{ns}EncodingType") == "url" else str
        keys = [
            (decode(item.findtext(f"{ns}Key") or ""), _timestamp(item.findtext(f"{ns}LastModified") or ""))
            for item in root.iter(f"{ns}Contents")
        ]
        prefixes = [decode(p.findtext(f"{ns}Prefix") or "") for p in root.iter(f"{ns}CommonPrefixes")]
        truncated = (root.findtext(f"{ns}IsTruncated") or "").lower() == "true"
        return Listing(
            keys, prefixes, (root.findtext(f"{ns}NextContinuationToken") or None) if truncated else None
        )

    # -------------------------------------------------------------------------------------- requests
    def _url(self, key: str, query: Mapping[str, str]) -> str:
        # A bucket's own requests (listing, DeleteObjects) go to "/<bucket>" in path style, "/" in virtual.
        base = self._base[:-1] if not key and self._base.count("/") > 3 else self._base
        url = base + urllib.parse.quote(key, safe="/~")
        if query:  # sorted and encoded as SigV4 canonicalises them, so what is signed is what is sent
            pairs = sorted((urllib.parse.quote(k, safe="-_.~"), urllib.parse.quote(v, safe="-_.~"))
                           for k, v in query.items())  # fmt: skip
            url += "?" + "&".join(f"{k}={v}" for k, v in pairs)
        return url

    async def _request(
        self, operation: str, method: str, key: str, *, query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None, body: Body = b"",
    ) -> _Response:  # fmt: skip
        url = self._url(key, query or {})
        self.calls[operation] += 1
        for attempt in range(1, MAX_ATTEMPTS + 1):
            signed = await self._sign(method, url, headers or {}, body)
            try:
                async with self._session.request(
                    method,
                    URL(url, encoded=True),
                    headers=signed,
                    data=_Slices(body) if method in _BODIES else None,
                    proxy=self._proxy,
                ) as resp:
                    found = _Response(resp.status, resp.headers, await resp.read())
            except aiohttp.ClientSSLError as e:
                raise BotoSSLError(endpoint_url=url, error=e) from None
            except (TimeoutError, aiohttp.ClientError) as e:
                failure: Exception = _transport_error(e, url)
            else:
                if 200 <= found.status < 300:
                    return found
                failure = ClientError(_error_response(found), operation)
                if not _retryable(found.status, failure):
                    raise failure
            if attempt == MAX_ATTEMPTS:
                raise failure
            await asyncio.sleep(random.random() * min(MAX_BACKOFF, 2.0 ** (attempt - 1)))
        raise AssertionError("unreachable")

    async def _sign(self, method: str, url: str, headers: Mapping[str, str], body: Body) -> dict[str, str]:
        if self._credentials is None:
            raise NoCredentialsError()
        frozen = await self._credentials.get_frozen_credentials()
        request = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
        request.context["client_config"] = self._config
        S3SigV4Auth(frozen, "s3", self._region).add_auth(request)
        return dict(request.headers.items())


class _Slices(aiohttp.BytesPayload):
    """A request body written to the connection a slice at a time, never copied on the way.

    Given a whole part (8 MiB) in one write, asyncio (3.11) copied what the first send() left over into its
    transport buffer (and slicing a bytes or bytearray copies it once more): about one copy of every part
    byte. Slices of SEND_SLICE, each awaited (aiohttp drains between writes), leave at most a slice's rest to
    copy, and memoryview slices copy nothing. A retried request writes the same bytes again."""

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: AbstractStreamWriter, content_length: int | None) -> None:
        view = memoryview(self._value).cast("B")
        if content_length is not None:
            view = view[:content_length]
        for start in range(0, len(view), SEND_SLICE):
            await writer.write(view[start : start + SEND_SLICE])


def _xml(body: bytes) -> ET.Element:
    # The configured endpoint's own responses, parsed as botocore parses them (xml.etree; expat >= 2.4
    # refuses entity expansion attacks).
    return ET.fromstring(body)  # noqa: S314


def _timestamp(value: str) -> float:
    return datetime.datetime.fromisoformat(value).timestamp()


def _transport_error(error: BaseException, url: str) -> Exception:
    failure: Exception
    if isinstance(error, TimeoutError):  # aiohttp's ServerTimeoutError is one too
        failure = ReadTimeoutError(endpoint_url=url, error=error)
    elif isinstance(error, aiohttp.ClientConnectorError):
        failure = EndpointConnectionError(endpoint_url=url, error=error)
    else:
        failure = ConnectionClosedError(endpoint_url=url, error=error)
    return failure


def _error_response(resp: _Response) -> dict[str, Any]:
    code, message = str(resp.status), ""
    if resp.body:
        try:
            root = _xml(resp.body)
        except ET.ParseError:
            message = resp.body[:200].decode(errors="replace")
        else:
            code = root.findtext("Code") or code
            message = root.findtext("Message") or ""
    return {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": resp.status, "HTTPHeaders": dict(resp.headers)},
    }


def _retryable(status: int, error: ClientError) -> bool:
    return status in _RETRY_STATUS or str(error.response.get("Error", {}).get("Code")) in _RETRY_CODES
