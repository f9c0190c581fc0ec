"""Blob GET/HEAD (with Range) and DELETE.

Blob bytes never pass through Python when they need not: behind nginx we answer with X-Accel-Redirect;
standalone on the filesystem driver `web.FileResponse` uses sendfile (and handles Range itself); on S3
with redirects on we answer 307 to a presigned URL; S3 without redirects and the memory driver stream
through here.
"""

from __future__ import annotations

import asyncio
import re

from aiohttp import web

from dockyard_registry import digest, paths, store
from dockyard_registry.errors import Code, OciError
from dockyard_registry.handlers import common, mirrored

_OCTET = "application/octet-stream"
_SMALL = 64 * 1024
# A suffix range of zero bytes ("bytes=-0", "bytes=-000"). aiohttp reads it as "bytes=0-" (-0 == 0) and
# answers 206 with the whole blob; RFC 9110 14.1.1: a suffix-range is satisfiable only if its length is
# non-zero. Same syntax as aiohttp's own parser, so every other header means what it means there.
_EMPTY_SUFFIX_RE = re.compile(r"^bytes=-0+$", re.ASCII | re.IGNORECASE)


async def get(request: web.Request, match: common.PathParams) -> web.StreamResponse:
    repo = common.name(match)
    dgst = common.parse_digest(match.arg)
    cfg = common.settings(request)
    headers = {
        "Docker-Content-Digest": str(dgst),
        "Content-Type": _OCTET,
        "ETag": f'"{dgst}"',
        "Accept-Ranges": "bytes",
        # Content-addressed: the bytes at this URL never change.
        "Cache-Control": "max-age=31536000",
    }
    try:
        size = await asyncio.to_thread(cfg.store.blob_size, repo, dgst)
    except store.BlobUnknownError:
        mirrors = mirrored.pull_through(request, repo)
        if mirrors is None:
            raise
        answered = await mirrored.blob(request, mirrors=mirrors, name=repo, dgst=dgst, headers=headers)
        if answered is not None:
            return answered
        size = await asyncio.to_thread(cfg.store.blob_size, repo, dgst)
    if request.method == "HEAD":
        headers["Content-Length"] = str(size)
        return web.Response(status=200, headers=headers)
    redirect = await asyncio.to_thread(cfg.store.blob_redirect_url, dgst)
    if redirect is not None:
        # Object storage serves the bytes (and Range) itself; the URL is presigned and short-lived.
        return web.Response(status=307, headers={"Location": redirect, "Docker-Content-Digest": str(dgst)})
    if cfg.accel_redirect is not None:
        headers["X-Accel-Redirect"] = cfg.accel_redirect.rstrip("/") + "/" + paths.blob_data(dgst)
        return web.Response(status=200, headers=headers)
    # Judged here for every path: FileResponse would answer a bad Range itself, with an empty 416 body.
    _byte_range(request, size)
    if size <= _SMALL and "Range" not in request.headers:
        # Configs and tiny layers: one read beats FileResponse's executor round trips for stat/open/sendfile.
        body = await asyncio.to_thread(cfg.store.read_blob, dgst)
        return web.Response(status=200, body=body, headers=headers)
    local = cfg.store.blob_file(dgst)
    if local is not None:
        # FileResponse sends with sendfile and answers Range itself (206/416); it replaces our ETag with
        # its mtime-size one, which is as stable for immutable content.
        return web.FileResponse(local, chunk_size=common.CHUNK, headers=headers)
    return await _stream(request, dgst=dgst, size=size, headers=headers)


async def _stream(
    request: web.Request, *, dgst: digest.Digest, size: int, headers: dict[str, str]
) -> web.StreamResponse:
    """Serve a blob from a driver without local files (memory), with the same Range semantics."""
    start, end = 0, size  # end exclusive
    status = 200
    wanted = _byte_range(request, size)
    if wanted is not None:
        start, end = wanted
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    response = web.StreamResponse(status=status, headers=headers)
    await response.prepare(request)
    f = await asyncio.to_thread(common.settings(request).store.open_blob, dgst, offset=start)
    with f:
        remaining = end - start
        while remaining > 0:
            chunk = await asyncio.to_thread(f.read, min(common.CHUNK, remaining))
            if not chunk:
                break
            await response.write(chunk)
            remaining -= len(chunk)
    await response.write_eof()
    return response


def _byte_range(request: web.Request, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) a Range header asks for, None without one; RANGE_INVALID (416) when it is
    malformed (also empty) or not satisfiable: the cases aiohttp's FileResponse answers 416 itself."""
    if "Range" not in request.headers:
        return None
    if _EMPTY_SUFFIX_RE.match(request.headers["Range"]):
        raise _unsatisfiable(size)
    try:
        rng = request.http_range
    except ValueError:
        raise _unsatisfiable(size) from None
    if rng.start is None:
        raise _unsatisfiable(size)
    if rng.start < 0:
        start, end = max(0, size + rng.start), size
    else:
        start, end = rng.start, min(rng.stop if rng.stop is not None else size, size)
    if start >= size:
        raise _unsatisfiable(size)
    return start, end


def _unsatisfiable(size: int) -> OciError:
    return OciError(
        Code.RANGE_INVALID, "requested range not satisfiable", headers={"Content-Range": f"bytes */{size}"}
    )


async def delete(request: web.Request, match: common.PathParams) -> web.StreamResponse:
    repo = common.name(match)
    dgst = common.parse_digest(match.arg)
    cfg = common.settings(request)
    if not cfg.delete_enabled:
        raise OciError(Code.UNSUPPORTED, "deletes are disabled on this registry")
    await asyncio.to_thread(cfg.store.delete_blob, repo, dgst)
    return web.Response(status=202, headers={"Docker-Content-Digest": str(dgst)})
