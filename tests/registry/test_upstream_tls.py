"""A mirror's TLS settings are loaded when the registry starts, not by the first pull, and again when its
CA file changes.

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
  that mirror reports it, as before;
- the upstream's certificate re-issued by a new CA and the CA file swapped the way kubelet updates a
  mounted Secret (the `..data` symlink flipped): the next request trusts the new CA, no restart;
- a download in flight when the CA file changes finishes on its old connection (the old pool is closed
  by its last user, not at the change);
- a new CA file that cannot be loaded keeps the old one in use (requests still served) and is reported
  (caError and lastError in /status, one warning in the log); a good file after it is loaded again.

The upstream closes every connection after its answer, so each request makes a new TLS handshake.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import logging
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import test_utils, web

from dockyard_common import pki
from dockyard_registry import app, metrics, mirror, mirrors, state, store, upstream
from dockyard_registry.storage import filesystem
from tests.support import procs

PREFIX = "hub"
TAGS = ["1.0", "2.0"]


async def _tags(request: web.Request) -> web.Response:
    response = web.json_response({"name": request.match_info["repo"], "tags": TAGS})
    response.force_close()  # every request makes a new connection: a TLS handshake the CA file decides
    return response


async def _slow_blob(request: web.Request) -> web.StreamResponse:
    """Half a body, then the rest once the test releases it: a download in flight meanwhile."""
    response = web.StreamResponse()
    await response.prepare(request)
    await response.write(b"a" * 1000)
    await request.app[RELEASE].wait()
    await response.write(b"b" * 1000)
    await response.write_eof()
    return response


RELEASE = web.AppKey("release", asyncio.Event)


@dataclasses.dataclass
class TlsUpstream:
    """An upstream serving /v2/<repo>/tags/list over TLS, and the CA file that trusts it, mounted the way
    kubelet mounts a Secret: `ca.crt` -> `..data/ca.crt`, `..data` -> a directory of this version."""

    url: str
    ca_file: Path
    context: ssl.SSLContext
    directory: Path
    versions: int = 0
    release: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    def reissue(self) -> bytes:
        """The server's certificate re-issued by a new CA (new handshakes present it); that CA's PEM."""
        now = datetime.datetime.now(datetime.UTC)
        day = datetime.timedelta(days=1)
        ca = pki.new_ca(common_name=f"upstream ca {self.versions}", now=now, duration=day)
        cert = pki.issue_server_cert(
            ca=ca, common_name="localhost", dns_names=["localhost"], ip_addresses=["127.0.0.1"], now=now,
            duration=datetime.timedelta(hours=1),
        )  # fmt: skip
        (self.directory / "up.crt").write_bytes(cert.cert_pem)
        (self.directory / "up.key").write_bytes(cert.key_pem)
        self.context.load_cert_chain(self.directory / "up.crt", self.directory / "up.key")
        return ca.cert_pem

    def swap_ca(self, pem: bytes) -> None:
        """Kubelet's update of a mounted Secret: a new directory, then the `..data` symlink flipped."""
        self.versions += 1
        version = self.directory / f"..version-{self.versions}"
        version.mkdir()
        (version / "ca.crt").write_bytes(pem)
        (self.directory / "..data_tmp").symlink_to(version.name)
        os.replace(self.directory / "..data_tmp", self.directory / "..data")


@pytest.fixture
async def tls_upstream(tmp_path: Path) -> AsyncIterator[TlsUpstream]:
    directory = tmp_path / "upstream"
    directory.mkdir()
    up = TlsUpstream(url="", ca_file=directory / "ca.crt", context=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER),
                     directory=directory)  # fmt: skip
    up.swap_ca(up.reissue())
    up.ca_file.symlink_to("..data/ca.crt")
    server = web.Application()
    server.router.add_get("/v2/{repo:.+}/tags/list", _tags)
    server.router.add_get("/v2/{repo:.+}/blobs/slow", _slow_blob)
    server[RELEASE] = up.release
    runner = web.AppRunner(server)
    await runner.setup()
    port = procs.reserve_port()
    try:
        await web.TCPSite(runner, "127.0.0.1", port.number, ssl_context=up.context).start()
        up.url = f"https://127.0.0.1:{port.number}"
        yield up
    finally:
        await runner.cleanup()
        port.release()


