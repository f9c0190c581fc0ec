"""The HTTP reader of registry pods' `/status` documents (`registry_status`), against a local aiohttp server.

Covers: the JSON of every URL that answers 200 comes back in order; a non-200 answer, a body that is not
JSON, a refused connection and a server slower than the timeout are left out instead of raising; no URLs, no
session.
"""

from __future__ import annotations

import asyncio
import collections.abc

import pytest
from aiohttp import test_utils, web

from dockyard_operator import registry_status


@pytest.fixture
async def server() -> collections.abc.AsyncIterator[test_utils.TestServer]:
    async def ok(request: web.Request) -> web.StreamResponse:
        return web.json_response({"storage": {"checked": True}, "path": request.path})

    async def broken(request: web.Request) -> web.StreamResponse:
        return web.Response(status=500, text="no")

    async def garbage(request: web.Request) -> web.StreamResponse:
        return web.Response(text="not json")

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(2)
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/a/status", ok)
    app.router.add_get("/b/status", ok)
    app.router.add_get("/broken", broken)
    app.router.add_get("/garbage", garbage)
    app.router.add_get("/slow", slow)
    async with test_utils.TestServer(app) as running:
        yield running


async def test_answers_come_back_in_order_and_failures_are_left_out(server: test_utils.TestServer) -> None:
    closed = test_utils.unused_port()
    urls = [
        str(server.make_url("/b/status")),
        str(server.make_url("/broken")),
        str(server.make_url("/garbage")),
        f"http://127.0.0.1:{closed}/status",
        str(server.make_url("/slow")),
        str(server.make_url("/a/status")),
    ]
    found = await registry_status.StatusReader(timeout=0.5).read_all(urls)
    assert [doc["path"] for doc in found] == ["/b/status", "/a/status"]


async def test_no_urls_no_requests() -> None:
    assert await registry_status.StatusReader().read_all([]) == []
