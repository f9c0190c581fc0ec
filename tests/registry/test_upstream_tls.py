"""A mirror's TLS settings are loaded when the registry starts, not by the first pull.

An upstream with a `caFile` needs a TLS context holding the system's CA bundle and that file; building it
parses the whole system bundle (tens of milliseconds) and, done on first use, held up the event loop and
the first cold pull. The upstream here is an in-process aiohttp server with TLS (a certificate from
dockyard_common.pki), so the CA file really decides whether a request gets through.

Covers:
- a registry started with a mirror loads its CA file at startup: garbling the file afterwards does not
  stop the first pull through the mirror (the upstream's tag list is served);
- a client never prepared reads the CA file at its first request (the garbled file is refused there
  with an error naming the CA bundle), which is what the startup step avoids;
- a CA file that cannot be loaded does not stop the registry from starting: the first request through
  that mirror reports it, as before.
"""

from __future__ import annotations

import datetime
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import test_utils, web

from dockyard_common import pki
from dockyard_registry import app, mirror, mirrors, state, store, upstream
from dockyard_registry.storage import filesystem
from tests.support import procs

PREFIX = "hub"
TAGS = ["1.0", "2.0"]


async def _tags(request: web.Request) -> web.Response:
    return web.json_response({"name": request.match_info["repo"], "tags": TAGS})


@pytest.fixture
async def tls_upstream(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """(URL of an upstream serving /v2/<repo>/tags/list over TLS, the CA file that trusts it)."""
    now = datetime.datetime.now(datetime.UTC)
    ca = pki.new_ca(common_name="upstream ca", now=now, duration=datetime.timedelta(days=1))
    cert = pki.issue_server_cert(
        ca=ca, common_name="localhost", dns_names=["localhost"], ip_addresses=["127.0.0.1"], now=now,
        duration=datetime.timedelta(hours=1),
    )  # fmt: skip
    (tmp_path / "up.crt").write_bytes(cert.cert_pem)
    (tmp_path / "up.key").write_bytes(cert.key_pem)
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "up.crt", tmp_path / "up.key")
    server = web.Application()
    server.router.add_get("/v2/{repo:.+}/tags/list", _tags)
    runner = web.AppRunner(server)
    await runner.setup()
    port = procs.reserve_port()
    try:
        await web.TCPSite(runner, "127.0.0.1", port.number, ssl_context=context).start()
        yield f"https://127.0.0.1:{port.number}", tmp_path / "ca.crt"
    finally:
        await runner.cleanup()
        port.release()


def _config(url: str, ca_file: Path) -> mirrors.Mirrors:
    return mirrors.parse(
        {"mirrors": [{"prefix": PREFIX, "upstream": url, "caFile": str(ca_file)}]}, base=ca_file.parent
    )


async def test_the_registry_loads_a_mirrors_ca_file_at_startup_not_at_the_first_pull(
    tls_upstream: tuple[str, Path], tmp_path: Path
) -> None:
    url, ca_file = tls_upstream
    st = store.Store(filesystem.FilesystemDriver(tmp_path / "data"))
    pull = mirror.PullThrough(_config(url, ca_file), store=st)
    settings = state.Settings(store=st, authenticator=None, mirror=pull)
    async with test_utils.TestClient(test_utils.TestServer(app.create_app(settings))) as client:
        ca_file.write_text("not a certificate\n")  # too late: read when the registry started
        async with client.get(f"/v2/{PREFIX}/lib/app/tags/list") as response:
            assert response.status == 200, await response.text()
            assert json.loads(await response.read())["tags"] == TAGS
        assert pull.clients[PREFIX].reachable is True


async def test_a_client_never_prepared_reads_the_ca_file_at_its_first_request(
    tls_upstream: tuple[str, Path],
) -> None:
    url, ca_file = tls_upstream
    prepared = upstream.Client(_config(url, ca_file).entries[0])
    unprepared = upstream.Client(_config(url, ca_file).entries[0])
    await prepared.prepare()
    ca_file.write_text("not a certificate\n")
    try:
        async with prepared.open("GET", "/v2/lib/app/tags/list", repository="lib/app", kind="tags") as r:
            assert r.status == 200
        with pytest.raises(upstream.UnavailableError, match="cannot load the CA bundle"):
            async with unprepared.open("GET", "/v2/lib/app/tags/list", repository="lib/app", kind="tags"):
                pass
    finally:
        await prepared.close()
        await unprepared.close()


async def test_an_unloadable_ca_file_does_not_stop_startup_and_the_first_request_reports_it(
    tls_upstream: tuple[str, Path], tmp_path: Path
) -> None:
    url, ca_file = tls_upstream
    ca_file.write_text("not a certificate\n")
    client = upstream.Client(_config(url, ca_file).entries[0])
    await client.prepare()  # does not raise
    try:
        with pytest.raises(upstream.UnavailableError, match="cannot load the CA bundle"):
            async with client.open("GET", "/v2/lib/app/tags/list", repository="lib/app", kind="tags"):
                pass
        assert client.reachable is False and client.last_error is not None
    finally:
        await client.close()
