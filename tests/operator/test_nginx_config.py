"""The rendered nginx.conf, run by the real nginx (Debian's /usr/sbin/nginx) in front of a fake registry.

Covers:
- `nginx -t` accepts the config with a certificate from crypto.py (default and tuned nginx settings);
- TLS: TLS 1.2 and 1.3 only; the TLS 1.2 cipher list is valid OpenSSL syntax naming only ECDHE + AEAD suites
  (`openssl ciphers -v`), and the running nginx refuses a TLS 1.2 CBC suite, speaks AES-GCM, ChaCha20-Poly1305
  and TLS 1.3;
- an unauthenticated /v2/ request gets nginx's own 401 with exactly one WWW-Authenticate (the registry's),
  Docker-Distribution-API-Version and an OCI error body; a denied one gets 403 DENIED the same way;
- the auth subrequest carries X-Original-URI, X-Original-Method, the client's Authorization and its address
  (X-Real-IP);
- per client address, requests beyond `limit_req`'s burst get nginx's own 429 TOOMANYREQUESTS with
  Retry-After and the API version header while another address is still served; the registry's 429 from
  `/auth` (that client's password checks are over budget) reaches the client as 429, not 503;
- allowed requests are proxied with a single API version header; uploads of any size stream through;
- a blob answered with X-Accel-Redirect is served by nginx from the data directory, keeping the registry's
  Docker-Content-Digest, ETag and Content-Type, with Range support;
- the object storage variant (no blob volume): `nginx -t` accepts it without a data directory; the
  registry's 307 to a presigned bucket URL reaches the client untouched, streamed blob bytes pass through,
  and an X-Accel-Redirect finds no internal location to serve files from;
- a large answer the registry streams (a mirror's first fetch, object storage without redirects) reaches the
  client in full-size TLS records, not one per 4 KiB page nginx read;
- /healthz needs no credentials;
- the token flow variant: `nginx -t` accepts it; `/token` (query and Authorization intact, no auth
  subrequest) reaches the registry, its answer passes through, and the auth subrequest carries the Host and
  scheme the client used (the registry's realm); without the flow there is no /token route and the auth
  subrequest carries neither;
- an oversized Authorization header is refused by nginx itself (400) without echoing it and never reaches
  the registry.
The fake registry is an aiohttp app in the test's event loop; nginx is a subprocess stopped by its PID.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime
import json
import os
import pathlib
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from dockyard_common import pki
from dockyard_operator import model
from dockyard_operator.builders import nginx_configmap
from tests.support import procs

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
BODY_FILE = "X-Dockyard-Body-File"
pytestmark = pytest.mark.skipif(
    not os.path.exists(NGINX), reason="nginx is not installed (make setup installs it)"
)

GOOD = "Basic " + base64.b64encode(b"alice:pw").decode()
FORGED = {"Authorization": GOOD, BODY_FILE: "/etc/passwd"}  # a client trying to name a file
FLOODED = "Basic " + base64.b64encode(b"admin:guess").decode()  # the fake registry sheds it with 429
BLOB = b"layer-bytes-0123456789"
BIG_BLOB = os.urandom(4 << 20)  # streamed by the fake registry in one write
PRESIGNED = "https://bucket.example:9000/team-images/blobs/ab?X-Amz-Signature=abc&X-Amz-Expires=1200"


def _material(tmp: pathlib.Path) -> nginx_configmap.NginxPaths:
    now = datetime.datetime.now(datetime.UTC)
    ca = pki.new_ca(common_name="test ca", now=now, duration=datetime.timedelta(days=1))
    server = pki.issue_server_cert(
        ca=ca, common_name="localhost", dns_names=["localhost"], ip_addresses=["127.0.0.1"], now=now,
        duration=datetime.timedelta(hours=1),
    )  # fmt: skip
    (tmp / "tls.crt").write_bytes(server.cert_pem)
    (tmp / "tls.key").write_bytes(server.key_pem)
    (tmp / "ca.crt").write_bytes(ca.cert_pem)
    for sub in ("cache", "data/blobs/ab"):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    (tmp / "data/blobs/ab/data").write_bytes(BLOB)
    return nginx_configmap.NginxPaths(
        cert=str(tmp / "tls.crt"), key=str(tmp / "tls.key"), pid=str(tmp / "nginx.pid"),
        temp_dir=str(tmp / "cache"), data_dir=str(tmp / "data"),
    )  # fmt: skip


def _nginx_t(conf: pathlib.Path, prefix: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NGINX, "-t", "-e", "stderr", "-c", str(conf), "-p", str(prefix)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    "nginx",
    [
        model.Nginx(),
        model.Nginx(client_max_body_size="512m", proxy_read_timeout="30m", proxy_connect_timeout="2s"),
    ],
)
def test_nginx_accepts_the_rendered_config_with_a_generated_certificate(
    tmp_path: pathlib.Path, nginx: model.Nginx
) -> None:
    conf = tmp_path / "nginx.conf"
    port = procs.reserve_port()
    try:
        conf.write_text(
            nginx_configmap.render(nginx=nginx, paths=_material(tmp_path), listen_port=port.number)
        )
        result = _nginx_t(conf, tmp_path)
    finally:
        port.release()
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_accepts_the_body_file_variant_which_writes_bodies_to_the_data_volume(
    tmp_path: pathlib.Path,
) -> None:
    conf = tmp_path / "nginx.conf"
    paths = _material(tmp_path)
    port = procs.reserve_port()
    try:
        conf.write_text(
            nginx_configmap.render(nginx=model.Nginx(), paths=paths, listen_port=port.number, body_files=True)
        )
        result = _nginx_t(conf, tmp_path)
    finally:
        port.release()
    text = conf.read_text()
    upload = text[text.index("location ~ ^/v2/.+/blobs/uploads/") :]
    upload = upload[: upload.index("}")]
    assert result.returncode == 0, result.stderr
    assert f"client_body_temp_path {tmp_path}/data/.nginx-bodies;" in upload
    assert paths.body_dir == f"{tmp_path}/data/.nginx-bodies"
    assert "client_body_in_file_only clean;" in upload and "proxy_pass_request_body off;" in upload
    assert "client_body_buffer_size 1m;" in upload  # not nginx's 16k: one write per MiB
    # The upload location sets headers of its own, so it must repeat every header the server level sets.
    for header in ("Host", "X-Forwarded-Proto", "X-Forwarded-For", "X-Real-IP", "Connection"):
        assert f"proxy_set_header {header} " in upload, header


def test_nginx_accepts_the_object_storage_variant_without_a_data_directory(tmp_path: pathlib.Path) -> None:
    conf = tmp_path / "nginx.conf"
    paths = dataclasses.replace(_material(tmp_path), data_dir=str(tmp_path / "absent"))
    port = procs.reserve_port()
    try:
        conf.write_text(
            nginx_configmap.render(
                nginx=model.Nginx(), paths=paths, listen_port=port.number, blobs_from_volume=False
            )
        )
        result = _nginx_t(conf, tmp_path)
    finally:
        port.release()
    assert result.returncode == 0, result.stderr
    assert "absent" not in conf.read_text()


def test_nginx_accepts_the_token_flow_variant(tmp_path: pathlib.Path) -> None:
    conf = tmp_path / "nginx.conf"
    port = procs.reserve_port()
    try:
        text = nginx_configmap.render(
            nginx=model.Nginx(), paths=_material(tmp_path), listen_port=port.number, token_flow=True
        )
        conf.write_text(text)
        result = _nginx_t(conf, tmp_path)
    finally:
        port.release()
    assert result.returncode == 0, result.stderr
    assert "location = /token {" in text
    assert "location = /token" not in nginx_configmap.render(nginx=model.Nginx())


def test_the_rendered_tls_settings_allow_only_tls12_ecdhe_aead_suites_and_tls13() -> None:
    text = nginx_configmap.render(nginx=model.Nginx())
    assert "        ssl_protocols TLSv1.2 TLSv1.3;\n" in text
    assert f"        ssl_ciphers {nginx_configmap.TLS12_CIPHERS};\n" in text
    assert text.count("ssl_ciphers") == 1 and "ssl_conf_command" not in text
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    listed = subprocess.run(
        [openssl, "ciphers", "-v", "-tls1_2", nginx_configmap.TLS12_CIPHERS],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    tls12 = [line.split() for line in listed if " TLSv1.2 " in line]
    assert len(tls12) == 6, listed
    for name, _, kx, _, enc, mac in tls12:
        assert (kx, mac) == ("Kx=ECDH", "Mac=AEAD"), name
        assert enc.startswith(("Enc=AESGCM", "Enc=CHACHA20/POLY1305")), name


def _read_if_file(path: str) -> bytes | None:
    return pathlib.Path(path).read_bytes() if os.path.isfile(path) else None


class FakeRegistry:
    """Answers /auth like the registry's auth endpoint and /v2/ like the registry, recording what it saw."""

    def __init__(self) -> None:
        self.auth_requests: list[dict[str, str]] = []
        self.token_requests: list[tuple[str, dict[str, str]]] = []
        self.uploaded = 0
        self.upload_pieces: list[int] = []  # the sizes of the HTTP chunks an upload body came in
        # Per proxied request: (method, path, the body-file header it carried or None, that file's bytes
        # or None, its Content-Length header or None)
        self.body_files: list[tuple[str, str, str | None, bytes | None, str | None]] = []

    @web.middleware
    async def record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        named = request.headers.get(BODY_FILE)
        content = None
        if named is not None:
            content = await asyncio.to_thread(_read_if_file, named)
        self.body_files.append(
            (request.method, request.path, named, content, request.headers.get("Content-Length"))
        )
        response: web.StreamResponse = await handler(request)
        return response

    async def auth(self, request: web.Request) -> web.Response:
        self.auth_requests.append(dict(request.headers))
        if request.headers.get("Authorization") == FLOODED:
            return web.Response(status=429, headers={"Retry-After": "1"})
        if request.headers.get("Authorization") != GOOD:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="demo"'})
        if "/forbidden/" in request.headers.get("X-Original-URI", ""):
            return web.Response(status=403)
        if "/full/" in request.headers.get("X-Original-URI", ""):  # storage cannot take pushes
            return web.Response(status=507)
        return web.Response(status=200)

    async def base(self, request: web.Request) -> web.Response:
        return web.json_response({}, headers={"Docker-Distribution-API-Version": "registry/2.0"})

    async def blob(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["repo"].startswith("bucket/"):  # a registry on object storage
            if request.match_info["digest"] == "sha256:ab":
                return web.Response(
                    status=307,
                    headers={"Location": PRESIGNED, "Docker-Content-Digest": "sha256:ab"},
                )
            if request.match_info["digest"] == "sha256:big":
                return web.Response(body=BIG_BLOB, headers={"Docker-Content-Digest": "sha256:big"})
            return web.Response(body=BLOB, headers={"Docker-Content-Digest": "sha256:cd"})
        return web.Response(
            status=200,
            headers={
                "X-Accel-Redirect": "/_dockyard_blobs/blobs/ab/data",
                "Docker-Content-Digest": "sha256:ab",
                "ETag": '"sha256:ab"',
                "Content-Type": "application/vnd.oci.image.layer.v1.tar+gzip",
            },
        )

    async def upload(self, request: web.Request) -> web.Response:
        piece = 0  # bytes of the HTTP chunk being received (nginx streams a body of unknown length chunked)
        async for data, end_of_chunk in request.content.iter_chunks():
            self.uploaded += len(data)
            piece += len(data)
            if end_of_chunk and piece:
                self.upload_pieces.append(piece)
                piece = 0
            if not data and request.content.at_eof():
                break  # an empty body, once read, answers (b"", True) for ever instead of ending
        return web.Response(status=202, headers={"Docker-Distribution-API-Version": "registry/2.0"})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def token(self, request: web.Request) -> web.Response:
        self.token_requests.append((request.query_string, dict(request.headers)))
        if request.headers.get("Authorization") != GOOD:
            return web.json_response({"errors": [{"code": "UNAUTHORIZED"}]}, status=401)
        return web.json_response({"token": "t", "access_token": "t"}, headers={"Cache-Control": "no-store"})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=0, middlewares=[self.record])
        app.router.add_get("/auth", self.auth)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/token", self.token)
        app.router.add_get("/v2/", self.base)
        app.router.add_get("/v2/{repo:.+}/blobs/{digest}", self.blob)
        app.router.add_patch("/v2/{repo:.+}/blobs/uploads/{id}", self.upload)
        app.router.add_put("/v2/{repo:.+}/blobs/uploads/{id}", self.upload)
        app.router.add_put("/v2/{repo:.+}/manifests/{ref}", self.upload)
        return app


