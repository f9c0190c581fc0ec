"""Manifest GET/HEAD (with Accept negotiation), PUT (by tag or digest, with `?tag=`), DELETE.

GET serves the exact bytes that were pushed (their digest is the identity); nothing is re-encoded.
"""

from __future__ import annotations

import asyncio
import functools
import json

from aiohttp import web

from dockyard_registry import digest, manifests, reference, store
from dockyard_registry.errors import Code, OciError
from dockyard_registry.handlers import common, mirrored


def _accepted(request: web.Request) -> set[str] | None:
    """Media types the client lists in Accept, or None when it accepts anything."""
    values = request.headers.getall("Accept", [])
    types = {part.split(";")[0].strip() for v in values for part in v.split(",") if part.strip()}
    if not types or "*/*" in types or not types & manifests.MEDIA_TYPES:
        return None
    return types


def _negotiate(request: web.Request, repo: str, found: store.StoredManifest) -> store.StoredManifest:
    """Serve an index's linux/amd64 child to a client that explicitly does not accept indexes.

    Old clients list only single-manifest types; anything else gets the stored bytes unchanged,
    which is what every current client expects.
    """
    accepted = _accepted(request)
    if accepted is None or found.media_type in accepted or found.media_type not in manifests.INDEX_TYPES:
        return found
    try:
        doc = json.loads(found.data)
        for child in doc.get("manifests", []):
            platform = child.get("platform") or {}
            if (
                platform.get("os") == "linux"
                and platform.get("architecture") == "amd64"
                and child.get("mediaType") in accepted
            ):
                return common.settings(request).store.get_manifest(repo, digest.parse(child["digest"]))
    except (
        ValueError,
        AttributeError,
        TypeError,
        store.ManifestUnknownError,
        digest.DigestInvalidError,
        digest.DigestUnsupportedError,
    ):
        pass
    return found


async def get(request: web.Request, match: common.PathParams) -> web.StreamResponse:
    repo = common.name(match)
    ref = reference.parse_reference(match.arg)
    headers = {}
    mirrors = mirrored.pull_through(request, repo)
    if mirrors is None:
        found = await asyncio.to_thread(common.settings(request).store.get_manifest, repo, ref)
    else:
        served = await mirrors.manifest(repo, ref)
        found = served.manifest
        headers[mirrored.HEADER] = served.source
    found = await asyncio.to_thread(_negotiate, request, repo, found)
    headers |= {
        "Content-Type": found.media_type,
        "Docker-Content-Digest": str(found.digest),
        "ETag": f'"{found.digest}"',
    }
    return web.Response(status=200, body=found.data, headers=headers)


async def put(request: web.Request, match: common.PathParams) -> web.StreamResponse:
    repo = common.name(match)
    ref = reference.parse_reference(match.arg)
    extra_tags = tuple(reference.validate_tag(t) for t in request.query.getall("tag", []))
    data = await common.read_limited(request, limit=manifests.MAX_MANIFEST_BYTES)
    # Off the event loop: a manifest write fsyncs several files and directories.
    result = await asyncio.to_thread(
        functools.partial(
            common.settings(request).store.put_manifest,
            repo,
            ref,
            data=data,
            content_type=request.headers.get("Content-Type"),
            tags=extra_tags,
        )
    )
    headers = {
        "Location": f"/v2/{repo}/manifests/{result.digest}",
        "Docker-Content-Digest": str(result.digest),
    }
    if result.subject is not None:
        headers["OCI-Subject"] = str(result.subject)
    if extra_tags:
        headers["OCI-Tag"] = ", ".join(extra_tags)
    return web.Response(status=201, headers=headers)


async def delete(request: web.Request, match: common.PathParams) -> web.StreamResponse:
    repo = common.name(match)
    ref = reference.parse_reference(match.arg)
    cfg = common.settings(request)
    if not cfg.delete_enabled:
        raise OciError(Code.UNSUPPORTED, "deletes are disabled on this registry")
    if isinstance(ref, digest.Digest):
        await asyncio.to_thread(cfg.store.delete_manifest, repo, ref)
    else:
        await asyncio.to_thread(cfg.store.delete_tag, repo, ref)
    return web.Response(status=202)
