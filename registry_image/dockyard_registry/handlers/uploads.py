"""Blob uploads: POST (start, monolithic, mount), PATCH (chunk), PUT (finish), GET (status), DELETE."""

from __future__ import annotations

import asyncio
import functools
import re

from aiohttp import web

from dockyard_registry import auth, digest, reference, store
from dockyard_registry.errors import Code, OciError
from dockyard_registry.handlers import common

_CONTENT_RANGE_RE = re.compile(r"^(?:bytes[ =])?(\d+)-(\d+)(?:/(?:\d+|\*))?$")


def _upload_headers(repo: str, upload_id: str, size: int) -> dict[str, str]:
    return {
        "Location": f"/v2/{repo}/blobs/uploads/{upload_id}",
        "Docker-Upload-UUID": upload_id,
        # Range is inclusive; an empty upload reports 0-0 as distribution does (clients accept both).
        "Range": f"0-{max(size - 1, 0)}",
    }


def _created(repo: str, dgst: digest.Digest) -> web.Response:
    return web.Response(
        status=201,
        headers={"Location": f"/v2/{repo}/blobs/{dgst}", "Docker-Content-Digest": str(dgst)},
    )


def _content_range(request: web.Request) -> tuple[int, int] | None:
    value = request.headers.get("Content-Range")
    if value is None:
        return None
    m = _CONTENT_RANGE_RE.match(value.strip())
    if m is None:
        raise OciError(Code.RANGE_INVALID, f"malformed Content-Range {value[:100]!r}")
    start, end = int(m.group(1)), int(m.group(2))
    if end < start:
        raise OciError(Code.RANGE_INVALID, f"Content-Range end before start: {value[:100]!r}")
    return start, end


def _owner(request: web.Request) -> str:
    """Whose session cap a new upload counts against: the user, or "" for every anonymous pusher."""
    return common.identity(request).user or ""


def expect_body(request: web.Request, *, method: str, handler: object, upload_id: str) -> None:
    """From nginx's auth subrequest of a passed upload request, before nginx reads its body: tell the body
    follower (bodyahead.py) when that body may continue an upload rather than start one (a Content-Range
    not at 0, or an upload this process knows holds bytes), so that no file is hashed ahead for nothing
    while it is pending. `method`/`handler`: the original request's."""
    follower = common.settings(request).body_ahead
    if follower is None or method not in ("PATCH", "PUT") or handler not in (patch, finish):
        return
    known = common.settings(request).store.known_upload_size(upload_id)
    rng = request.headers.get("Content-Range", "")
    m = _CONTENT_RANGE_RE.match(rng.strip())
    if (m is not None and int(m.group(1)) > 0) or (known is not None and known > 0) or (not m and rng):
        follower.expect_continuation(upload_id)


async def start(request: web.Request, match: common.PathParams) -> web.StreamResponse:
    repo = common.name(match)
    cfg = common.settings(request)
    mount = request.query.get("mount")
    if mount is not None:
        dgst = common.parse_digest(mount)
        source = request.query.get("from")
        if source is not None:
            candidates = [reference.validate_name(source)]
        else:
            # Anonymous mount (no `from`): any repository holding the blob that the caller may read.
            candidates = await asyncio.to_thread(cfg.store.repositories_with_blob, dgst)
        for candidate in candidates:
            # A source the caller cannot read is treated like a missing one: fall back to an upload.
            if common.may(request, candidate, auth.Action.PULL) and await asyncio.to_thread(
                functools.partial(cfg.store.mount_blob, repo, source=candidate, dgst=dgst)
            ):
                return _created(repo, dgst)
    monolithic = request.query.get("digest")
    if monolithic is not None:
        dgst = common.parse_digest(monolithic)
        body = common.body_source(request)
        upload_id = await asyncio.to_thread(cfg.store.start_upload, repo, owner=_owner(request))
        try:
            await cfg.store.finish_upload(
                repo,
                upload_id,
                dgst=dgst,
                body=body,
                length=common.body_length(request, body),
            )
        except BaseException:
            # A failed monolithic push leaves nothing behind: the session was never visible to the client.
            # Synchronous on purpose: this also runs when the task is being cancelled.
            cfg.store.cancel_upload(repo, upload_id)
            raise
        return _created(repo, dgst)
    upload_id = await asyncio.to_thread(cfg.store.start_upload, repo, owner=_owner(request))
    return web.Response(status=202, headers=_upload_headers(repo, upload_id, 0))


async def status(request: web.Request, match: common.PathParams) -> web.StreamResponse:
    repo = common.name(match)
    size = await asyncio.to_thread(common.settings(request).store.upload_size, repo, match.arg)
    return web.Response(status=204, headers=_upload_headers(repo, match.arg, size))


async def patch(request: web.Request, match: common.PathParams) -> web.StreamResponse:
    repo = common.name(match)
    cfg = common.settings(request)
    rng = _content_range(request)
    length = None if rng is None else rng[1] - rng[0] + 1
    body = common.body_source(request)
    received = common.body_length(request, body)
    if length is not None and received is not None and received != length:
        raise OciError(Code.RANGE_INVALID, "Content-Range does not match Content-Length")
    try:
        size = await cfg.store.write_chunk(
            repo,
            match.arg,
            body=body,
            start=None if rng is None else rng[0],
            length=length,
        )
    except store.RangeInvalidError as exc:
        raise OciError(
            Code.RANGE_INVALID, str(exc), headers=_upload_headers(repo, match.arg, exc.size)
        ) from None
    return web.Response(status=202, headers=_upload_headers(repo, match.arg, size))


async def finish(request: web.Request, match: common.PathParams) -> web.StreamResponse:
    repo = common.name(match)
    cfg = common.settings(request)
    raw = request.query.get("digest")
    if raw is None:
        raise OciError(Code.DIGEST_INVALID, "digest query parameter is required to finish an upload")
    dgst = common.parse_digest(raw)
    rng = _content_range(request)
    body = common.body_source(request)
    has_body = bool(common.body_length(request, body)) or (
        request.headers.get("Transfer-Encoding", "") == "chunked"
    )
    try:
        await cfg.store.finish_upload(
            repo,
            match.arg,
            dgst=dgst,
            body=body if has_body or rng is not None else None,
            start=None if rng is None else rng[0],
            length=None if rng is None else rng[1] - rng[0] + 1,
        )
    except store.RangeInvalidError as exc:
        raise OciError(
            Code.RANGE_INVALID, str(exc), headers=_upload_headers(repo, match.arg, exc.size)
        ) from None
    return _created(repo, dgst)


async def cancel(request: web.Request, match: common.PathParams) -> web.StreamResponse:
    repo = common.name(match)
    await asyncio.to_thread(common.settings(request).store.cancel_upload, repo, match.arg)
    return web.Response(status=204)