class Front:
    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        registry: FakeRegistry,
        tls: ssl.SSLContext,
        *,
        ca: str,
    ) -> None:
        self.url, self.session, self.registry, self.tls = url, session, registry, tls
        self.tls_ca = ca  # the CA file `tls` trusts, for clients with other TLS settings

    async def request(self, method: str, path: str, **kwargs: Any) -> tuple[aiohttp.ClientResponse, bytes]:
        async with self.session.request(method, self.url + path, ssl=self.tls, **kwargs) as response:
            return response, await response.read()


@pytest.fixture
async def front(tmp_path: pathlib.Path) -> AsyncIterator[Front]:
    async with _front(tmp_path, limits=nginx_configmap.ClientLimits()) as started:
        yield started


@pytest.fixture
async def body_front(tmp_path: pathlib.Path) -> AsyncIterator[Front]:
    """The operator's variant for a data volume: upload bodies written to files by nginx."""
    async with _front(tmp_path, limits=nginx_configmap.ClientLimits(), body_files=True) as started:
        yield started


@pytest.fixture
async def bucket_front(tmp_path: pathlib.Path) -> AsyncIterator[Front]:
    async with _front(tmp_path, limits=nginx_configmap.ClientLimits(), blobs_from_volume=False) as started:
        yield started


