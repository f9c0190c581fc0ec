"""S3 storage driver: the async object contract (base.ObjectDriver) over an S3-compatible bucket.

Owns: mapping storage paths to object keys under an optional prefix, resumable multipart uploads whose
state lives in the bucket, server-side copies for `move`, and presigned GET URLs for redirects. Must not:
keep anything a request on another replica needs in memory (upload sessions must survive a restart and
PATCHes that land on different replicas), nor hold an object's bytes in memory beyond one part.

Client library: aiobotocore. It is botocore (the AWS SDK core: SigV4 signing, retries, path-style and
virtual-hosted addressing, custom CA bundles, presigning, every S3-compatible quirk the SDK already knows)
on aiohttp, which the registry already runs on: one event loop, no thread per request. It is maintained
alongside botocore's releases and used by s3fs/fsspec. obstore (Rust) was the alternative: fast, but its
multipart API hides the upload id and parts, which a session resumed on another replica needs to see.
The requests every push makes many of (PutObject, GetObject, HeadObject, DeleteObject(s), UploadPart,
ListObjectsV2) are signed by botocore's SigV4 signer and sent on aiohttp around botocore's per-request
pipeline (s3direct.py, which says why); the client keeps the rest, resolves the endpoint and credentials.

Resumable writers (s3writer.py). A writer on `path` is a small state object, `_s3writers/<path>/state`:
the multipart upload it fills (created once a first part fills), its parts, and the bytes that do not
fill a part yet, in one object rewritten by each `close`; `commit` completes the multipart upload, or
PUTs the bytes when no part ever filled, and removes the state.
`move` of an object above CopyObject's 5 GiB limit copies it part by part with UploadPartCopy; the test
server (gofakes3) does not implement UploadPartCopy, so that branch is exercised only against real S3.

Two writers opened on the same new path at the same moment (two replicas, one session) each start a
multipart upload and the last state written wins; the other upload is left for the bucket's lifecycle rule
(AbortIncompleteMultipartUpload) to reclaim. The store serialises requests on one session, so only a
client misusing its own session can cause that.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import pathlib
from collections.abc import AsyncIterator
from typing import Any

from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import ClientError

from dockyard_registry.storage import base, s3direct, s3writer
from dockyard_registry.storage.s3writer import S3Writer

_code = s3writer.code
_not_found = s3writer.not_found

WRITERS = "_s3writers"  # per-upload writer state, beside the content and never listed
MIN_PART = 5 << 20  # S3's smallest part but the last
DEFAULT_PART_SIZE = 8 << 20
MAX_COPY = 5 << 30  # CopyObject's limit; larger objects are copied part by part (UploadPartCopy)
COPY_PART = 1 << 30
_CHUNK = 1 << 20
MAX_CONNECTIONS = 10  # per client (botocore's default), and as many for the direct requests


@dataclasses.dataclass(frozen=True)
class S3Config:
    """Where the bucket is and how to reach it; credentials come from the environment (AWS_*)."""

    bucket: str
    endpoint: str | None = None
    region: str = "us-east-1"
    prefix: str = ""
    ca_file: pathlib.Path | None = None
    addressing: str = "path"  # "path" or "virtual"
    redirect: bool = True
    redirect_expiry: int = 20 * 60  # seconds a presigned GET stays valid
    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None
    # Bytes per multipart part: at least MIN_PART where S3 enforces it (AWS, most servers); the tests use
    # smaller parts against gofakes3, which does not, to exercise several parts with little data.
    part_size: int = DEFAULT_PART_SIZE


class S3Driver:
    """Use `async with S3Driver(config) as driver:` or `await driver.start()` / `await driver.aclose()`."""

    def __init__(self, config: S3Config) -> None:
        if config.addressing not in ("path", "virtual"):
            raise ValueError(f"addressing must be path or virtual, not {config.addressing!r}")
        self.config = config
        self._prefix = config.prefix.strip("/")
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._direct: s3direct.DirectS3 | None = None

    async def start(self) -> S3Driver:
        c = self.config
        session = get_session()
        if c.access_key is not None and c.secret_key is not None:
            session.set_credentials(c.access_key, c.secret_key, c.session_token)
        config = Config(
            signature_version="s3v4",
            # SigV4 signs a payload by its sha256: a second pass over every byte we already hashed
            # for its digest. Over https (AWS's default) TLS protects the body and botocore sends
            # UNSIGNED-PAYLOAD, as AWS's SDKs do for streamed uploads; over plain http the signature
            # is the body's only protection, so it stays.
            s3={"addressing_style": c.addressing, "payload_signing_enabled": _plain_http(c.endpoint)},
            retries={"max_attempts": 5, "mode": "standard"},
            # botocore >= 1.36 adds CRC checksums to every request and checks them on every response;
            # many S3-compatible servers send a whole-object checksum on ranged GETs or reject the
            # headers. Content is verified by digest above us, so only ask where S3 requires them.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=MAX_CONNECTIONS,
        )
        # --s3-ca, else what the environment or the AWS config file names (AWS_CA_BUNDLE), as botocore reads.
        ca_file = str(c.ca_file) if c.ca_file is not None else session.get_config_variable("ca_bundle")
        creator = session.create_client(
            "s3", endpoint_url=c.endpoint, region_name=c.region, verify=ca_file, config=config
        )
        self._client = await self._stack.enter_async_context(creator)
        # The hot simple requests go around botocore's pipeline (s3direct.py), on the same credentials.
        self._direct = await s3direct.DirectS3.open(
            self._client, bucket=c.bucket, credentials=await session.get_credentials(), config=config,
            ca_file=ca_file, max_connections=MAX_CONNECTIONS,
        )  # fmt: skip
        self._stack.push_async_callback(self._direct.aclose)
        return self

    async def __aenter__(self) -> S3Driver:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._stack.aclose()

    # ------------------------------------------------------------------------------------------ keys
    def key(self, path: str) -> str:
        parts = path.split("/")
        if not path or any(p in ("", ".", "..") for p in parts) or "\0" in path:
            raise ValueError(f"unsafe storage path {path!r}")
        return f"{self._prefix}/{path}" if self._prefix else path

    @property
    def _bucket(self) -> str:
        return self.config.bucket

    # --------------------------------------------------------------------------------------- objects
    @property
    def direct(self) -> s3direct.DirectS3:
        if self._direct is None:
            raise RuntimeError("S3Driver used before start()")
        return self._direct

    async def get(self, path: str, /) -> bytes:
        try:
            return await self.direct.get(self.key(path))
        except ClientError as e:
            raise _not_found(e, path) from None

    async def put(self, path: str, data: bytes, /) -> None:
        # A PUT is atomic on S3: readers see the old object or the new one.
        await self.direct.put(self.key(path), data)

    async def _head(self, key: str, path: str) -> s3direct.Head | None:
        try:
            return await self.direct.head(key)
        except ClientError as e:
            _not_found(e, path)
            return None

    async def head(self, path: str, /) -> base.FileInfo | None:
        """`stat` of an object only (one HEAD): None for a missing path and for a directory."""
        head = await self._head(self.key(path), path)
        return None if head is None else base.FileInfo(size=head.size, modified=head.modified)

    async def stat(self, path: str, /) -> base.FileInfo | None:
        info = await self.head(path)
        if info is not None:
            return info
        listed = await self.direct.list_page(self.key(path) + "/", max_keys=1)
        if not listed.keys:
            return None
        return base.FileInfo(size=0, modified=listed.keys[0][1], is_dir=True)

    async def list(self, path: str, /) -> list[str]:
        prefix = self.key(path) + "/"
        names: set[str] = set()
        async for page in self._pages(prefix, delimiter="/"):
            names.update(common[len(prefix) :].rstrip("/") for common in page.prefixes)
            names.update(key[len(prefix) :] for key, _ in page.keys)
        names.discard("")
        return sorted(names)

    async def _pages(self, prefix: str, *, delimiter: str | None = None) -> AsyncIterator[s3direct.Listing]:
        token: str | None = None
        while True:
            page = await self.direct.list_page(prefix, delimiter=delimiter, token=token)
            yield page
            if page.next_token is None:
                return
            token = page.next_token

    async def _keys_under(self, prefix: str) -> builtins.list[str]:
        return [key async for page in self._pages(prefix) for key, _ in page.keys]

    async def _delete_keys(self, keys: builtins.list[str]) -> None:
        for i in range(0, len(keys), 1000):
            await self.direct.delete_many(keys[i : i + 1000])

    async def delete(self, path: str, /) -> None:
        # Uploads in progress below `path` first (their parts are invisible to listing), then the objects.
        # With the slash: the writer of `u/ab` is not under `u/a`.
        writers = self.key(f"{WRITERS}/{path}") + "/"
        key = self.key(path)
        states, below = await asyncio.gather(self._keys_under(writers), self._keys_under(key + "/"))
        for state_key in states:
            if state_key.endswith("/state"):
                await self._abort_from_state(state_key)
        await self._delete_keys(states)
        await self._delete_keys([key, *below])

    async def _abort_from_state(self, state_key: str) -> None:
        try:
            state, _ = s3writer.State.parse(await self.direct.get(state_key))
        except (ClientError, ValueError, KeyError, TypeError):
            return
        if state.upload_id is None:
            return
        target = self.key(state_key[len(self.key(WRITERS)) + 1 : -len("/state")])
        with contextlib.suppress(ClientError):
            await self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=target, UploadId=state.upload_id
            )

    async def move(self, src: str, dst: str, /) -> None:
        info = await self.stat(src)
        if info is None or info.is_dir:
            raise FileNotFoundError(src)
        source = {"Bucket": self._bucket, "Key": self.key(src)}
        if info.size <= MAX_COPY:
            await self._client.copy_object(Bucket=self._bucket, Key=self.key(dst), CopySource=source)
        else:
            await self._copy_in_parts(source, dst, info.size)
        await self.direct.delete(self.key(src))

    async def _copy_in_parts(self, source: dict[str, str], dst: str, size: int) -> None:
        created = await self._client.create_multipart_upload(Bucket=self._bucket, Key=self.key(dst))
        upload_id = created["UploadId"]
        parts = []
        try:
            for number, start in enumerate(range(0, size, COPY_PART), start=1):
                end = min(start + COPY_PART, size) - 1
                copied = await self._client.upload_part_copy(
                    Bucket=self._bucket,
                    Key=self.key(dst),
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource=source,
                    CopySourceRange=f"bytes={start}-{end}",
                )
                parts.append({"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]})
            await self._client.complete_multipart_upload(
                Bucket=self._bucket, Key=self.key(dst), UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            with contextlib.suppress(ClientError):
                await self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=self.key(dst), UploadId=upload_id
                )
            raise

    async def reader(self, path: str, /, *, offset: int = 0) -> AsyncIterator[bytes]:
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Key": self.key(path)}
        if offset:
            kwargs["Range"] = f"bytes={offset}-"
        try:
            resp = await self._client.get_object(**kwargs)
        except ClientError as e:
            if _code(e) == "InvalidRange":
                return  # offset at (or past) the end: nothing left to read
            raise _not_found(e, path) from None
        async with resp["Body"] as body:
            while chunk := await body.read(_CHUNK):
                yield chunk

    async def redirect_url(self, path: str, /) -> str | None:
        if not self.config.redirect:
            return None
        url: str = await self._client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self._bucket, "Key": self.key(path)},
            ExpiresIn=self.config.redirect_expiry,
        )
        return url

    # --------------------------------------------------------------------------------------- writers
    async def writer_stat(self, path: str, /) -> base.FileInfo | None:
        """Size and last `close` of the resumable upload open at `path` (one HEAD of its state object,
        without resuming it), or None when none is open: what the store needs of an upload between
        requests."""
        state_key = self._state_key(path)
        head = await self._head(state_key, path)
        if head is None:
            return None
        recorded = head.metadata.get(s3writer.SIZE_META)
        if recorded is not None:
            return base.FileInfo(size=int(recorded), modified=head.modified)
        try:  # a state in the older layout: its size is in the JSON
            size = s3writer.State.size_of(await self.direct.get(state_key))
        except ClientError as e:
            _not_found(e, path)
            return None
        return base.FileInfo(size=size, modified=head.modified)

    def _state_key(self, path: str) -> str:
        return self.key(f"{WRITERS}/{path}/state")

    async def writer(self, path: str, /) -> S3Writer:
        found = await self.resume(path)
        if found is not None:
            return found
        # Recorded at once: the upload exists (size 0) for `writer_stat`, and a writer on another replica
        # resumes it instead of starting its own.
        await self.direct.put(
            self._state_key(path), b'{"upload_id": null, "parts": []}\n', metadata={s3writer.SIZE_META: "0"}
        )
        return self._writer(path, s3writer.State(upload_id=None, parts=[], tail=b""))

    async def resume(self, path: str, /) -> S3Writer | None:
        """A writer on the upload open at `path`, or None when none is (nothing is created)."""
        try:
            raw = await self.direct.get(self._state_key(path))
        except ClientError as e:
            _not_found(e, path)
            return None
        state, old_tail = s3writer.State.parse(raw)
        if old_tail is not None:
            try:
                state.tail = await self.direct.get(old_tail)
            except ClientError as e:
                raise _not_found(e, path) from None
        return self._writer(path, state)

    def _writer(self, path: str, state: s3writer.State) -> S3Writer:
        return S3Writer(
            self._client, self.direct, bucket=self._bucket, path=path, key=self.key(path),
            state_key=self._state_key(path), part_size=self.config.part_size, state=state,
        )  # fmt: skip


def _plain_http(endpoint: str | None) -> bool:
    return endpoint is not None and endpoint.lower().startswith("http:")


def _conforms(driver: S3Driver) -> base.ObjectDriver:
    return driver  # mypy proves the contract is implemented
