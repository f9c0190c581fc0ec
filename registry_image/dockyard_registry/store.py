"""The registry's domain: repositories, blobs, uploads, manifests, tags and referrers over a driver.

Owns: every rule about what may be stored and when (a manifest only references blobs linked into its
repository; a digest must match the bytes; a failed or interrupted write leaves earlier state untouched).
Must not: know HTTP, auth or OCI error codes; it raises the domain errors below and the HTTP edge
(errors.translate) decides what the client sees.

Hashing: an upload keeps a running hash in memory so each byte is hashed exactly once while it streams
to disk. hashlib objects cannot be persisted, so after a restart (or when the client finishes with a
different algorithm than we guessed) the bytes already on disk are re-hashed once; that is the only
re-read and it is documented as acceptable. Where a driver cannot read an upload before it is committed
(S3: a multipart upload's parts are invisible), the chunks after a restart, or sent to another replica,
are written unhashed and `finish_upload` hashes the committed object once before moving it into place.

Drivers: the store is blocking code its async callers run in worker threads (`asyncio.to_thread`), over
the synchronous `base.Driver`. On S3 that driver is `storage.blocking.BlockingS3Driver`, a facade of the
async S3 driver whose client runs on its own event loop thread: no S3 call ever runs on the serving loop,
and the store's rules (gc's lock, upload sessions, manifest checks) stay one tested implementation for
every driver rather than a blocking and an async copy.

Upload sessions are bounded state: one untouched (no PATCH/PUT) for longer than `upload_expiry` is gone
(a request to it purges it and answers unknown; `purge_expired_uploads` sweeps the rest on a schedule),
and each owner may hold at most `max_uploads_per_owner` open sessions. A session's in-memory state (its
running hash) lives exactly as long as the session: finished, cancelled, expired or collected by gc.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import functools
import json
import os
import pathlib
import re
import threading
import time
import urllib.parse
import uuid
import weakref
from collections.abc import AsyncIterable, Awaitable, Callable, Iterator
from typing import Any, BinaryIO, TypeVar

from dockyard_registry import bodyfile, digest, fence, manifests, paths, reference
from dockyard_registry.storage import base

_UPLOAD_ID_RE = re.compile(r"^[a-f0-9]{32}$")
_READ_CHUNK = 1 << 20
_BATCH = 1 << 20  # bytes handed to a worker thread at a time while an upload streams in
# Distribution purges upload sessions after 168 h (storage.maintenance.uploadpurging.age).
DEFAULT_UPLOAD_EXPIRY = 168 * 3600.0
DEFAULT_MAX_UPLOADS_PER_OWNER = 100
SWEEP_LIMIT = 1000  # sessions one sweep examines: the rest wait for the next one
TOUCH_EVERY = 0.001  # of upload_expiry: how stale a session's recorded activity may get (see _touch_upload)
# A request body: streamed from the socket, or a file nginx already wrote to the data volume (bodyfile.py).
Body = AsyncIterable[bytes] | bodyfile.BodyFile
# copy_file_range's answers where the kernel cannot copy between these files: stream the bytes instead.
_NO_KERNEL_COPY = frozenset({errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL})
_T = TypeVar("_T")


class StoreError(Exception):
    """A domain failure; `detail` is what the client may be told about it (digest, tag, name)."""

    detail: Any = None

    def __init__(self, message: str, *, detail: Any = None) -> None:
        super().__init__(message)
        self.detail = detail


class BlobUnknownError(StoreError):
    pass


# The storage backend is unreachable (S3 down or restarting): nothing of the request counts; retry.
StorageUnavailableError = base.StorageUnavailableError


class UploadUnknownError(StoreError):
    pass


class UploadInvalidError(StoreError):
    pass


class TooManyUploadsError(StoreError):
    """The owner already holds the maximum number of open upload sessions; nothing was stored."""


class RangeInvalidError(StoreError):
    """A chunk does not start where the upload ends; carries the current size for the Range header."""

    def __init__(self, message: str, *, size: int) -> None:
        super().__init__(message)
        self.size = size


class DigestMismatchError(StoreError):
    pass


class SizeMismatchError(StoreError):
    pass


class ManifestUnknownError(StoreError):
    pass


class ManifestBlobUnknownError(StoreError):
    pass


class NameUnknownError(StoreError):
    pass


_Digest = digest.Digest  # the dataclasses below have a field named `digest`, shadowing the module


@dataclasses.dataclass(frozen=True)
class StoredManifest:
    data: bytes
    media_type: str
    digest: _Digest


@dataclasses.dataclass(frozen=True)
class PutManifestResult:
    digest: _Digest
    subject: _Digest | None


@dataclasses.dataclass
class _HashState:
    """The running hash of an upload's first `offset` bytes; `hasher` None: those bytes could not be read
    back (not committed yet), so they are hashed once committed (see finish_upload)."""

    offset: int
    hasher: digest.Hasher | None
    algorithm: str


class GcLock:
    """Pushes share it; gc takes it alone for each single deletion (re-check, then delete).

    Inside one process this makes "is it still unreferenced and old?" and the deletion one step against
    every write that could make it referenced again (a manifest naming a blob or a manifest, a tag, a
    blob committed or mounted): either the push runs first and refreshes the time gc re-checks, or gc
    runs first and the push finds the content gone and says so. Pushes never wait for each other, and
    gc waits for no push longer than one push takes; a waiting gc keeps new pushes out only for the
    one deletion it is about to make. A gc in another process (a replica on the same bucket, the CLI)
    shares no lock with us: `fence.GcFence` (`Store.fence`) gives the same guarantee through storage.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive or self._waiting:
                self._cond.wait()
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                if not self._shared:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            try:
                while self._exclusive or self._shared:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class Store:
    """One registry's content over one driver. Safe for one event loop (per-upload asyncio locks) plus
    the worker threads it starts itself; gc/fsck may run in another process at the same time."""

    def __init__(
        self,
        driver: base.Driver,
        *,
        clock: Callable[[], float] = time.time,
        foreign_layer_urls: bool = False,
        upload_expiry: float = DEFAULT_UPLOAD_EXPIRY,
        max_uploads_per_owner: int | None = DEFAULT_MAX_UPLOADS_PER_OWNER,
        gc_fence: fence.GcFence | None = None,
    ) -> None:
        self.driver = driver
        self._clock = clock
        self.upload_expiry = upload_expiry
        self.max_uploads_per_owner = max_uploads_per_owner
        # Accept layers that name `urls` to fetch them from: `serve` does unless --refuse-foreign-layer-urls
        # (the OCI conformance suite pushes non-distributable layers); off by default for a bare Store.
        self._foreign_layer_urls = foreign_layer_urls
        self._hash_states: dict[str, _HashState] = {}
        # Owner of each session seen (owners never change), so counting an owner's sessions reads each
        # info file once, not on every POST. None: a session from before owners were recorded, which
        # counts for nobody. Entries go with their sessions.
        self._owners: dict[str, str | None] = {}
        self._starting = threading.Lock()  # counting an owner's sessions and adding one is one step
        self._sweep_cursor = ""  # the last session id a sweep examined
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self.gc_lock = GcLock()  # see GcLock: what an online gc and concurrent pushes agree on
        # What gc in another process (a replica on the same bucket, the CLI) and pushes here agree on.
        self.fence = gc_fence if gc_fence is not None else fence.GcFence(driver)
        self.maintenance = Maintenance(driver)  # what gc and fsck see of storage
        # Body files nginx wrote can be adopted (renamed or appended in the kernel) into upload files.
        self._local_files = driver.local_path(paths.UPLOADS) is not None

    # ----------------------------------------------------------------------------------- repositories
    def repository_exists(self, name: str) -> bool:
        return bool(self.driver.list(paths.repository(name)))

    def catalog(self) -> list[str]:
        """Every repository that holds a link, sorted."""
        found: list[str] = []

        def walk(prefix: str) -> None:
            children = self.driver.list(f"{paths.REPOSITORIES}/{prefix}" if prefix else paths.REPOSITORIES)
            if any(c in paths.RESERVED for c in children) and prefix:
                found.append(prefix)
            for child in children:
                if child not in paths.RESERVED and reference.is_valid_name(f"{prefix}/{child}".lstrip("/")):
                    walk(f"{prefix}/{child}".lstrip("/"))

        walk("")
        return sorted(found)

    # ------------------------------------------------------------------------------------------ blobs
    def blob_size(self, name: str, dgst: digest.Digest) -> int:
        """Size of a blob visible in `name`; BlobUnknownError when not linked there or data is gone."""
        if self.driver.size(paths.layer_link(name, dgst)) is None:
            raise BlobUnknownError(f"blob {dgst} unknown to repository {name}", detail={"digest": str(dgst)})
        size = self.driver.size(paths.blob_data(dgst))
        if size is None:
            raise BlobUnknownError(f"blob {dgst} data missing", detail={"digest": str(dgst)})
        return size

    def read_blob(self, dgst: digest.Digest) -> bytes:
        """A (small) blob's bytes; BlobUnknownError when its data is gone. Blocking: call from a thread."""
        try:
            return self.driver.get(paths.blob_data(dgst))
        except FileNotFoundError:
            raise BlobUnknownError(f"blob {dgst} data missing", detail={"digest": str(dgst)}) from None

    def open_blob(self, dgst: digest.Digest, *, offset: int = 0) -> BinaryIO:
        """A blob's bytes from `offset` (the caller closes it); BlobUnknownError when its data is gone."""
        try:
            return self.driver.open_reader(paths.blob_data(dgst), offset=offset)
        except FileNotFoundError:
            raise BlobUnknownError(f"blob {dgst} data missing", detail={"digest": str(dgst)}) from None

    def blob_redirect_url(self, dgst: digest.Digest) -> str | None:
        """A URL the client may fetch a blob from directly (a presigned S3 URL), or None. Blocking."""
        return self.driver.redirect_url(paths.blob_data(dgst))

    def blob_file(self, dgst: digest.Digest) -> pathlib.Path | None:
        """A local file holding the blob for zero-copy serving (sendfile), when the driver has one. Pure."""
        return self.driver.local_path(paths.blob_data(dgst))

    def delete_blob(self, name: str, dgst: digest.Digest) -> None:
        """Unlink a blob from one repository; the content stays for others and gc decides its fate."""
        self.blob_size(name, dgst)
        self.driver.delete(paths.layer_link(name, dgst))

    def _link_blob(self, name: str, dgst: digest.Digest, *, claim: bool = True) -> None:
        # Only the link's existence is ever read, so its name must survive a power loss, not its bytes.
        self.driver.put(paths.layer_link(name, dgst), str(dgst).encode(), durability=base.Durability.ENTRY)
        if claim:
            # A re-linked blob is "just pushed" for gc's grace period even if its data is old.
            self._claim(dgst)

    def _claim(self, dgst: digest.Digest) -> None:
        """Record that a push relies on a blob now (gc's grace period, see paths.blob_pushed).

        A record, not a touch of the data: on object storage a touch is a copy of the whole object. No
        fsync: like the mtime it replaces, a power loss may cost it, which only shortens the grace.
        """
        self.driver.put(paths.blob_pushed(dgst), b"", durability=base.Durability.NONE)

    def mount_blob(self, name: str, *, source: str, dgst: digest.Digest) -> bool:
        """Link a blob from `source` into `name`; False when `source` does not have it."""
        with self.gc_lock.shared():
            view = self.fence.view()
            try:
                self.blob_size(source, dgst)
            except BlobUnknownError:
                return False
            self._link_blob(name, dgst)
            if self.fence.settle(view, [paths.blob_dir(dgst)]) and self.maintenance.blob_size(dgst) is None:
                # Collected by a gc in another process while we linked it: the client uploads it instead.
                self.driver.delete(paths.layer_link(name, dgst))
                return False
            return True

    def repositories_with_blob(self, dgst: digest.Digest) -> list[str]:
        return [r for r in self.catalog() if self.driver.size(paths.layer_link(r, dgst)) is not None]

    # ---------------------------------------------------------------------------------------- uploads
    def start_upload(self, name: str, *, owner: str = "", capped: bool = True) -> str:
        """Open a session for `owner` (a user name; "" for anonymous); TooManyUploadsError at the cap.

        `capped=False` (the mirror's own fetches) opens one whatever the owner holds.
        """
        with self._starting:
            if capped and self.max_uploads_per_owner is not None:
                held = self._open_uploads_of(owner)
                if held >= self.max_uploads_per_owner:
                    raise TooManyUploadsError(
                        f"{held} upload sessions already open (at most {self.max_uploads_per_owner}); "
                        "finish or cancel (DELETE) one, or wait for an abandoned one to expire"
                    )
            upload_id = uuid.uuid4().hex
            info = {"repository": name, "started": self._clock(), "owner": owner}
            # Upload sessions survive a restart through the page cache; a power loss may cost the client
            # a retry, which is cheaper than an fsync on every upload.
            self.driver.put(
                paths.upload_info(upload_id), json.dumps(info).encode(), durability=base.Durability.NONE
            )
            self.driver.open_writer(paths.upload_data(upload_id)).close()
            self._owners[upload_id] = owner
            return upload_id

    def _open_uploads_of(self, owner: str) -> int:
        """How many unexpired sessions `owner` holds; forgets the owners of sessions gone meanwhile."""
        present = self.driver.list(paths.UPLOADS)
        for gone in self._owners.keys() - set(present):
            self._owners.pop(gone, None)
        mine: list[str] = []
        for upload_id in present:
            if upload_id not in self._owners:
                info = self._read_info(upload_id)
                found = info.get("owner") if info is not None else None
                self._owners[upload_id] = found if isinstance(found, str) else None
            if self._owners[upload_id] == owner:
                mine.append(upload_id)
        if len(mine) < (self.max_uploads_per_owner or 0):
            return len(mine)
        # At the cap: sessions past their age are gone for the client already (the sweep removes them).
        return sum(1 for upload_id in mine if not self._expired(upload_id))

    def upload_size(self, name: str, upload_id: str) -> int:
        self._check_upload(name, upload_id)
        size = self.driver.size(paths.upload_data(upload_id))
        if size is None:
            raise UploadUnknownError(f"upload {upload_id} unknown")
        return size

    def cancel_upload(self, name: str, upload_id: str) -> None:
        self._check_upload(name, upload_id)
        self._purge(upload_id)

    def _purge(self, upload_id: str) -> None:
        """Remove a session's data and everything this process remembers about it."""
        self.driver.delete(paths.upload_dir(upload_id), durable=False)
        self._forget(upload_id)

    def _forget(self, upload_id: str) -> None:
        self._hash_states.pop(upload_id, None)
        self._owners.pop(upload_id, None)

    def _read_info(self, upload_id: str) -> dict[str, Any] | None:
        try:
            info = json.loads(self.driver.get(paths.upload_info(upload_id)))
        except (FileNotFoundError, ValueError):
            return None
        return info if isinstance(info, dict) else None

    def _check_upload(self, name: str, upload_id: str, *, locked: bool = False) -> dict[str, Any]:
        """The session's info; UploadUnknownError when it is gone, another repository's or expired.
        `locked`: the caller holds the session's lock (then an expired session is purged all the same)."""
        if _UPLOAD_ID_RE.match(upload_id) is None:
            raise UploadUnknownError(f"upload {upload_id[:64]!r} unknown")
        info = self._read_info(upload_id)
        if info is None:
            # Gone (cancelled, finished, or collected by gc in another process): drop its running hash.
            self._forget(upload_id)
            raise UploadUnknownError(f"upload {upload_id} unknown")
        # Upload ids are bearer-like: one must not continue another repository's upload.
        if info.get("repository") != name:
            raise UploadUnknownError(f"upload {upload_id} unknown to repository {name}")
        if self._expired(upload_id, info=info) and (locked or not self._in_use(upload_id)):
            # Expired but not swept yet: the client sees what it would see after the sweep.
            self._purge(upload_id)
            raise UploadUnknownError(f"upload {upload_id} expired")
        return info

    def upload_last_active(self, upload_id: str, *, info: dict[str, Any] | None = None) -> float | None:
        """When a session was last started or written to (store clock, or the data's mtime where later);
        None when the session is gone. Sessions from older versions have no `touched`: their start time
        and the data's mtime say it."""
        if info is None:
            info = self._read_info(upload_id)
        stamps = _recorded_stamps(info)
        written = self.driver.mtime(paths.upload_data(upload_id))
        if written is not None:
            stamps.append(written)
        if not stamps:
            # Neither info nor data (a start killed midway): the directory's own age says it.
            return self.driver.mtime(paths.upload_dir(upload_id))
        return max(stamps)

    def _expired(self, upload_id: str, *, info: dict[str, Any] | None = None) -> bool:
        cutoff = self._clock() - self.upload_expiry
        if info is not None and any(stamp > cutoff for stamp in _recorded_stamps(info)):
            # The session's own record says it is alive: the data's mtime could only say it later (and
            # on S3 reading it is a request).
            return False
        last = self.upload_last_active(upload_id, info=info)
        return last is not None and last <= cutoff

    def _in_use(self, upload_id: str) -> bool:
        lock = self._locks.get(upload_id)
        return lock is not None and lock.locked()

    def _touch_upload(self, upload_id: str, info: dict[str, Any]) -> None:
        """Record activity on the store's clock (mtimes follow the wall clock, not an injected one).

        Best effort: the chunk is already stored, so failing the request now (a full disk) would make the
        client resend bytes we kept; the data file's mtime still says the session is alive.

        Skipped while the recorded activity is younger than TOUCH_EVERY of the expiry (a PATCH right after
        its POST, as every client sends them): the session then lives at least 99.9 % of `upload_expiry`
        past its last chunk on the store's clock, and the data's own mtime (every driver updates it with
        each chunk) still says when that chunk came. One write (an S3 request) less per chunk.
        """
        now = self._clock()
        if any(now - stamp < self.upload_expiry * TOUCH_EVERY for stamp in _recorded_stamps(info)):
            return
        info = {**info, "touched": now}
        with contextlib.suppress(OSError):
            self.driver.put(
                paths.upload_info(upload_id), json.dumps(info).encode(), durability=base.Durability.NONE
            )

    async def purge_expired_uploads(self, *, limit: int = SWEEP_LIMIT) -> list[str]:
        """Examine up to `limit` sessions and purge those untouched for longer than `upload_expiry`.

        Bounded work: each call resumes after the last session the previous one examined (wrapping
        around), so fresh sessions never keep a sweep from reaching expired ones. A session receiving
        bytes (its lock held) is skipped; each purge holds the session's lock and re-checks its age, so
        a request racing the sweep either finishes first or finds it unknown. Also forgets the in-memory
        state of sessions another process (gc) removed. Returns the purged ids.
        """
        present = await asyncio.to_thread(self.driver.list, paths.UPLOADS)
        for gone in (self._hash_states.keys() | self._owners.keys()) - set(present):
            self._forget(gone)
        after = [i for i in present if i > self._sweep_cursor]
        batch = (after + [i for i in present if i <= self._sweep_cursor])[:limit]
        purged: list[str] = []
        for upload_id in batch:
            self._sweep_cursor = upload_id
            if _UPLOAD_ID_RE.match(upload_id) is None or self._in_use(upload_id):
                continue
            if not await asyncio.to_thread(self._expired, upload_id):
                continue
            async with self._lock(upload_id):
                if not await asyncio.to_thread(self._expired, upload_id):
                    continue
                await asyncio.to_thread(self._purge, upload_id)
            purged.append(upload_id)
        return purged

    def uploads_in_flight(self) -> int:
        """How many uploads are receiving bytes right now (tests wait on this instead of sleeping)."""
        return sum(1 for lock in list(self._locks.values()) if lock.locked())

    def known_upload_size(self, upload_id: str) -> int | None:
        """The size of an upload as its running hash in memory has it (no storage access); None when this
        process holds no running hash for it (new, or not written since a restart)."""
        state = self._hash_states.get(upload_id)
        return None if state is None else state.offset

    def _lock(self, upload_id: str) -> asyncio.Lock:
        lock = self._locks.get(upload_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[upload_id] = lock
        return lock

    async def _hash_state(self, upload_id: str, *, size: int, algorithm: str) -> _HashState:
        state = self._hash_states.get(upload_id)
        if state is not None and state.offset == size and state.algorithm == algorithm:
            return state
        if not size:
            return self._hash_state_now(upload_id, size=size, algorithm=algorithm)  # no bytes to read
        return await asyncio.to_thread(self._hash_state_now, upload_id, size=size, algorithm=algorithm)

    def _hash_state_now(self, upload_id: str, *, size: int, algorithm: str) -> _HashState:
        """The running hash of an upload's first `size` bytes. Blocking: may re-read them."""
        state = self._hash_states.get(upload_id)
        if state is not None and state.offset == size and state.algorithm == algorithm:
            return state
        # No running hash for these bytes (restart, or another algorithm): re-hash what is on disk once;
        # a driver that cannot read an open upload has it hashed once committed.
        hasher: digest.Hasher | None = digest.new_hasher(algorithm)
        if size:
            try:
                hasher = self._hash_file(paths.upload_data(upload_id), algorithm)
            except FileNotFoundError:
                hasher = None
        state = _HashState(offset=size, hasher=hasher, algorithm=algorithm)
        self._hash_states[upload_id] = state
        return state

    def _hash_file(self, path: str, algorithm: str) -> digest.Hasher:
        hasher = digest.new_hasher(algorithm)
        with self.driver.open_reader(path) as f:
            while chunk := f.read(_READ_CHUNK):
                hasher.update(chunk)
        return hasher

    async def write_chunk(
        self,
        name: str,
        upload_id: str,
        *,
        body: Body,
        start: int | None = None,
        length: int | None = None,
        algorithm: str = "sha256",
    ) -> int:
        """Append a request body (streamed, or a file nginx wrote) to an upload; returns the new size.

        `start` (from Content-Range) must equal the current size. If the body fails midway (client gone,
        truncated) or does not have `length` bytes, the upload is rolled back to where it was.
        """
        if isinstance(body, bodyfile.BodyFile) and self._local_files:
            adopted = await self._take_in_one_call(
                name, upload_id, body=body, start=start, length=length, algorithm=algorithm, dgst=None
            )
            if adopted is not None:
                return adopted
            body = bodyfile.chunks(body)  # no in-kernel copy into the upload's file system: stream it
        info = await asyncio.to_thread(self._check_upload, name, upload_id)
        async with self._lock(upload_id):
            size = await asyncio.to_thread(self.driver.size, paths.upload_data(upload_id))
            if size is None:
                # Purged while this request waited for the lock: touching it would bring back its info.
                self._forget(upload_id)
                raise UploadUnknownError(f"upload {upload_id} unknown")
            try:
                size = await self._append(
                    upload_id, body=body, start=start, length=length, algorithm=algorithm, size=size
                )
            except FileNotFoundError:
                raise await self._lost(upload_id) from None
            # After the bytes, so a failed chunk changes nothing stored; meanwhile the lock marks it in use.
            await asyncio.to_thread(self._touch_upload, upload_id, info)
            return size

    async def _append(
        self,
        upload_id: str,
        *,
        body: Body,
        start: int | None,
        length: int | None,
        algorithm: str,
        size: int | None = None,
    ) -> int:
        """`size`: the upload's size as the caller just read it under the session's lock, or None."""
        data_path = paths.upload_data(upload_id)
        if size is None:
            size = await asyncio.to_thread(self.driver.size, data_path)
        if size is None:
            raise UploadUnknownError(f"upload {upload_id} unknown")
        if start is not None and start != size:
            raise RangeInvalidError(f"chunk starts at {start} but upload has {size} bytes", size=size)
        state = await self._hash_state(upload_id, size=size, algorithm=algorithm)
        if isinstance(body, bodyfile.BodyFile):
            # Adopted in one call where the driver has local files (`_take`); streamed from it here.
            if length is not None and body.size != length:
                raise SizeMismatchError(f"expected {length} bytes, received {body.size}")
            body = bodyfile.chunks(body)
        before = state.hasher.copy() if state.hasher is not None else None
        # Driver calls run in worker threads: none may block the serving loop (on S3 each is a request).
        writer = await asyncio.to_thread(self.driver.open_writer, data_path)
        received = 0
        # Hashing and writing a batch runs in a worker thread (hashlib releases the GIL) while the event
        # loop receives the next one: uploads use a second core and never stall other requests. One batch
        # in flight per upload keeps the bytes in order; at most two batches are in memory.
        batch: list[bytes] = []
        batched = 0
        in_flight: asyncio.Future[None] | None = None
        loop = asyncio.get_running_loop()
        try:
            async for chunk in body:
                batch.append(chunk)
                batched += len(chunk)
                received += len(chunk)
                if batched >= _BATCH:
                    if in_flight is not None:
                        await in_flight
                    in_flight = loop.run_in_executor(None, _consume, state.hasher, writer, batch)
                    batch, batched = [], 0
            if in_flight is not None:
                await in_flight
                in_flight = None
            in_flight = loop.run_in_executor(None, _consume, state.hasher, writer, batch)
            await in_flight
            in_flight = None
            if length is not None and received != length:
                raise SizeMismatchError(f"expected {length} bytes, received {received}")
        except BaseException:
            if in_flight is not None:
                # Never truncate under a worker that is still writing.
                await asyncio.wait({in_flight})
            # Synchronous on purpose: this also runs when the task is being cancelled.
            writer.truncate(size)
            writer.close()
            state.hasher, state.offset = before, size
            raise
        await asyncio.to_thread(writer.close)
        state.offset = size + received
        return state.offset

    async def finish_upload(
        self,
        name: str,
        upload_id: str,
        *,
        dgst: digest.Digest,
        body: Body | None = None,
        start: int | None = None,
        length: int | None = None,
        verified: Callable[[], Awaitable[None]] | None = None,
    ) -> int:
        """Append the last chunk (if any), verify the digest, and commit the blob into `name`.

        `verified` is awaited once the digest matched, before the commit (and its fsyncs)."""
        if verified is None and (body is None or (isinstance(body, bodyfile.BodyFile) and self._local_files)):
            done = await self._take_in_one_call(
                name, upload_id, body=body, start=start, length=length, algorithm=dgst.algorithm, dgst=dgst
            )
            if done is not None:
                return done
            body = bodyfile.chunks(body) if body is not None else None  # no in-kernel copy: stream it
        await asyncio.to_thread(self._check_upload, name, upload_id)
        async with self._lock(upload_id):
            try:
                return await self._finish_locked(
                    name, upload_id, dgst=dgst, body=body, start=start, length=length, verified=verified
                )
            except FileNotFoundError:
                raise await self._lost(upload_id) from None

    async def _take_in_one_call(
        self,
        name: str,
        upload_id: str,
        *,
        body: bodyfile.BodyFile | None,
        start: int | None,
        length: int | None,
        algorithm: str,
        dgst: digest.Digest | None,
    ) -> int | None:
        """`_take` under the session's lock, in one worker-thread call (see there)."""
        if _UPLOAD_ID_RE.match(upload_id) is None:
            raise UploadUnknownError(f"upload {upload_id[:64]!r} unknown")
        async with self._lock(upload_id):
            try:
                return await _in_one_call(
                    functools.partial(
                        self._take,
                        name,
                        upload_id,
                        body=body,
                        start=start,
                        length=length,
                        algorithm=algorithm,
                        dgst=dgst,
                    )
                )
            except FileNotFoundError:
                raise await self._lost(upload_id) from None

    def _take(
        self,
        name: str,
        upload_id: str,
        abandoned: threading.Event,
        *,
        body: bodyfile.BodyFile | None,
        start: int | None,
        length: int | None,
        algorithm: str,
        dgst: digest.Digest | None,
    ) -> int | None:
        """A whole PATCH (`dgst` None) or finishing PUT whose body nginx wrote to a file (or that has none):
        check the session, its size and the Content-Range, hash and adopt the file, then record the
        activity (PATCH) or verify the digest and commit (PUT); returns the upload's size. Blocking, and
        the caller holds the session's lock: one worker-thread call instead of one per step (issue 15).

        None: the file cannot be adopted here (no in-kernel copy between these file systems); nothing
        changed and the caller streams it. A failed adopt leaves the upload as it was, and so does an
        `abandoned` request (its client gone) once the file is adopted, before anything is committed.
        """
        info = self._check_upload(name, upload_id, locked=True)
        data_path = paths.upload_data(upload_id)
        size = self.driver.size(data_path)
        if size is None:
            self._forget(upload_id)
            raise UploadUnknownError(f"upload {upload_id} unknown")
        if body is not None:
            if start is not None and start != size:
                raise RangeInvalidError(f"chunk starts at {start} but upload has {size} bytes", size=size)
            if length is not None and body.size != length:
                raise SizeMismatchError(f"expected {length} bytes, received {body.size}")
            state = self._hash_state_now(upload_id, size=size, algorithm=algorithm)
            local = self.driver.local_path(data_path)
            if local is None:
                return None
            try:
                hashed = bodyfile.adopt(body, local, upload_size=size, hasher=state.hasher)
            except bodyfile.BodyFileError as exc:
                raise UploadInvalidError(str(exc)) from None
            except OSError as exc:
                if exc.errno in _NO_KERNEL_COPY:
                    return None
                raise
            if abandoned.is_set():
                os.truncate(local, size)  # the bytes may be in place: the upload goes back to `size`
                raise _AbandonedError(upload_id)
            state.hasher, state.offset = hashed, size + body.size
            size = state.offset
        if dgst is None:
            self._touch_upload(upload_id, info)
            return size
        state = self._hash_state_now(upload_id, size=size, algorithm=dgst.algorithm)
        if state.hasher is not None:
            actual = state.hasher.copy().hexdigest()
        else:
            actual = self._hash_committed(upload_id, algorithm=dgst.algorithm)
            if actual != dgst.encoded:
                self._purge(upload_id)
        if actual != dgst.encoded:
            raise DigestMismatchError(
                f"digest {dgst} does not match uploaded content", detail={"digest": str(dgst)}
            )
        self._commit_upload(name, upload_id, dgst)
        self._forget(upload_id)
        return size

    async def _lost(self, upload_id: str) -> UploadUnknownError:
        """A session whose bytes storage no longer has (an S3 multipart upload aborted by a lifecycle
        rule, or lost by a server that restarted): it cannot be resumed, so it goes, and the client starts
        the upload again (BLOB_UPLOAD_UNKNOWN, not a 5xx it would retry forever)."""
        with contextlib.suppress(OSError):
            await asyncio.to_thread(self._purge, upload_id)
        return UploadUnknownError(
            f"upload {upload_id} was lost by the storage backend; start the upload again"
        )

    async def _finish_locked(
        self,
        name: str,
        upload_id: str,
        *,
        dgst: digest.Digest,
        body: Body | None,
        start: int | None,
        length: int | None,
        verified: Callable[[], Awaitable[None]] | None,
    ) -> int:
        size: int | None = None
        if body is not None:
            size = await self._append(
                upload_id, body=body, start=start, length=length, algorithm=dgst.algorithm
            )
        else:
            size = await asyncio.to_thread(self.driver.size, paths.upload_data(upload_id))
        if size is None:
            raise UploadUnknownError(f"upload {upload_id} unknown")
        state = await self._hash_state(upload_id, size=size, algorithm=dgst.algorithm)
        if state.hasher is not None:
            actual = state.hasher.copy().hexdigest()
        else:
            actual = await asyncio.to_thread(self._hash_committed, upload_id, algorithm=dgst.algorithm)
            if actual != dgst.encoded:
                await asyncio.to_thread(self._purge, upload_id)
        if actual != dgst.encoded:
            raise DigestMismatchError(
                f"digest {dgst} does not match uploaded content",
                detail={"digest": str(dgst)},
            )
        if verified is not None:
            await verified()
        await asyncio.to_thread(self._commit_upload, name, upload_id, dgst)
        self._forget(upload_id)
        return size

    def _hash_committed(self, upload_id: str, *, algorithm: str) -> str:
        """Commit an upload whose bytes could not be read while open, then hash them: the only re-read.

        A committed upload takes no more chunks, so on a digest mismatch the caller purges the session
        (the client starts over, as it would after any DIGEST_INVALID).
        """
        data_path = paths.upload_data(upload_id)
        self.driver.commit(data_path, data_path)
        return self._hash_file(data_path, algorithm).hexdigest()

    def _commit_upload(self, name: str, upload_id: str, dgst: digest.Digest) -> None:
        # The blob's and its link's directories synced once each, after both renames: one journal commit
        # fewer per blob than syncing each as it changes (every sync still happens before the 201).
        with self.gc_lock.shared(), self.driver.synced_together():
            self._commit_upload_locked(name, upload_id, dgst)

    def _commit_upload_locked(self, name: str, upload_id: str, dgst: digest.Digest) -> None:
        target = paths.blob_data(dgst)
        item = [paths.blob_dir(dgst)]
        view = self.fence.view()
        # Deduplicated: when the content exists, claim it for gc's grace period before relying on it;
        # if gc removed it meanwhile, the check after the claim commits our bytes (fresh by themselves).
        stored = self.driver.size(target) is not None
        if stored:
            self._claim(dgst)
            self.fence.settle(view, item)
            stored = self.driver.size(target) is not None
        if not stored:
            self.driver.commit(paths.upload_data(upload_id), target)
        self._link_blob(name, dgst, claim=False)
        if self.fence.settle(view, item):
            # A gc in another process may have been removing this blob's directory (its data, or what an
            # interrupted write left) and its links while we wrote them.
            if self.driver.size(target) is None:
                self._purge(upload_id)
                raise UploadUnknownError(
                    f"upload {upload_id} was removed by a concurrent garbage collection; upload it again"
                )
            if self.driver.size(paths.layer_link(name, dgst)) is None:
                self._link_blob(name, dgst, claim=False)
        self.driver.delete(paths.upload_dir(upload_id), durable=False)

    # ---------------------------------------------------------------------------------- mirrored content
    async def cache_blob(
        self,
        name: str,
        dgst: digest.Digest,
        *,
        body: AsyncIterable[bytes],
        length: int | None = None,
        verified: Callable[[], Awaitable[None]] | None = None,
    ) -> int:
        """Store a blob a mirror fetched from its upstream into `name`, as if pushed; returns its size.

        The bytes go through an upload session (hashed once while written); DigestMismatchError or a
        failing `body` leave nothing behind. `verified` is awaited once the digest matched, before the
        commit. The repository is marked as a mirror's (see is_mirrored).
        """
        upload_id = await asyncio.to_thread(self.start_upload, name, capped=False)
        try:
            size = await self.finish_upload(
                name, upload_id, dgst=dgst, body=body, length=length, verified=verified
            )
        except BaseException:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self._purge, upload_id)
            raise
        await asyncio.to_thread(self._mark_mirrored, name)
        return size

    def cache_manifest(
        self, name: str, ref: str | digest.Digest, *, data: bytes, content_type: str | None
    ) -> PutManifestResult:
        """Store a manifest a mirror fetched, under its digest and (`ref` a tag) that tag.

        Unlike a push, the blobs and child manifests it names need not be here: a mirror fetches them
        when a client asks. The manifest itself is validated as strictly as a pushed one.
        """
        with self.gc_lock.shared():
            self._mark_mirrored(name)
            return self._put_manifest(
                name, ref, data=data, content_type=content_type, tags=(), complete=False
            )

    def _mark_mirrored(self, name: str) -> None:
        if self.driver.size(paths.mirror_marker(name)) is None:
            self.driver.put(paths.mirror_marker(name), b"", durability=base.Durability.ENTRY)

    def is_mirrored(self, name: str) -> bool:
        """True for a repository holding content a mirror fetched (its manifests may name blobs and
        children not fetched yet: fsck reports those as not cached, not as damage)."""
        return self.driver.size(paths.mirror_marker(name)) is not None

    # -------------------------------------------------------------------------------------- manifests
    def _resolve(self, name: str, ref: str | digest.Digest) -> digest.Digest:
        if isinstance(ref, digest.Digest):
            return ref
        try:
            return digest.parse(self.driver.get(paths.tag_link(name, ref)).decode())
        except FileNotFoundError:
            raise ManifestUnknownError(
                f"manifest {ref!r} unknown to repository {name}", detail={"tag": ref}
            ) from None
        except (UnicodeDecodeError, digest.DigestInvalidError, digest.DigestUnsupportedError):
            # A damaged tag file is our problem, not a bad request: the tag is unusable until re-pushed
            # (fsck reports it).
            raise ManifestUnknownError(
                f"tag {ref!r} of repository {name} is damaged; push it again", detail={"tag": ref}
            ) from None

    def get_manifest(self, name: str, ref: str | digest.Digest) -> StoredManifest:
        dgst = self._resolve(name, ref)
        try:
            media_type = self.driver.get(paths.revision_link(name, dgst)).decode(errors="replace")
            data = self.driver.get(paths.blob_data(dgst))
        except FileNotFoundError:
            raise ManifestUnknownError(
                f"manifest {dgst} unknown to repository {name}", detail={"digest": str(dgst)}
            ) from None
        if media_type not in manifests.MEDIA_TYPES:
            media_type = _media_type_of(data)
        return StoredManifest(data=data, media_type=media_type, digest=dgst)

    def put_manifest(
        self,
        name: str,
        ref: str | digest.Digest,
        *,
        data: bytes,
        content_type: str | None,
        tags: tuple[str, ...] = (),
    ) -> PutManifestResult:
        """Validate and store a manifest under its digest, then point `ref` (if a tag) and `tags` at it."""
        # One sync per directory at the end (each journal commit costs a small push about a millisecond).
        with self.gc_lock.shared(), self.driver.synced_together():
            return self._put_manifest(name, ref, data=data, content_type=content_type, tags=tags)

    def _put_manifest(
        self,
        name: str,
        ref: str | digest.Digest,
        *,
        data: bytes,
        content_type: str | None,
        tags: tuple[str, ...],
        complete: bool = True,
    ) -> PutManifestResult:
        view = self.fence.view()  # before the first read of what this push relies on (fence.py)
        algorithm = ref.algorithm if isinstance(ref, digest.Digest) else "sha256"
        dgst = digest.of_bytes(data, algorithm=algorithm)
        if isinstance(ref, digest.Digest) and dgst != ref:
            raise DigestMismatchError(
                f"manifest digest {dgst} does not match {ref}", detail={"digest": str(ref)}
            )
        manifest = manifests.parse(data, content_type=content_type)
        self._check_urls(manifest)
        if complete:
            self._check_references(name, manifest)
        # A manifest pushed while gc runs must keep its blobs: claim them into the grace window.
        for blob in manifest.required_blobs():
            self._claim(blob)
        # Likewise an index's children: gc deletes an untagged manifest only while its revision is old.
        # A revision link is a few bytes: rewriting it (not touching it) works on every driver.
        for child in manifest.manifests:
            link = paths.revision_link(name, child.digest)
            with contextlib.suppress(FileNotFoundError):
                self.driver.put(link, self.driver.get(link), durability=base.Durability.ENTRY)
        # Order matters for crash safety: content, then the revision, then what points at it.
        if self.driver.size(paths.blob_data(dgst)) is None:
            self.driver.put(paths.blob_data(dgst), data)
        else:
            self._claim(dgst)
        relied = [paths.blob_dir(b) for b in manifest.required_blobs()]
        relied += [paths.revision_link(name, c.digest) for c in manifest.manifests]
        if self.fence.settle(view, [*relied, paths.blob_dir(dgst)]):
            # A gc in another process was live: what it deleted meanwhile is refused (the client pushes
            # it again), or, for our own bytes, written again.
            if complete:
                self._check_references(name, manifest, data_too=True)
            if self.driver.size(paths.blob_data(dgst)) is None:
                self.driver.put(paths.blob_data(dgst), data)
        all_tags = (*tags, ref) if isinstance(ref, str) else tags
        self._write_manifest_links(name, dgst, manifest=manifest, size=len(data), tags=all_tags)
        own = [paths.revision_link(name, dgst), *(paths.tag_link(name, t) for t in all_tags)]
        if self.fence.settle(view, own):
            # A retired tag or an untagged revision being collected as we wrote it: write what is gone.
            self._write_manifest_links(
                name, dgst, manifest=manifest, size=len(data), tags=all_tags, missing_only=True
            )
        return PutManifestResult(digest=dgst, subject=manifest.subject.digest if manifest.subject else None)

    def _check_references(self, name: str, manifest: manifests.Manifest, *, data_too: bool = False) -> None:
        """ManifestBlobUnknownError unless every blob and child the manifest needs is in `name`."""
        for blob in manifest.required_blobs():
            if self.driver.size(paths.layer_link(name, blob)) is None or (
                data_too and self.driver.size(paths.blob_data(blob)) is None
            ):
                raise ManifestBlobUnknownError(
                    f"manifest references blob {blob} unknown to repository {name}",
                    detail={"digest": str(blob)},
                )
        for child in manifest.manifests:
            if self.driver.size(paths.revision_link(name, child.digest)) is None:
                raise ManifestBlobUnknownError(
                    f"index references manifest {child.digest} unknown to repository {name}",
                    detail={"digest": str(child.digest)},
                )

    def _write_manifest_links(
        self,
        name: str,
        dgst: digest.Digest,
        *,
        manifest: manifests.Manifest,
        size: int,
        tags: tuple[str, ...],
        missing_only: bool = False,
    ) -> None:
        """The revision, the referrer entry and the tags of a stored manifest (`missing_only`: those gone)."""

        def wanted(path: str) -> bool:
            return not missing_only or self.driver.size(path) is None

        # The media type is a cache of what the bytes say (get_manifest re-derives it if a power loss
        # emptied the file); the revision's existence is what must survive.
        if wanted(revision := paths.revision_link(name, dgst)):
            self.driver.put(revision, manifest.media_type.encode(), durability=base.Durability.ENTRY)
        if manifest.subject is not None and wanted(
            referrer := paths.referrer_link(name, manifest.subject.digest, dgst)
        ):
            descriptor = manifests.referrer_descriptor(manifest=manifest, dgst=dgst, size=size)
            self.driver.put(referrer, json.dumps(descriptor).encode())
        for tag in tags:
            if wanted(link := paths.tag_link(name, tag)):
                self.driver.put(link, str(dgst).encode())

    def _check_urls(self, manifest: manifests.Manifest) -> None:
        """Refuse `urls` unless foreign layers are allowed; even then only plain http(s) URLs.

        An accepted foreign layer is neither linked into the repository nor kept from gc on its behalf
        (gc marks it only where the repository links it): naming another repository's digest gains
        nothing.
        """
        for blob in manifest.blobs:
            if not blob.urls:
                continue
            if not self._foreign_layer_urls:
                raise manifests.ManifestInvalidError(
                    f"descriptor {blob.digest} has urls; this registry does not accept foreign layers"
                )
            for url in blob.urls:
                try:
                    parts = urllib.parse.urlsplit(url)
                except ValueError:
                    parts = None
                if (
                    parts is None
                    or parts.scheme not in ("http", "https")
                    or not parts.netloc
                    or parts.fragment
                ):
                    raise manifests.ManifestInvalidError(
                        f"descriptor {blob.digest} has a url that is not plain http(s): {url[:200]!r}"
                    )

    def delete_manifest(self, name: str, dgst: digest.Digest) -> None:
        """Delete a manifest revision, every tag pointing at it, and its referrer entry."""
        stored = self.get_manifest(name, dgst)
        for tag in self.tags(name):
            try:
                if self.driver.get(paths.tag_link(name, tag)).decode() == str(dgst):
                    self.driver.delete(paths.tag_link(name, tag))
            except FileNotFoundError:
                continue
        try:
            parsed = manifests.parse(stored.data, content_type=stored.media_type, strict=False)
        except manifests.ManifestInvalidError:
            parsed = None
        if parsed is not None and parsed.subject is not None:
            self.driver.delete(paths.referrer_link(name, parsed.subject.digest, dgst))
        self.driver.delete(paths.revision_link(name, dgst))

    def delete_tag(self, name: str, tag: str) -> None:
        if self.driver.size(paths.tag_link(name, tag)) is None:
            raise ManifestUnknownError(f"tag {tag!r} unknown to repository {name}", detail={"tag": tag})
        self.driver.delete(paths.tag_link(name, tag))

    def tags(self, name: str) -> list[str]:
        if not self.repository_exists(name):
            raise NameUnknownError(f"repository {name} unknown", detail={"name": name})
        return sorted(self.driver.list(paths.tags(name)))

    def referrers(self, name: str, subject: digest.Digest) -> list[dict[str, Any]]:
        """Descriptors of every manifest in `name` whose subject is `subject` (empty when none)."""
        base_path = paths.referrers(name, subject)
        out: list[dict[str, Any]] = []
        for algorithm in self.driver.list(base_path):
            for encoded in self.driver.list(f"{base_path}/{algorithm}"):
                try:
                    out.append(json.loads(self.driver.get(f"{base_path}/{algorithm}/{encoded}")))
                except (FileNotFoundError, ValueError):
                    continue
        return out


