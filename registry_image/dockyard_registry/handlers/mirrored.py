"""Serving a miss under a mirror's prefix: the manifest, blob and referrers answers that ask the upstream.

Thin like every handler: mirror.py decides what is fetched, verified and stored; this module only turns
its results into responses. The one subtle part is the first client of an uncached blob, which gets
the bytes as they arrive from the upstream (see mirror.py); a fetch that fails after its first byte was
sent can no longer become an error body, so that client's connection is closed before the declared
length, which every client treats as a failed download. That client's last chunk comes once the blob
matched its digest, without waiting for it to be committed to storage.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from dockyard_registry import blobfetch, digest, mirror
from dockyard_registry.handlers import common

log = logging.getLogger(__name__)
HEADER = "Dockyard-Mirror"


def pull_through(request: web.Request, name: str) -> mirror.PullThrough | None:
    """The registry's mirrors when `name` lies under one of their prefixes, else None."""
    found = common.settings(request).mirror
    if found is None or found.find(name) is None:
        return None
    return found


async def blob(
    request: web.Request,
    *,
    mirrors: mirror.PullThrough,
    name: str,
    dgst: digest.Digest,
    headers: dict[str, str],
) -> web.StreamResponse | None:
    """Answer a GET/HEAD of a blob not cached in `name`; None once the blob is cached and the caller
    should serve it from the store (a client that joined a running fetch, or asked for a Range)."""
    headers = {**headers, HEADER: mirror.Source.FETCHED}
    if request.method == "HEAD":
        found = await mirrors.head_blob(name, dgst)
        if found.size is not None:
            headers["Content-Length"] = str(found.size)
        return web.Response(status=200, headers=headers)
    fetch, leader = mirrors.fetch_blob(name, dgst)
    assert fetch.task is not None
    if not leader or "Range" in request.headers:
        if leader:
            fetch.detach()  # a Range is served from the store once the whole blob is there
        await asyncio.shield(fetch.task)
        return None
    try:
        length = await fetch.started
    except BaseException:
        fetch.detach()
        raise
    if length is not None:
        headers["Content-Length"] = str(length)
    response = web.StreamResponse(status=200, headers=headers)
    try:
        await response.prepare(request)
        async for chunk in fetch.chunks():  # the last one only once the blob matched its digest
            await response.write(chunk)
    except Exception as exc:
        if not _failed(fetch, exc):
            raise  # the client went away, say: nothing to report about the fetch
        log.warning("mirror fetch of %s@%s failed after streaming began: %s", name, dgst, exc)
        if request.transport is not None:
            request.transport.close()
        return response
    finally:
        fetch.detach()
    await response.write_eof()
    return response


def _failed(fetch: blobfetch.BlobFetch, exc: Exception) -> bool:
    """Whether `exc` is the fetch's own failure (a client's broken connection is not)."""
    done = fetch.verified
    return done.done() and not done.cancelled() and done.exception() is exc