@pytest.fixture
async def token_front(tmp_path: pathlib.Path) -> AsyncIterator[Front]:
    async with _front(tmp_path, limits=nginx_configmap.ClientLimits(), token_flow=True) as started:
        yield started


@contextlib.asynccontextmanager
async def _front(
    tmp_path: pathlib.Path,
    *,
    limits: nginx_configmap.ClientLimits,
    blobs_from_volume: bool = True,
    body_files: bool = False,
    token_flow: bool = False,
) -> AsyncIterator[Front]:
    registry = FakeRegistry()
    runner = web.AppRunner(registry.app())
    await runner.setup()
    reserved = [procs.reserve_port(), procs.reserve_port()]  # held until nginx and the fake stop
    upstream_port, port = (r.number for r in reserved)
    await web.TCPSite(runner, "127.0.0.1", upstream_port).start()
    paths = _material(tmp_path)
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        nginx_configmap.render(
            nginx=model.Nginx(),
            paths=paths,
            upstream=f"127.0.0.1:{upstream_port}",
            listen_port=port,
            limits=limits,
            blobs_from_volume=blobs_from_volume,
            body_files=body_files,
            token_flow=token_flow,
        )
    )
    # As root, nginx would drop its workers to `nobody`, who cannot enter pytest's private temp dir.
    directives = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")
    process = await asyncio.create_subprocess_exec(
        NGINX, "-e", "stderr", "-c", str(conf), "-p", str(tmp_path), "-g", directives,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    tls = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    try:
        async with aiohttp.ClientSession() as session:
            url = f"https://localhost:{port}"
            for _ in range(100):
                if process.returncode is not None:
                    errors = await process.stderr.read() if process.stderr else b""
                    raise RuntimeError(f"nginx exited: {errors.decode()}")
                try:
                    async with session.get(url + "/healthz", ssl=tls):
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            yield Front(url, session, registry, tls, ca=str(tmp_path / "ca.crt"))
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout=10)
        except TimeoutError:
            process.kill()
            await process.wait()
        await runner.cleanup()
        for r in reserved:
            r.release()