def _config(url: str, ca_file: Path) -> mirrors.Mirrors:
    return mirrors.parse(
        {"mirrors": [{"prefix": PREFIX, "upstream": url, "caFile": str(ca_file)}]}, base=ca_file.parent
    )


async def test_the_registry_loads_a_mirrors_ca_file_at_startup_not_at_the_first_pull(
    tls_upstream: TlsUpstream, tmp_path: Path
) -> None:
    url, ca_file = tls_upstream.url, tls_upstream.ca_file
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
    tls_upstream: TlsUpstream,
) -> None:
    url, ca_file = tls_upstream.url, tls_upstream.ca_file
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
    tls_upstream: TlsUpstream, tmp_path: Path
) -> None:
    url, ca_file = tls_upstream.url, tls_upstream.ca_file
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


async def _tags_of(client: upstream.Client) -> list[str]:
    async with client.open("GET", "/v2/lib/app/tags/list", repository="lib/app", kind="tags") as response:
        return list(json.loads(await response.read())["tags"])


async def test_a_rotated_ca_file_is_trusted_without_a_restart(tls_upstream: TlsUpstream) -> None:
    client = upstream.Client(_config(tls_upstream.url, tls_upstream.ca_file).entries[0], ca_check_seconds=0)
    await client.prepare()
    try:
        assert await _tags_of(client) == TAGS
        # The upstream's certificate re-issued by a new CA, and the mounted CA Secret updated to it.
        tls_upstream.swap_ca(tls_upstream.reissue())
        assert await _tags_of(client) == TAGS
        assert client.reachable is True and client.ca_error is None
    finally:
        await client.close()


async def test_a_download_in_flight_is_not_cut_off_when_the_ca_file_changes(
    tls_upstream: TlsUpstream,
) -> None:
    client = upstream.Client(_config(tls_upstream.url, tls_upstream.ca_file).entries[0], ca_check_seconds=0)
    await client.prepare()
    try:
        async with client.open("GET", "/v2/lib/app/blobs/slow", repository="lib/app", kind="blob") as slow:
            first = await slow.content.readexactly(1000)
            tls_upstream.swap_ca(tls_upstream.reissue())
            assert await _tags_of(client) == TAGS  # a new connection under the new CA: the old pool retired
            tls_upstream.release.set()
            rest = await slow.content.read()
        assert first + rest == b"a" * 1000 + b"b" * 1000
        assert client.reachable is True and client.ca_error is None
    finally:
        await client.close()


async def test_a_broken_new_ca_file_keeps_the_old_one_and_is_reported(
    tls_upstream: TlsUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url, ca_file = tls_upstream.url, tls_upstream.ca_file
    st = store.Store(filesystem.FilesystemDriver(tmp_path / "data"))
    client = upstream.Client(_config(url, ca_file).entries[0], ca_check_seconds=0)
    pull = mirror.PullThrough(_config(url, ca_file), store=st, clients={PREFIX: client})
    settings = state.Settings(store=st, authenticator=None, mirror=pull)
    async with test_utils.TestClient(test_utils.TestServer(app.create_app(settings))) as http:
        tls_upstream.swap_ca(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        with caplog.at_level(logging.WARNING, logger="dockyard_registry.upstream"):
            for _ in range(2):
                async with http.get(f"/v2/{PREFIX}/lib/app/tags/list") as response:
                    assert response.status == 200, await response.text()
                    assert json.loads(await response.read())["tags"] == TAGS
        assert client.reachable is True
        assert client.ca_error is not None and "cannot load the CA bundle" in client.ca_error
        assert str(ca_file) in client.ca_error and "still used" in client.ca_error
        assert client.last_error == client.ca_error
        warned = [r for r in caplog.records if "cannot load the CA bundle" in r.getMessage()]
        assert len(warned) == 1  # once for this version of the file, not at every request
        (entry,) = metrics._mirror_status(pull)
        assert entry["caError"] == client.ca_error

        # A good bundle again (for a re-issued certificate): trusted, and the error cleared.
        tls_upstream.swap_ca(tls_upstream.reissue())
        async with http.get(f"/v2/{PREFIX}/lib/app/tags/list") as response:
            assert response.status == 200, await response.text()
        assert client.ca_error is None and metrics._mirror_status(pull)[0]["caError"] is None
