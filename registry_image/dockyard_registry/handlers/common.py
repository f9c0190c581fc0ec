"""Helpers every handler shares: settings, validated path parts, body streaming, standard headers.

Must not: hold state or know about routes beyond the `PathParams` they receive.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from dockyard_registry import auth, digest, reference, state
from dockyard_registry.errors import Code, OciError

CHUNK = 1 << 20


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