async def test_an_unauthenticated_request_gets_one_challenge_the_api_version_and_an_oci_error(
    front: Front,
) -> None:
    response, body = await front.request("GET", "/v2/")
    assert response.status == 401
    assert response.headers.getall("WWW-Authenticate") == ['Basic realm="demo"']
    assert response.headers.getall("Docker-Distribution-API-Version") == ["registry/2.0"]
    assert json.loads(body)["errors"][0]["code"] == "UNAUTHORIZED"


async def test_a_denied_request_gets_an_oci_denied_error(front: Front) -> None:
    response, body = await front.request(
        "GET", "/v2/forbidden/blobs/sha256:ab", headers={"Authorization": GOOD}
    )
    assert response.status == 403
    assert response.headers.getall("Docker-Distribution-API-Version") == ["registry/2.0"]
    assert json.loads(body)["errors"][0]["code"] == "DENIED"


async def test_the_auth_subrequest_carries_the_original_uri_method_and_credentials(front: Front) -> None:
    await front.request("GET", "/v2/team/app/blobs/sha256:ab?x=1", headers={"Authorization": GOOD})
    seen = front.registry.auth_requests[-1]
    assert seen["X-Original-URI"] == "/v2/team/app/blobs/sha256:ab?x=1"
    assert seen["X-Original-Method"] == "GET"
    assert seen["Authorization"] == GOOD
    assert seen["X-Real-IP"] == "127.0.0.1"


