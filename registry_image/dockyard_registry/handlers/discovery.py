"""`GET /v2/`, the catalog, tag lists and the referrers API (listing endpoints with pagination)."""

from __future__ import annotations

import asyncio
import bisect
import json
import re
import urllib.parse
from collections.abc import Sequence

from aiohttp import web

from dockyard_registry import auth, manifests
from dockyard_registry.errors import Code, OciError
from dockyard_registry.handlers import common, mirrored

# ASCII digits only (str.isdigit and int() also take "²" or "٣"), and few enough that int() never meets
# its digit limit: 19 digits hold any page size a client means (Go's int64 is what Distribution parses).
_PAGE_SIZE_RE = re.compile(r"[0-9]{1,19}")


async def base(request: web.Request, match: common.PathParams) -> web.StreamResponse:
    return web.json_response({})


def _page(request: web.Request, items: Sequence[str]) -> tuple[list[str], str | None]:
    """Apply `n` and `last` to a sorted list; returns the page and the `last` for the next page."""
    raw_n = request.query.get("n")
    last = request.query.get("last")
    start = bisect.bisect_right(items, last) if last else 0
    if raw_n is None or raw_n == "":
        return list(items[start:]), None
    if _PAGE_SIZE_RE.fullmatch(raw_n) is None:
        raise OciError(Code.PAGINATION_NUMBER_INVALID, "n must be a non-negative integer")
    n = int(raw_n)
    page = list(items[start : start + n])
    more = start + n < len(items) and n > 0
    return page, (page[-1] if more and page else None)


def _link(path: str, n: str, last: str) -> str:
    return f'<{path}?{urllib.parse.urlencode({"n": n, "last": last})}>; rel="next"'


async def catalog(request: web.Request, match: common.PathParams) -> web.StreamResponse:
    every = await asyncio.to_thread(common.settings(request).store.catalog)
    repos = [r for r in every if common.may(request, r, auth.Action.PULL)]
    page, next_last = _page(request, repos)
    headers = {}
    if next_last is not None:
        headers["Link"] = _link("/v2/_catalog", request.query["n"], next_last)
    return web.json_response({"repositories": page}, headers=headers)


async def tags(request: web.Request, match: common.PathParams) -> web.StreamResponse:
    repo = common.name(match)
    mirrors = mirrored.pull_through(request, repo)
    if mirrors is not None:
        if request.query.get("n") not in (None, "") and _PAGE_SIZE_RE.fullmatch(request.query["n"]) is None:
            raise OciError(Code.PAGINATION_NUMBER_INVALID, "n must be a non-negative integer")
        listed = await mirrors.tags(repo, query=request.query_string)
        if listed is not None:
            # The upstream's own list (and paging): what a client of the upstream would see.
            names, link = listed
            return web.json_response({"name": repo, "tags": names}, headers={"Link": link} if link else {})
    page, next_last = _page(request, await asyncio.to_thread(common.settings(request).store.tags, repo))
    headers = {}
    if next_last is not None:
        headers["Link"] = _link(f"/v2/{repo}/tags/list", request.query["n"], next_last)
    return web.json_response({"name": repo, "tags": page}, headers=headers)


async def referrers(request: web.Request, match: common.PathParams) -> web.StreamResponse:
    repo = common.name(match)
    subject = common.parse_digest(match.arg)
    mirrors = mirrored.pull_through(request, repo)
    # A mirror lists what its upstream knows (the referrers are fetched on demand like anything else),
    # or what is cached when the upstream cannot say.
    upstream = None if mirrors is None else await mirrors.referrers(repo, subject)
    if upstream is not None:
        found = upstream
    else:
        found = await asyncio.to_thread(common.settings(request).store.referrers, repo, subject)
    headers = {}
    wanted = request.query.get("artifactType")
    if wanted is not None:
        found = [d for d in found if d.get("artifactType") == wanted]
        headers["OCI-Filters-Applied"] = "artifactType"
    found.sort(key=lambda d: str(d.get("digest")))
    body = {"schemaVersion": 2, "mediaType": manifests.OCI_INDEX, "manifests": found}
    return web.Response(body=json.dumps(body).encode(), content_type=manifests.OCI_INDEX, headers=headers)
