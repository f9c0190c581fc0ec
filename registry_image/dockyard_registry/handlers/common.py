"""Helpers every handler shares: settings, validated path parts, body streaming, standard headers.

Must not: hold state or know about routes beyond the `PathParams` they receive.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import os
import pathlib
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from dockyard_registry import auth, bodyfile, digest, reference, state, store
from dockyard_registry.errors import Code, OciError

CHUNK = 1 << 20
# Names the file the sidecar's nginx wrote a blob upload's body to (nginx_configmap renders it; nginx
# overwrites or removes it on every request, so no client can name a file).
BODY_FILE_HEADER = bodyfile.HEADER


@dataclasses.dataclass(frozen=True)
class PathParams:
    """What the route table extracted from the path: repository name and last segment (decoded)."""

    name: str  # repository name, still unvalidated ("" for /v2/ and the catalog)
    arg: str  # reference, digest or upload id, else ""


def settings(request: web.Request) -> state.Settings:
    return request.app[state.SETTINGS]


def name(match: PathParams) -> str:
    return reference.validate_name(match.name)


def parse_digest(value: str) -> digest.Digest:
    return digest.parse(value)


def identity(request: web.Request) -> auth.Identity:
    found: auth.Identity = request.get(state.IDENTITY, auth.ANONYMOUS)
    return found


def may(request: web.Request, repository: str, action: auth.Action) -> bool:
    authenticator = settings(request).authenticator
    return authenticator is None or authenticator.permits(identity(request), repository, action)


async def body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The request body in chunks of up to 1 MiB, never buffered whole.

    A body that ends before its Content-Length (client gone, truncated) becomes BLOB_UPLOAD_INVALID;
    the store rolls the upload back when this raises.
    """
    try:
        async for chunk in request.content.iter_chunked(CHUNK):
            yield chunk
    except (
        aiohttp.ClientPayloadError,
        aiohttp.http_exceptions.HttpProcessingError,
        ConnectionError,
        asyncio.IncompleteReadError,
    ) as exc:
        raise OciError(Code.BLOB_UPLOAD_INVALID, f"request body incomplete: {type(exc).__name__}") from None


def body_source(request: web.Request) -> store.Body:
    """A blob upload request's body: the file nginx wrote it to (see bodyfile.py), else the socket.

    The body-file header is trusted only when the registry runs with `--body-file-dir` (the operator's
    nginx variant sets it; without it the header is ignored and the body read from the socket), only from
    a loopback peer (the sidecar) and only for an nginx temp file directly inside that directory; anything
    else is refused with BLOB_UPLOAD_INVALID and touches no file.
    """
    cfg = settings(request)
    directory = cfg.body_file_dir
    if cfg.body_ahead is not None:
        # This request's body is complete (nginx proxies only complete ones): its mark, if any, goes.
        cfg.body_ahead.arrived(request.path.rsplit("/", 1)[-1])
    value = request.headers.get(BODY_FILE_HEADER)
    if directory is None or value is None:
        return body_chunks(request)
    if not _loopback(request.remote):
        raise OciError(Code.BLOB_UPLOAD_INVALID, f"{BODY_FILE_HEADER} is accepted from the local nginx only")
    if request.content_length or request.headers.get("Transfer-Encoding"):
        raise OciError(Code.BLOB_UPLOAD_INVALID, f"{BODY_FILE_HEADER} with a request body")
    named = pathlib.PurePosixPath(value)
    if not (
        named.is_absolute() and bodyfile.NAME_RE.match(named.name) and _same_dir(named.parent, directory)
    ):
        raise OciError(Code.BLOB_UPLOAD_INVALID, f"{BODY_FILE_HEADER} names no file of the body directory")
    try:
        return bodyfile.open_checked(directory / named.name, ahead=cfg.body_ahead)
    except bodyfile.BodyFileError as exc:
        raise OciError(Code.BLOB_UPLOAD_INVALID, str(exc)) from None


def body_length(request: web.Request, body: store.Body) -> int | None:
    """The body's length when known up front: the body file's size, else Content-Length."""
    return body.size if isinstance(body, bodyfile.BodyFile) else request.content_length


def _same_dir(named: pathlib.PurePosixPath, directory: pathlib.Path) -> bool:
    """Whether nginx's directory is ours: the same path, or the same directory seen through another path
    (nginx's mount of it, where its path differs from ours)."""
    if named == pathlib.PurePosixPath(directory):
        return True
    try:
        return os.path.samefile(named, directory)
    except OSError:
        return False


def _loopback(remote: str | None) -> bool:
    try:
        return ipaddress.ip_address((remote or "").strip()).is_loopback
    except ValueError:
        return False


async def read_limited(request: web.Request, *, limit: int) -> bytes:
    """Read a small body (a manifest) up to `limit` bytes; larger bodies are refused without buffering."""
    if request.content_length is not None and request.content_length > limit:
        raise OciError(Code.MANIFEST_INVALID, f"manifest larger than {limit} bytes", status=413)
    parts: list[bytes] = []
    total = 0
    async for chunk in body_chunks(request):
        total += len(chunk)
        if total > limit:
            raise OciError(Code.MANIFEST_INVALID, f"manifest larger than {limit} bytes", status=413)
        parts.append(chunk)
    return b"".join(parts)