async def test_the_registrys_429_from_auth_reaches_the_client_as_429_not_503(front: Front) -> None:
    response, body = await front.request("GET", "/v2/", headers={"Authorization": FLOODED})
    assert response.status == 429
    assert json.loads(body)["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert response.headers.getall("Docker-Distribution-API-Version") == ["registry/2.0"]
    assert "Retry-After" in response.headers


async def test_requests_beyond_the_burst_of_one_address_get_429_while_another_address_is_served(
    tmp_path: pathlib.Path,
) -> None:
    limits = nginx_configmap.ClientLimits(rate_per_minute=1, burst=3, connections=64)
    async with _front(tmp_path, limits=limits) as front:
        statuses = []
        for _ in range(limits.burst + 3):  # one token a minute: none comes back during the loop
            response, body = await front.request("GET", "/v2/", headers={"Authorization": GOOD})
            statuses.append(response.status)
            if response.status == 429:
                assert json.loads(body)["errors"][0]["code"] == "TOOMANYREQUESTS"
                assert response.headers["Retry-After"] == "1"
                assert response.headers.getall("Docker-Distribution-API-Version") == ["registry/2.0"]
        assert statuses == [200] * (limits.burst + 1) + [429] * 2
        # Another address (loopback has all of 127/8) has its own bucket.
        other = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=other) as session:
            resp = await session.get(front.url + "/v2/", headers={"Authorization": GOOD}, ssl=front.tls)
            assert resp.status == 200
            resp.release()
        assert front.registry.auth_requests[-1]["X-Real-IP"] == "127.0.0.2"


async def test_allowed_requests_are_proxied_with_a_single_api_version_header(front: Front) -> None:
    response, body = await front.request("GET", "/v2/", headers={"Authorization": GOOD})
    assert response.status == 200 and json.loads(body) == {}
    assert response.headers.getall("Docker-Distribution-API-Version") == ["registry/2.0"]


async def test_a_large_upload_streams_through_without_a_body_limit(front: Front) -> None:
    size = 3 * 1024 * 1024 + 7

    async def chunks() -> AsyncIterator[bytes]:
        for offset in range(0, size, 65536):
            yield b"x" * min(65536, size - offset)

    response, _ = await front.request(
        "PATCH", "/v2/team/app/blobs/uploads/u1", headers={"Authorization": GOOD}, data=chunks()
    )
    assert response.status == 202
    assert front.registry.uploaded == size