class Maintenance:
    """What gc and fsck read and remove, by what it is (a blob, a revision, a tag), never by driver path.

    The only door from gc.py and fsck.py to storage (`Store.maintenance`): they decide what goes, this
    says what is there and removes it. Blocking: gc and fsck run in a worker thread or a CLI process.
    Times are the stored objects' modification times (gc's grace period; see gc.py).
    """

    def __init__(self, driver: base.Driver) -> None:
        self._driver = driver

    # -- what is stored
    def blobs(self) -> Iterator[digest.Digest]:
        """Every blob directory in the content store (data present or not), whatever links to it."""
        d = self._driver
        for algorithm in d.list(paths.BLOBS):
            for prefix in d.list(f"{paths.BLOBS}/{algorithm}"):
                for encoded in d.list(f"{paths.BLOBS}/{algorithm}/{prefix}"):
                    yield from _digest_or_nothing(algorithm, encoded)

    def _linked(self, directory: str) -> Iterator[digest.Digest]:
        for algorithm in self._driver.list(directory):
            for encoded in self._driver.list(f"{directory}/{algorithm}"):
                yield from _digest_or_nothing(algorithm, encoded)

    def layer_links(self, name: str) -> Iterator[digest.Digest]:
        """The blobs linked into repository `name`."""
        return self._linked(paths.layers(name))

    def revisions(self, name: str) -> Iterator[digest.Digest]:
        """The manifest revisions of repository `name`."""
        return self._linked(paths.revisions(name))

    def links(self, name: str, blob: digest.Digest) -> bool:
        return self._driver.size(paths.layer_link(name, blob)) is not None

    def blob_size(self, blob: digest.Digest) -> int | None:
        """Size of a blob's data; None when the data is missing."""
        return self._driver.size(paths.blob_data(blob))

    def blob_time(self, blob: digest.Digest) -> float | None:
        """When a blob was last stored or relied on by a push (its data, or its `pushed` record);
        None when its data is missing."""
        written = self._driver.mtime(paths.blob_data(blob))
        if written is None:
            return None
        claimed = self._driver.mtime(paths.blob_pushed(blob))
        return written if claimed is None else max(written, claimed)

    def blob_dir_time(self, blob: digest.Digest) -> float | None:
        """When a blob's directory last changed (for data never committed: an interrupted write)."""
        return self._driver.mtime(paths.blob_dir(blob))

    def hash_blob(self, blob: digest.Digest) -> str:
        """The hex digest of a blob's stored bytes under its own algorithm; FileNotFoundError when gone."""
        hasher = digest.new_hasher(blob.algorithm)
        with self._driver.open_reader(paths.blob_data(blob)) as f:
            while chunk := f.read(_READ_CHUNK):
                hasher.update(chunk)
        return hasher.hexdigest()

    def revision_time(self, name: str, revision: digest.Digest) -> float | None:
        return self._driver.mtime(paths.revision_link(name, revision))

    def tag_names(self, name: str) -> list[str]:
        return self._driver.list(paths.tags(name))

    def tag(self, name: str, tag: str) -> tuple[str, float | None]:
        """A tag's target as stored and its time; FileNotFoundError or UnicodeDecodeError when unusable."""
        path = paths.tag_link(name, tag)
        time_ = self._driver.mtime(path)
        return self._driver.get(path).decode().strip(), time_

    def has_tag(self, name: str, tag: str) -> bool:
        return self._driver.size(paths.tag_link(name, tag)) is not None

    def upload_ids(self) -> list[str]:
        return self._driver.list(paths.UPLOADS)

    def leftovers(self) -> list[tuple[str, float | None, int]]:
        """Interrupted writes (see base.Driver.leftovers): each as (what, time, size)."""
        found = []
        for top in (paths.BLOBS, paths.REPOSITORIES, paths.UPLOADS):
            for temp in self._driver.leftovers(top):
                found.append((temp, self._driver.mtime(temp), self._driver.size(temp) or 0))
        return found

    # -- removing (each one step; callers hold Store.gc_lock where a push could race them)
    def remove_tag(self, name: str, tag: str) -> None:
        self._driver.delete(paths.tag_link(name, tag))

    def remove_revision(self, name: str, revision: digest.Digest, *, subject: digest.Digest | None) -> None:
        """A revision and its referrer entry (the entry first: never a referrer to nothing)."""
        if subject is not None:
            self._driver.delete(paths.referrer_link(name, subject, revision))
        self._driver.delete(paths.revision_link(name, revision))

    def remove_layer_link(self, name: str, blob: digest.Digest) -> None:
        self._driver.delete(paths.layer_link(name, blob))

    def remove_blob(self, blob: digest.Digest) -> None:
        """A blob's directory: its data, or what an interrupted write left there."""
        self._driver.delete(paths.blob_dir(blob))

    def remove_upload(self, upload_id: str) -> None:
        self._driver.delete(paths.upload_dir(upload_id))

    def remove_leftover(self, what: str) -> None:
        """One path `leftovers` returned."""
        self._driver.delete(what)


