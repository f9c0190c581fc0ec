"""Resumable writers of the S3 driver (s3.py): one upload's bytes between requests, replicas and restarts.

Owns: the state object of an open upload and its multipart upload. Must not: keep anything a writer on
another replica needs in memory between `close` and the next `writer(path)`; hold more than MAX_IN_FLIGHT
+ 1 part buffers (the one being filled, the parts being sent, and those kept to fill again).

The state object, `_s3writers/<path>/state`, is one JSON line (the multipart upload's id, or null while
none was needed, and the parts uploaded: number, ETag, size) followed by the tail: the bytes that do not
fill a part yet (S3 parts must be at least 5 MiB but the last, and a part cannot be read back). One object,
written by each `close` with one PUT (atomic), so state and tail always agree. Its metadata `size` is the
upload's size, so `stat` of an open upload is one HEAD, without the tail's bytes. States written before
this layout (JSON only, the tail in an object of its own named by `tail`) are still read and resumed.

Costs, in requests: the multipart upload is created only when a first part fills, so an upload that never
fills one (most layers, every config blob) is one PUT at `commit`, and `commit_to` PUTs it straight where it
belongs (no copy, no delete). Parts are sent in the background while the next one fills, at most
MAX_IN_FLIGHT at a time; any failure surfaces at the next `write`, `close` or `commit`.

`close` records the state last: until then nothing the handle wrote counts, which is what `abandon`
relies on. Parts an abandoned handle uploaded are overwritten by the next writer (same numbers) or left out
when the upload completes; a multipart upload the abandoned handle created itself and never recorded is
aborted. `commit` completes the upload (or PUTs the tail) and removes the state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from botocore.exceptions import ClientError

from dockyard_registry.storage.s3direct import DirectS3

# Parts sent while the next one fills: that many more parts' bytes in memory (16 MiB at the default part
# size). Two keep the S3 server busy while one part's response is on its way (bench.s3_store_cpu: a 256 MiB
# push took about a fifth less wall time than with one).
MAX_IN_FLIGHT = 2
SIZE_META = "size"  # the state object's metadata: the upload's size (x-amz-meta-size)
_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchUpload"}

Part = tuple[int, str, int]  # number, ETag, size


def code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def not_found(error: ClientError, path: str) -> FileNotFoundError:
    """The FileNotFoundError for a missing object or upload; any other S3 error propagates unchanged."""
    if code(error) in _MISSING:
        return FileNotFoundError(path)
    raise error


class State:
    """What a state object says: upload id (None: no part filled yet), parts, tail, and for a state in
    the older layout the key of its separate tail object (removed when the upload ends or moves on)."""

    def __init__(
        self, *, upload_id: str | None, parts: list[Part], tail: bytes, old_tail: str | None = None
    ) -> None:
        self.upload_id = upload_id
        self.parts = parts
        self.tail = tail
        self.old_tail = old_tail

    @classmethod
    def parse(cls, raw: bytes) -> tuple[State, str | None]:
        """The state, and the key of the tail object a state in the older layout still needs read."""
        header, newline, tail = raw.partition(b"\n")
        doc = json.loads(header)
        parts = [(int(n), str(e), int(s)) for n, e, s in doc["parts"]]
        if newline:
            return cls(upload_id=doc.get("upload_id"), parts=parts, tail=tail), None
        old_tail = doc.get("tail") or None
        # The older layout created the multipart upload up front: one without parts is not needed (the
        # bucket's AbortIncompleteMultipartUpload rule reclaims it), the tail alone is one PUT.
        upload_id = doc.get("upload_id") if parts else None
        return cls(upload_id=upload_id, parts=parts, tail=b"", old_tail=old_tail), old_tail

    @staticmethod
    def size_of(raw: bytes) -> int:
        header, newline, tail = raw.partition(b"\n")
        doc = json.loads(header)
        rest = len(tail) if newline else int(doc.get("tail_size") or 0)
        return sum(int(p[2]) for p in doc["parts"]) + rest


class S3Writer:
    """One handle on an open upload; made by S3Driver.writer. Used by one task at a time."""

    def __init__(
        self,
        client: Any,
        direct: DirectS3,
        *,
        bucket: str,
        path: str,
        key: str,
        state_key: str,
        part_size: int,
        state: State,
    ) -> None:
        self._client = client  # aiobotocore: create and complete multipart uploads, abort them
        self._direct = direct  # the requests made for every write: parts, state, the final PUT
        self._bucket = bucket
        self._path = path
        self._key = key
        self._state_key = state_key
        self._part_size = max(part_size, 1)
        self._upload_id = state.upload_id
        self._old_tail = state.old_tail
        self._created = False  # this handle created the multipart upload and has not recorded it yet
        self._parts: list[Part] = list(state.parts)
        self._pending: list[asyncio.Task[Part]] = []
        self._sending = 0  # bytes in the pending parts
        self._next = len(self._parts) + 1
        # The part being filled: its first `_filled` bytes. A buffer whose part was sent is kept for a later
        # part (`_spare`) and filled in place: a fresh one per part cost a fresh 8 MiB of pages to fault in
        # and release, and growing one by `+=` a copy now and then (bench.s3_store_cpu).
        self._buffer = bytearray(state.tail)
        self._filled = len(state.tail)
        self._spare: list[bytearray] = []
        self._dirty = False  # written to since opened: `close` has something to record

    @property
    def size(self) -> int:
        return sum(p[2] for p in self._parts) + self._sending + self._filled

    @property
    def multipart(self) -> bool:
        """Whether the bytes are (partly) in a multipart upload, which completes only at this path."""
        return self._upload_id is not None

    async def write(self, data: bytes, /) -> None:
        view = memoryview(data)
        self._dirty = self._dirty or bool(view)
        while view:
            piece = view[: max(self._part_size - self._filled, 0)]
            view = view[len(piece) :]
            end = self._filled + len(piece)
            # The only copy of these bytes this side of the socket: into a spare buffer's place (it is a
            # part long), or onto the end of a buffer still growing (the first part, which may be the only
            # one, small; its length is what it holds).
            if end <= len(self._buffer):
                self._buffer[self._filled : end] = piece
            else:
                self._buffer += piece
            self._filled = end
            if self._filled >= self._part_size:
                await self._send(self._buffer, self._filled)
                # Taken after the send waited for room: a part stored meanwhile left its buffer here.
                self._buffer, self._filled = (self._spare.pop() if self._spare else bytearray()), 0

    async def _send(self, data: bytearray, length: int) -> None:
        """Send the first `length` bytes of `data` as the next part, once fewer than MAX_IN_FLIGHT are."""
        while len(self._pending) >= MAX_IN_FLIGHT:
            await self._settle(self._pending[0])
        if self._upload_id is None:
            created = await self._client.create_multipart_upload(Bucket=self._bucket, Key=self._key)
            self._upload_id, self._created = created["UploadId"], True
        number, self._next = self._next, self._next + 1
        self._sending += length
        self._pending.append(asyncio.ensure_future(self._upload_part(self._upload_id, number, data, length)))

    async def _upload_part(self, upload_id: str, number: int, data: bytearray, length: int) -> Part:
        """Upload the first `length` bytes of `data` as part `number`; `data` becomes a spare buffer once
        the part is stored (a part that failed or was cancelled leaves its buffer to the collector: the
        request may not be done with it)."""
        try:
            with memoryview(data) as view:
                etag = await self._direct.upload_part(self._key, upload_id, number, view[:length])
        except ClientError as e:
            # NoSuchUpload: the multipart upload is gone (aborted by a lifecycle rule, or lost by a
            # server that keeps uploads in memory and restarted): its parts cannot come back.
            raise not_found(e, self._path) from None
        if len(data) == self._part_size and len(self._spare) < MAX_IN_FLIGHT:
            self._spare.append(data)
        return (number, etag, length)

    async def _settle(self, task: asyncio.Task[Part]) -> None:
        try:
            part = await task
        finally:
            self._pending.remove(task)
        self._sending -= part[2]
        self._parts.append(part)

    async def _drain(self) -> None:
        try:
            while self._pending:
                await self._settle(self._pending[0])
        except BaseException:
            await self._stop_sending()
            raise
        self._parts.sort()

    async def _stop_sending(self) -> None:
        for task in self._pending:
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        self._pending.clear()
        self._sending = 0

    async def close(self) -> None:
        if not self._dirty:
            return
        await self._drain()
        header = {"upload_id": self._upload_id, "parts": [list(p) for p in self._parts]}
        body = json.dumps(header).encode() + b"\n" + self._buffer[: self._filled]
        await self._direct.put(self._state_key, body, metadata={SIZE_META: str(self.size)})
        self._created = False
        if self._old_tail is not None:
            with contextlib.suppress(ClientError):
                await self._direct.delete(self._old_tail)
            self._old_tail = None
        self._dirty = False

    async def abandon(self) -> None:
        # Nothing recorded: the next writer starts from the stored state (see the module docstring).
        await self._stop_sending()
        if self._created and self._upload_id is not None:
            await self._abort(self._upload_id)
        self._dirty = False

    async def commit(self) -> None:
        """Every byte written becomes the object at this writer's path; the upload ends."""
        await self._finish(self._key)

    async def commit_to(self, key: str) -> None:
        """The same, at object `key` instead; only while no part was sent (`multipart` False): a multipart
        upload completes at the key it was created for."""
        if self.multipart:
            raise ValueError("a multipart upload completes only at its own key")
        await self._finish(key)

    async def _finish(self, key: str) -> None:
        await self._drain()
        if self._upload_id is None:
            with memoryview(self._buffer) as view:
                await self._direct.put(key, view[: self._filled])
        else:
            if self._filled:
                await self._send(self._buffer, self._filled)
                self._buffer, self._filled = bytearray(), 0
                await self._drain()
            parts = [{"PartNumber": n, "ETag": e} for n, e, _ in self._parts]
            try:
                await self._client.complete_multipart_upload(
                    Bucket=self._bucket, Key=self._key, UploadId=self._upload_id,
                    MultipartUpload={"Parts": parts},
                )  # fmt: skip
            except ClientError as e:
                raise not_found(e, self._path) from None
        self._buffer, self._filled, self._spare = bytearray(), 0, []
        await self._forget()

    async def cancel(self) -> None:
        await self._stop_sending()
        if self._upload_id is not None:
            await self._abort(self._upload_id)
        await self._forget()

    async def _abort(self, upload_id: str) -> None:
        with contextlib.suppress(ClientError):
            await self._client.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=upload_id)

    async def _forget(self) -> None:
        await self._direct.delete_many([self._state_key] + ([self._old_tail] if self._old_tail else []))
        self._old_tail = None
        self._dirty = False