async def test_with_body_files_nginx_writes_an_upload_body_to_the_body_dir_and_passes_only_its_path(
    body_front: Front, tmp_path: pathlib.Path
) -> None:
    body = os.urandom(300_000)
    response, _ = await body_front.request(
        "PATCH", "/v2/team/app/blobs/uploads/u1", data=body,
        headers={**FORGED, "Content-Type": "application/octet-stream"},
    )  # fmt: skip
    empty, _ = await body_front.request(
        "PUT", "/v2/team/app/blobs/uploads/u1?digest=sha256:ab", headers=FORGED
    )
    proxied = [seen for seen in body_front.registry.body_files if seen[1].startswith("/v2/")]
    [(method, _, named, seen, length), (put, _, put_named, put_seen, _)] = proxied
    body_dir = tmp_path / "data" / ".nginx-bodies"
    assert response.status == 202 and empty.status == 202
    # The client's forged header never arrives: nginx names its own file in the body directory.
    assert method == "PATCH" and named is not None and pathlib.Path(named).parent == body_dir
    assert seen == body and length is None  # the bytes are in the file only; no body on the socket
    assert put == "PUT" and put_named is not None and pathlib.Path(put_named).parent == body_dir
    assert put_seen == b""
    assert body_front.registry.uploaded == 0
    # nginx removes a body file when it finalizes the request, which may be just after the client read
    # the answer: wait for that (bounded), then require the directory empty.
    for _ in range(100):
        if not list(body_dir.iterdir()):
            break
        await asyncio.sleep(0.05)
    assert list(body_dir.iterdir()) == []  # nginx removed every body file once its request ended


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/v2/"),
        ("GET", "/v2/team/app/blobs/sha256:ab"),
        ("PUT", "/v2/team/app/manifests/v1"),
        ("GET", "/healthz"),
    ],
)
async def test_a_client_can_never_name_a_body_file_on_any_path(
    body_front: Front, method: str, path: str
) -> None:
    await body_front.request(method, path, headers=FORGED, data=b"{}" if method == "PUT" else None)
    assert body_front.registry.body_files, "the request never reached the registry"
    assert all(named is None for _, _, named, _, _ in body_front.registry.body_files)
    assert all(BODY_FILE not in seen for seen in body_front.registry.auth_requests)


async def test_a_push_the_registrys_storage_refuses_at_auth_is_507_and_no_body_file_is_written(
    body_front: Front, tmp_path: pathlib.Path
) -> None:
    response, body = await body_front.request(
        "PATCH", "/v2/full/app/blobs/uploads/u1", headers={"Authorization": GOOD}, data=os.urandom(100_000)
    )
    assert response.status == 507
    assert json.loads(body)["errors"][0]["message"] == "registry storage is full"
    assert not [seen for seen in body_front.registry.body_files if seen[1].startswith("/v2/")]
    body_dir = tmp_path / "data" / ".nginx-bodies"
    assert not body_dir.exists() or list(body_dir.iterdir()) == []


async def test_without_body_files_uploads_stream_and_a_forged_body_file_header_is_dropped(
    front: Front,
) -> None:
    response, _ = await front.request("PATCH", "/v2/team/app/blobs/uploads/u1", headers=FORGED, data=b"abc")
    assert response.status == 202 and front.registry.uploaded == 3
    proxied = [seen for seen in front.registry.body_files if seen[1].startswith("/v2/")]
    assert [(method, named) for method, _, named, _, _ in proxied] == [("PATCH", None)]


