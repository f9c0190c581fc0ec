"""Pull-through mirrors: a miss under a mirror's prefix is fetched from its upstream, verified and stored.

Owns: deciding when the upstream is asked (a manifest or blob not here; a tag not re-checked within its
mirror's TTL), verifying what it sends (the digest asked for, or the one it announced for a tag),
storing it through `Store` as ordinary content, one upstream fetch per blob however many clients ask
at once, and serving cached content when the upstream cannot be reached (reported as stale). Counts
stale serves and coalesced blob requests for the metrics (upstream.Client counts requests and errors).
Must not: render HTTP responses (handlers/ do, and the middleware turns the errors below into OCI
errors) or keep a blob in memory: bytes flow from the upstream to the store and, for the first client
asking, to that client, a few chunks at a time, each chunk as the upstream connection received it (never
copied into other pieces on the way).

A blob fetch runs in a task of its own, so the client that started it may go away without cancelling
it; that client (the "leader") reads the chunks from a small queue as the upstream sends them, while
the store takes them from a bounded buffer on a task of its own (blobfetch.py: neither waits for the
other within its bound), its last chunk once the whole blob matched its digest, while the blob is being
committed (the fsyncs are nobody's wait). Others asking for the same blob until the commit is done wait
for the fetch to finish and are served from the store. When the digest does not match, the store keeps
nothing, the leader's response is cut short before its last chunk (its client sees a truncated body) and
everyone else gets the error.

Tag checks are remembered in memory: after a restart every tag is re-checked once (one HEAD).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine
from typing import Any

import aiohttp

from dockyard_registry import blobfetch, digest, manifests, mirrors, store, upstream

log = logging.getLogger(__name__)
_ACCEPT = ", ".join(sorted(manifests.MEDIA_TYPES))


class Source:
    """Where a served manifest came from, for the `Dockyard-Mirror` response header."""

    CACHED = "hit"  # stored here, within its TTL (or addressed by digest)
    FETCHED = "fetched"  # fetched from (or re-checked against) the upstream just now
    STALE = "stale"  # the upstream could not be asked; this is what was cached


@dataclasses.dataclass(frozen=True)
class ServedManifest:
    manifest: store.StoredManifest
    source: str


@dataclasses.dataclass(frozen=True)
class UpstreamBlob:
    """What a HEAD of an uncached blob learned from the upstream."""

    size: int | None


class PullThrough:
    """Every configured mirror of one registry: their upstream clients, tag checks and running fetches."""

    def __init__(
        self,
        config: mirrors.Mirrors,
        *,
        store: store.Store,
        clock: Callable[[], float] = time.monotonic,
        clients: dict[str, upstream.Client] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self._clock = clock
        self.clients = clients or {m.prefix: upstream.Client(m, clock=clock) for m in config.entries}
        self._checked: dict[tuple[str, str], float] = {}  # (repository, tag) -> when the upstream agreed
        self._blobs: dict[tuple[str, digest.Digest], blobfetch.BlobFetch] = {}
        self._manifests: dict[tuple[str, str], asyncio.Task[ServedManifest]] = {}
        self.stale: collections.Counter[str] = collections.Counter()  # stale serves by mirror prefix
        # Blob requests that joined a running upstream fetch instead of starting one, by mirror prefix.
        self.coalesced: collections.Counter[str] = collections.Counter()

    async def prepare(self) -> None:
        """Ready every upstream client before the first request (see upstream.Client.prepare)."""
        for client in self.clients.values():
            await client.prepare()

    async def close(self) -> None:
        for fetch in list(self._blobs.values()):
            if fetch.task is not None:
                fetch.task.cancel()
        for task in list(self._manifests.values()):
            task.cancel()
        for client in self.clients.values():
            await client.close()

    def find(self, name: str) -> mirrors.Mirror | None:
        return self.config.find(name)

    # -------------------------------------------------------------------------------------- manifests
    async def manifest(self, name: str, ref: str | digest.Digest) -> ServedManifest:
        """The manifest `ref` of `name` (a repository under a mirror), fetched when needed.

        Raises store.ManifestUnknownError when neither here nor upstream has it, and an UpstreamError
        when the upstream fails and nothing is cached.
        """
        mirror = self._mirror(name)
        local = await asyncio.to_thread(_cached_manifest, self.store, name, ref)
        if local is not None and (
            isinstance(ref, digest.Digest)
            or self._clock() - self._checked.get((name, ref), -1e18) < mirror.tag_ttl
        ):
            return ServedManifest(local, Source.CACHED)
        # Coalesced: concurrent requests for one reference share a single check or fetch.
        key = (name, str(ref))
        task = self._manifests.get(key)
        if task is None:
            task = asyncio.create_task(self._refresh_manifest(mirror, name, ref, local=local))
            self._manifests[key] = task
            task.add_done_callback(
                lambda t: self._manifests.pop(key, None) if self._manifests.get(key) is t else None
            )
        return await asyncio.shield(task)

    async def _refresh_manifest(
        self,
        mirror: mirrors.Mirror,
        name: str,
        ref: str | digest.Digest,
        *,
        local: store.StoredManifest | None,
    ) -> ServedManifest:
        client = self.clients[mirror.prefix]
        remote = mirror.upstream_name(name)
        path = f"/v2/{remote}/manifests/{ref}"
        try:
            if local is not None and isinstance(ref, str):
                async with client.open(
                    "HEAD", path, repository=remote, kind="manifest", headers={"Accept": _ACCEPT}
                ) as response:
                    announced = response.headers.get("Docker-Content-Digest")
                if announced == str(local.digest):
                    self._checked[(name, ref)] = self._clock()
                    return ServedManifest(local, Source.FETCHED)
            async with client.open(
                "GET", path, repository=remote, kind="manifest", headers={"Accept": _ACCEPT}
            ) as response:
                data = await _read_limited(
                    response, limit=manifests.MAX_MANIFEST_BYTES, origin=mirror.upstream
                )
                content_type = response.headers.get("Content-Type", "").split(";")[0].strip() or None
                dgst = _verify_manifest(
                    data,
                    ref=ref,
                    announced=response.headers.get("Docker-Content-Digest"),
                    origin=mirror.upstream,
                )
        except upstream.NotFoundError:
            raise store.ManifestUnknownError(
                f"manifest {ref} of {remote} not found on upstream {mirror.upstream}",
                detail={"tag" if isinstance(ref, str) else "digest": str(ref)},
            ) from None
        except upstream.UpstreamError as exc:
            if local is None:
                raise
            self.stale[mirror.prefix] += 1
            log.warning("mirror %s: serving cached %s:%s: %s", mirror.prefix, name, ref, exc)
            return ServedManifest(local, Source.STALE)
        await asyncio.to_thread(self.store.cache_manifest, name, ref, data=data, content_type=content_type)
        if isinstance(ref, str):
            self._checked[(name, ref)] = self._clock()
        found = await asyncio.to_thread(self.store.get_manifest, name, dgst)
        return ServedManifest(found, Source.FETCHED)

    # ------------------------------------------------------------------------------------------ blobs
    async def head_blob(self, name: str, dgst: digest.Digest) -> UpstreamBlob:
        """Whether the upstream has an uncached blob, and its size; nothing is stored."""
        mirror = self._mirror(name)
        remote = mirror.upstream_name(name)
        try:
            async with self.clients[mirror.prefix].open(
                "HEAD", f"/v2/{remote}/blobs/{dgst}", repository=remote, kind="blob"
            ) as response:
                return UpstreamBlob(size=response.content_length)
        except upstream.NotFoundError:
            raise _blob_unknown(dgst, remote=remote, mirror=mirror) from None

    def fetch_blob(self, name: str, dgst: digest.Digest) -> tuple[blobfetch.BlobFetch, bool]:
        """The running fetch of a blob into `name`, started now if there is none; True: the caller
        started it and may read its chunks (it must `detach()` when done), False: it joined one."""
        key = (name, dgst)
        running = self._blobs.get(key)
        mirror = self._mirror(name)
        if running is not None:
            running.waiters += 1
            self.coalesced[mirror.prefix] += 1
            return running, False
        fetch = blobfetch.BlobFetch()
        fetch.task = asyncio.create_task(self._fetch_blob(mirror, name, dgst, fetch=fetch))
        self._blobs[key] = fetch

        def done(task: asyncio.Task[int]) -> None:
            if self._blobs.get(key) is fetch:
                del self._blobs[key]
            if not task.cancelled():
                task.exception()  # retrieved here: a fetch nobody waits for must not warn at exit

        fetch.task.add_done_callback(done)
        return fetch, True

    async def _fetch_blob(
        self, mirror: mirrors.Mirror, name: str, dgst: digest.Digest, *, fetch: blobfetch.BlobFetch
    ) -> int:
        remote = mirror.upstream_name(name)
        try:
            async with self.clients[mirror.prefix].open(
                "GET", f"/v2/{remote}/blobs/{dgst}", repository=remote, kind="blob"
            ) as response:
                length = response.content_length
                fetch.started.set_result(length)

                # The chunks as the connection received them (each one TLS read's worth, at most a few
                # hundred KiB): the store, the hash and the leader's socket all take them as they are.
                # Regrouping them into fixed-size pieces (`iter_chunked`) copied every byte once more
                # and allocated a fresh MiB per piece, for no gain downstream. The leader's last chunk
                # does not wait for the commit (its fsyncs): a request arriving before the commit
                # joins this fetch and is served from storage once it is there.
                def storer(
                    body: AsyncIterable[bytes], verified: blobfetch.Verified
                ) -> Coroutine[Any, Any, int]:
                    return self.store.cache_blob(name, dgst, body=body, length=length, verified=verified)

                try:
                    size = await fetch.relay(_chunks(response), store=storer)
                except (store.DigestMismatchError, store.SizeMismatchError):
                    raise upstream.DigestMismatchError(
                        f"upstream {mirror.upstream} sent blob {dgst} of {remote} with other content; "
                        "nothing was stored"
                    ) from None
            return size
        except upstream.NotFoundError:
            exc: BaseException = _blob_unknown(dgst, remote=remote, mirror=mirror)
        except BaseException as other:  # also a cancelled fetch: the leader must not wait for ever
            exc = other
        if not fetch.started.done():
            if isinstance(exc, Exception):
                fetch.started.set_exception(exc)
                fetch.started.exception()  # the leader may be gone: retrieved, so no warning
            else:
                fetch.started.cancel()
        else:
            fetch._settle(exc if isinstance(exc, Exception) else upstream.UnavailableError("fetch cancelled"))
            fetch._abort()
        raise exc

    def _mirror(self, name: str) -> mirrors.Mirror:
        mirror = self.config.find(name)
        if mirror is None:
            raise store.NameUnknownError(f"repository {name} is not under a mirror", detail={"name": name})
        return mirror

    # -------------------------------------------------------------------------------------- referrers
    async def referrers(self, name: str, subject: digest.Digest) -> list[dict[str, Any]] | None:
        """The upstream's referrers of `subject` (descriptors), or None when it cannot say (no
        referrers API, unreachable): the caller then lists what is cached."""
        mirror = self._mirror(name)
        remote = mirror.upstream_name(name)
        try:
            async with self.clients[mirror.prefix].open(
                "GET",
                f"/v2/{remote}/referrers/{subject}",
                repository=remote,
                kind="referrers",
                headers={"Accept": manifests.OCI_INDEX},
            ) as response:
                data = await _read_limited(
                    response, limit=manifests.MAX_MANIFEST_BYTES, origin=mirror.upstream
                )
        except upstream.UpstreamError:
            return None
        return _descriptors(data)

    async def tags(self, name: str, *, query: str) -> tuple[list[str], str | None] | None:
        """The upstream's tag list page for `query` (its `n`/`last`) and its `Link` rewritten to `name`,
        or None when it cannot say (unreachable, refused): the caller then lists what is cached."""
        mirror = self._mirror(name)
        remote = mirror.upstream_name(name)
        path = f"/v2/{remote}/tags/list" + (f"?{query}" if query else "")
        try:
            async with self.clients[mirror.prefix].open(
                "GET", path, repository=remote, kind="tags"
            ) as response:
                data = await _read_limited(
                    response, limit=manifests.MAX_MANIFEST_BYTES, origin=mirror.upstream
                )
                link = response.headers.get("Link")
        except upstream.NotFoundError:
            raise store.NameUnknownError(
                f"repository {remote} not found on upstream {mirror.upstream}", detail={"name": name}
            ) from None
        except upstream.UpstreamError:
            return None
        try:
            found = json.loads(data).get("tags") or []
        except (ValueError, AttributeError):
            return None
        if not isinstance(found, list) or not all(isinstance(t, str) for t in found):
            return None
        if link is not None:
            link = link.replace(f"/v2/{remote}/tags/list", f"/v2/{name}/tags/list")
            if f"/v2/{name}/tags/list" not in link:
                link = None  # a Link we cannot map onto our name is better left out
        return found, link

    @property
    def fetches_running(self) -> int:
        """Blob fetches in progress (tests wait on this rather than sleep)."""
        return len(self._blobs)


def _cached_manifest(st: store.Store, name: str, ref: str | digest.Digest) -> store.StoredManifest | None:
    with contextlib.suppress(store.ManifestUnknownError):
        return st.get_manifest(name, ref)
    return None


def _blob_unknown(dgst: digest.Digest, *, remote: str, mirror: mirrors.Mirror) -> store.BlobUnknownError:
    return store.BlobUnknownError(
        f"blob {dgst} of {remote} not found on upstream {mirror.upstream}", detail={"digest": str(dgst)}
    )


async def _chunks(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    async for chunk, _ in response.content.iter_chunks():
        if chunk:  # empty: the end of a chunk of a `Transfer-Encoding: chunked` body
            yield chunk


async def _read_limited(response: aiohttp.ClientResponse, *, limit: int, origin: str) -> bytes:
    data = await response.content.read(limit + 1)
    if len(data) > limit:
        raise upstream.UpstreamError(f"upstream {origin} sent a manifest larger than {limit} bytes")
    return data


def _verify_manifest(
    data: bytes, *, ref: str | digest.Digest, announced: str | None, origin: str
) -> digest.Digest:
    """The digest of manifest bytes the upstream sent; DigestMismatchError when it is not the one
    asked for (by digest) or the one the upstream announced (by tag)."""
    expected: digest.Digest | None = ref if isinstance(ref, digest.Digest) else None
    if expected is None and announced:
        try:
            expected = digest.parse(announced.strip())
        except (digest.DigestInvalidError, digest.DigestUnsupportedError):
            expected = None
    actual = digest.of_bytes(data, algorithm=expected.algorithm if expected else "sha256")
    if expected is not None and actual != expected:
        raise upstream.DigestMismatchError(
            f"upstream {origin} sent manifest {ref} with digest {actual}, expected {expected}; "
            "nothing was stored"
        )
    return actual


def _descriptors(data: bytes) -> list[dict[str, Any]] | None:
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    found = doc.get("manifests") if isinstance(doc, dict) else None
    if not isinstance(found, list):
        return None
    return [d for d in found if isinstance(d, dict)]