def _recorded_stamps(info: dict[str, Any] | None) -> list[float]:
    """When a session's info says it started and was last written to (store clock)."""
    if info is None:
        return []
    return [float(info[key]) for key in ("started", "touched") if isinstance(info.get(key), int | float)]


def _digest_or_nothing(algorithm: str, encoded: str) -> Iterator[digest.Digest]:
    try:
        yield digest.parse(f"{algorithm}:{encoded}")
    except (digest.DigestInvalidError, digest.DigestUnsupportedError):
        return


def _media_type_of(data: bytes) -> str:
    """Media type of stored manifest bytes, for a revision link whose cached copy was lost."""
    try:
        doc = json.loads(data)
    except ValueError:
        return manifests.OCI_MANIFEST
    declared = doc.get("mediaType") if isinstance(doc, dict) else None
    if isinstance(declared, str) and declared in manifests.MEDIA_TYPES:
        return declared
    if isinstance(doc, dict) and "manifests" in doc:
        return manifests.OCI_INDEX
    return manifests.OCI_MANIFEST


class _AbandonedError(Exception):
    """A request cancelled while its worker adopted a body file: the upload is back where it was."""


async def _in_one_call(work: Callable[[threading.Event], _T]) -> _T:
    """`work(abandoned)` in a worker thread. Not cancellable midway: a cancelled request sets `abandoned`
    (which `work` checks before it commits anything), waits for the worker, and stays cancelled."""
    abandoned = threading.Event()
    running = asyncio.ensure_future(asyncio.to_thread(work, abandoned))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        abandoned.set()
        await asyncio.wait({running})
        if not running.cancelled():
            running.exception()  # retrieved: the request's answer is its cancellation
        raise


def _consume(hasher: digest.Hasher | None, writer: base.Writer, chunks: list[bytes]) -> None:
    """Hash and write one batch of an upload, in order (runs in a worker thread for large bodies)."""
    for chunk in chunks:
        if hasher is not None:
            hasher.update(chunk)
        writer.write(chunk)