async def test_blobs_are_served_by_nginx_with_the_registrys_headers(front: Front) -> None:
    response, body = await front.request(
        "GET", "/v2/team/app/blobs/sha256:ab", headers={"Authorization": GOOD}
    )
    assert response.status == 200
    assert body == BLOB
    assert response.headers["Docker-Content-Digest"] == "sha256:ab"
    assert response.headers.getall("ETag") == ['"sha256:ab"']
    assert response.headers["Content-Type"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    partial, part = await front.request(
        "GET", "/v2/team/app/blobs/sha256:ab", headers={"Authorization": GOOD, "Range": "bytes=0-4"}
    )
    assert partial.status == 206 and part == BLOB[:5]


async def test_the_internal_blob_location_is_not_reachable_directly(front: Front) -> None:
    response, _ = await front.request(
        "GET", "/_dockyard_blobs/blobs/ab/data", headers={"Authorization": GOOD}
    )
    assert response.status == 404


async def test_with_object_storage_the_registrys_redirect_reaches_the_client_untouched(
    bucket_front: Front,
) -> None:
    response, _ = await bucket_front.request(
        "GET", "/v2/bucket/app/blobs/sha256:ab", headers={"Authorization": GOOD}, allow_redirects=False
    )
    assert response.status == 307
    assert response.headers["Location"] == PRESIGNED
    assert response.headers["Docker-Content-Digest"] == "sha256:ab"
    assert response.headers.getall("Docker-Distribution-API-Version") == ["registry/2.0"]


async def test_with_object_storage_streamed_blobs_pass_through_and_nothing_is_served_from_disk(
    bucket_front: Front,
) -> None:
    response, body = await bucket_front.request(
        "GET", "/v2/bucket/app/blobs/sha256:cd", headers={"Authorization": GOOD}
    )
    assert (response.status, body) == (200, BLOB)
    # An X-Accel-Redirect answer (a registry wrongly started with --accel-redirect) finds no file location.
    accel, data = await bucket_front.request(
        "GET", "/v2/team/app/blobs/sha256:ab", headers={"Authorization": GOOD}
    )
    assert accel.status == 404 and data != BLOB


async def test_with_object_storage_an_upload_streams_to_the_registry_in_large_pieces(
    bucket_front: Front,
) -> None:
    size = 4 * 1024 * 1024

    async def chunks() -> AsyncIterator[bytes]:
        for offset in range(0, size, 65536):
            yield b"y" * min(65536, size - offset)

    response, _ = await bucket_front.request(
        "PATCH", "/v2/bucket/app/blobs/uploads/u1", headers={"Authorization": GOOD}, data=chunks()
    )
    assert response.status == 202 and bucket_front.registry.uploaded == size
    # nginx passes each read of the client's body on as one chunk, at most its body buffer: with nginx's
    # default (16 KiB) a blob reached the registry 16 KiB at a time, a read, a chunk and a write for each.
    assert max(bucket_front.registry.upload_pieces) > 16 * 1024


async def test_a_large_streamed_answer_reaches_the_client_in_full_size_tls_records(
    bucket_front: Front,
) -> None:
    port = int(bucket_front.url.rsplit(":", 1)[1])
    body, records = await asyncio.to_thread(
        _get_with_record_sizes, port, bucket_front.tls_ca, "/v2/bucket/app/blobs/sha256:big"
    )
    assert body == BIG_BLOB
    # nginx hands TLS what one read from the registry got: with a page-sized read buffer every record
    # carried at most 4 KiB of the blob (about 1,000 records here); now most bytes come in records of
    # more than 8 KiB (TLS's maximum is 16 KiB).
    assert max(records) > 8192
    assert sum(r for r in records if r > 8192) > len(BIG_BLOB) // 2


def _get_with_record_sizes(port: int, ca: str, path: str) -> tuple[bytes, list[int]]:
    """The body of an authenticated GET of `path` over a TLS connection to nginx, and the length of every
    TLS record the answer came in (read off the wire below the TLS layer)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context(cafile=ca).wrap_bio(incoming, outgoing, server_hostname="localhost")
    raw = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                received = sock.recv(65536)
                assert received, "nginx closed the connection during the handshake"
                incoming.write(received)
        sock.sendall(outgoing.read())
        headers = f"Host: localhost\r\nAuthorization: {GOOD}\r\nConnection: close\r\n"
        tls.write(f"GET {path} HTTP/1.1\r\n{headers}\r\n".encode())
        sock.sendall(outgoing.read())
        while data := sock.recv(1 << 20):
            raw += data
    incoming.write(bytes(raw))
    plain = bytearray()
    with contextlib.suppress(ssl.SSLZeroReturnError, ssl.SSLWantReadError):
        while chunk := tls.read(1 << 20):
            plain += chunk
    records, at = [], 0
    while at + 5 <= len(raw):
        length = int.from_bytes(raw[at + 3 : at + 5], "big")
        records.append(length)
        at += 5 + length
    head, _, body = bytes(plain).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return body, records


async def _tls_handshake(front: Front, client: ssl.SSLContext) -> tuple[str, str]:
    """(protocol, cipher) of a real handshake with the running nginx."""
    port = int(front.url.rsplit(":", 1)[1])
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="localhost")
    try:
        tls = writer.get_extra_info("ssl_object")
        cipher = tls.cipher()
        return cipher[1], cipher[0]
    finally:
        writer.close()


def _tls12_client(front: Front, cipher: str) -> ssl.SSLContext:
    client = ssl.create_default_context(cafile=front.tls_ca)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.set_ciphers(cipher)
    return client


async def test_nginx_refuses_tls12_cbc_and_speaks_ecdhe_aead_and_tls13(front: Front) -> None:
    for cbc in ("ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA384"):
        with pytest.raises(ssl.SSLError):
            await _tls_handshake(front, _tls12_client(front, cbc))
    for aead in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"):
        assert await _tls_handshake(front, _tls12_client(front, aead)) == ("TLSv1.2", aead)
    assert (await _tls_handshake(front, front.tls))[0] == "TLSv1.3"


async def test_healthz_needs_no_credentials(front: Front) -> None:
    response, body = await front.request("GET", "/healthz")
    assert response.status == 200 and body == b"ok"
    assert front.registry.auth_requests == []


async def test_an_oversized_authorization_header_is_refused_by_nginx_without_echo(front: Front) -> None:
    credential = base64.b64encode(b"alice:" + b"hunter2-secret-" * 1500).decode()
    response, body = await front.request("GET", "/v2/", headers={"Authorization": f"Basic {credential}"})
    assert response.status == 400
    assert credential[:16].encode() not in body and b"secret" not in body
    assert front.registry.auth_requests == []


async def test_token_reaches_the_registry_as_sent_and_its_answer_passes_through(token_front: Front) -> None:
    response, body = await token_front.request(
        "GET", "/token?service=demo&scope=repository:team/app:pull,push", headers={"Authorization": GOOD}
    )
    assert response.status == 200, body
    assert json.loads(body)["token"] == "t"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers.getall("Docker-Distribution-API-Version") == ["registry/2.0"]
    query, headers = token_front.registry.token_requests[-1]
    assert query == "service=demo&scope=repository:team/app:pull,push"
    assert headers["Authorization"] == GOOD
    assert headers["X-Real-IP"] == "127.0.0.1"
    assert token_front.registry.auth_requests == [], "/token must not go through auth_request"
    refused, refused_body = await token_front.request("GET", "/token?scope=repository:a:pull")
    assert refused.status == 401, "the registry's own refusal must reach the client"
    assert json.loads(refused_body)["errors"][0]["code"] == "UNAUTHORIZED"


async def test_with_the_token_flow_the_auth_subrequest_carries_the_clients_host_and_scheme(
    token_front: Front,
) -> None:
    await token_front.request("GET", "/v2/", headers={"Authorization": GOOD})
    seen = token_front.registry.auth_requests[-1]
    assert seen["Host"] == token_front.url.removeprefix("https://")
    assert seen["X-Forwarded-Proto"] == "https"


async def test_without_the_token_flow_there_is_no_token_route_and_no_scheme_in_the_subrequest(
    front: Front,
) -> None:
    response, _ = await front.request(
        "GET", "/token?scope=repository:a:pull", headers={"Authorization": GOOD}
    )
    assert response.status == 404
    assert front.registry.token_requests == []
    await front.request("GET", "/v2/", headers={"Authorization": GOOD})
    assert "X-Forwarded-Proto" not in front.registry.auth_requests[-1]
