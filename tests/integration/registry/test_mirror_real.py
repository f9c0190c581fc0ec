"""Pull-through mirrors against a REAL upstream: CNCF Distribution (hack/tools.sh `distribution`) with TLS
and htpasswd (Basic) auth, pulled through `dockyard-registry serve --mirrors` by crane.

The upstream is started by this module with its own CA (the mirror trusts it through `caFile`) and its
Prometheus metrics on (`http.debug.prometheus`), which are the independent witness of how many requests
reached it. Metrics rather than its access log: a request is counted in `registry_http_requests_total`
only once its handler returned, and `registry_http_in_flight_requests` says whether one is still running,
so a test can wait until the upstream has nothing in flight and then read an exact count; an access log
line is written at some point after the response, with no way to know one is still to come (and its
format is not an interface).

Covers:
- first pull through the mirror fills the cache: `crane pull` through Dockyard gives the upstream's
  manifest and every blob byte-identical, and `crane validate --remote` checks them;
- with the upstream stopped, the same image is served from the cache (manifest marked
  `Dockyard-Mirror: stale` once its TTL is over);
- a tag moved upstream is seen after the TTL;
- upstream 404 is a 404 `MANIFEST_UNKNOWN`;
- a wrong upstream password is a 502 naming the upstream, without the password;
- a blob corrupted on the upstream's disk is refused (digest mismatch) and nothing is stored;
- 20 concurrent pulls of one uncached blob (20 HTTP clients, the first one stalled until the other 19
  joined its fetch) all get the right bytes, and Distribution served the blob exactly once (its metrics);
- `crane push` into the mirror's prefix is DENIED; outside it pushes work.

- the Docker Bearer token flow against a Distribution with `auth: token`: a real Distribution issues the
  challenge and verifies the tokens (signed by a small issuer here); one token serves a whole pull, and
  credentials the token service refuses are a 502 that says so.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import dataclasses
import datetime
import hashlib
import http.client
import http.server
import json
import os
import re
import socket
import ssl
import subprocess
import textwrap
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from dockyard_common import pki
from tests import support
from tests.integration.registry import certs, harness, images
from tests.support import procs

pytestmark = pytest.mark.integration

UPSTREAM_USER = "mirror"
Crane = Callable[..., subprocess.CompletedProcess[str]]
_SAMPLE_RE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`, scraped from `url` (Prometheus text
    format); 0 when there is none (a counter not incremented yet)."""
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310  # a loopback URL of ours
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        found = _SAMPLE_RE.match(line)
        if found is None or found.group(1) != name:
            continue
        have = dict(_LABEL_RE.findall(found.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(found.group(3))
    return total


@dataclasses.dataclass
class Upstream:
    process: procs.Process
    address: str
    tls: certs.ServerTLS
    data: Path
    log: Path
    password: str
    metrics_url: str

    def blob_gets(self) -> float:
        """Blob GETs the upstream answered 200, by its own metrics (every repository, every digest)."""
        name = "registry_http_requests_total"
        return metric(self.metrics_url, name, handler="blob", method="get", code="200")

    def blobs_in_flight(self) -> float:
        """Blob requests the upstream is serving right now (counted in blob_gets once they end)."""
        return metric(self.metrics_url, "registry_http_in_flight_requests", handler="blob")


def _crane(*, env: dict[str, str]) -> Crane:
    def run(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(support.tool("crane")), *args], input=stdin, env=env, capture_output=True, text=True,
            timeout=180, check=False,
        )  # fmt: skip
        if check:
            assert done.returncode == 0, f"crane {args[0]} exited {done.returncode}: {done.stderr}"
        return done

    return run


@contextlib.contextmanager
def _distribution(
    tmp: Path,
    *,
    auth: str,
    password: str,
    ready: Mapping[str, str],
    tls: certs.ServerTLS | None = None,
    port: procs.Port | None = None,
) -> Iterator[Upstream]:
    """Distribution with TLS (its own CA unless given) and the `auth:` section given; stopped by PID.
    On `port` when given (the caller's reservation, kept when it stops: to start another on it)."""
    tls = tls or certs.write_server_tls(directory=tmp / "tls", ips=["127.0.0.1"])
    owned = [] if port is not None else [procs.reserve_port()]
    port = port or owned[0]
    debug = procs.reserve_port()
    config = tmp / "config.yml"
    config.write_text(
        f"""\
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: {tmp / "data"}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port.number}
  secret: mirror-test-{os.urandom(8).hex()}
  tls:
    certificate: {tls.cert_file}
    key: {tls.key_file}
  debug:
    addr: 127.0.0.1:{debug.number}
    prometheus:
      enabled: true
      path: /metrics
auth:
{textwrap.indent(auth, "  ")}
"""
    )
    log = tmp / "distribution.log"
    process = procs.Process(
        name="distribution", argv=[str(support.tool("distribution")), "serve", str(config)], log=log,
        env={**os.environ, "OTEL_TRACES_EXPORTER": "none"}, ports=[*owned, debug],
    )  # fmt: skip
    try:
        procs.wait_http(
            f"https://127.0.0.1:{port.number}/v2/",
            watch=[process],
            timeout=60,
            context=ssl.create_default_context(cafile=str(tls.ca_file)),
            headers=ready,
        )
        metrics_url = f"http://127.0.0.1:{debug.number}/metrics"
        procs.wait_http(metrics_url, watch=[process], timeout=60)
        yield Upstream(process=process, address=f"127.0.0.1:{port.number}", tls=tls, data=tmp / "data",
                       log=log, password=password, metrics_url=metrics_url)  # fmt: skip
    finally:
        process.stop()


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Upstream]:
    """A fresh Distribution with htpasswd (Basic) auth per test (it starts in well under a second)."""
    tmp = tmp_path / "distribution"
    tmp.mkdir()
    password = harness.new_password()
    htpasswd = tmp / "htpasswd"
    subprocess.run(
        [harness.require_binary("htpasswd"), "-B", "-i", "-c", str(htpasswd), UPSTREAM_USER],
        input=password, text=True, check=True, capture_output=True,
    )  # fmt: skip
    auth = f"htpasswd:\n  realm: upstream\n  path: {htpasswd}"
    basic = harness.Credentials(username=UPSTREAM_USER, password=password).basic()
    with _distribution(tmp, auth=auth, password=password, ready={"Authorization": basic}) as up:
        yield up


@pytest.fixture
def upstream_crane(upstream: Upstream, tmp_path: Path) -> Crane:
    """crane logged in to the upstream (to put images there, and to read them for comparison)."""
    env = {**os.environ, "DOCKER_CONFIG": str(tmp_path / "upcfg"), "SSL_CERT_FILE": str(upstream.tls.ca_file)}
    run = _crane(env=env)
    run("auth", "login", upstream.address, "--username", UPSTREAM_USER, "--password-stdin",
        stdin=upstream.password)  # fmt: skip
    return run


@pytest.fixture
def mirror_metrics_port() -> procs.Port:
    """The port of the mirror's `--metrics-listen` (reserved until the mirror binds it)."""
    return procs.reserve_port()


@pytest.fixture
def mirror(upstream: Upstream, tmp_path: Path, mirror_metrics_port: procs.Port) -> Iterator[harness.Registry]:
    """Dockyard (plain HTTP, no auth: the mirror is what is under test) with two mirrors of the upstream:
    `hub` with the right password and TTL 0 (every tag re-checked), `bad` with a wrong one."""
    (tmp_path / "user").write_text(UPSTREAM_USER + "\n")
    (tmp_path / "pass").write_text(upstream.password + "\n")
    (tmp_path / "wrong").write_text("not-the-password\n")
    common = {"upstream": f"https://{upstream.address}", "caFile": str(upstream.tls.ca_file),
              "usernameFile": str(tmp_path / "user")}  # fmt: skip
    doc = {
        "mirrors": [
            {"prefix": "hub", **common, "passwordFile": str(tmp_path / "pass"), "tagTTL": 0},
            {"prefix": "bad", **common, "passwordFile": str(tmp_path / "wrong")},
        ]
    }
    (tmp_path / "mirrors.yaml").write_text(json.dumps(doc))  # JSON is YAML
    mirror_metrics_port.release()  # the registry binds it now
    with harness.running_registry(
        tmp=tmp_path / "dockyard",
        tls_args=("--no-tls",),
        extra_args=["--no-auth", "--mirrors", str(tmp_path / "mirrors.yaml"),
                    "--metrics-listen", f"127.0.0.1:{mirror_metrics_port.number}"],
    ) as reg:  # fmt: skip
        yield reg
    assert upstream.password not in reg.log()


@pytest.fixture
def crane(tmp_path: Path) -> Crane:
    """crane for Dockyard (plain HTTP: `--insecure`)."""
    return _crane(env={**os.environ, "DOCKER_CONFIG": str(tmp_path / "dockercfg")})


def _push(crane: Crane, *, img: images.Image, ref: str, tmp: Path) -> None:
    crane(
        "push", str(images.write_layout(directory=tmp / f"layout-{img.digest[7:19]}", tag="t", img=img)), ref
    )


def test_crane_pulls_through_byte_identical_sees_moved_tags_and_serves_the_cache_with_upstream_stopped(
    upstream: Upstream, upstream_crane: Crane, mirror: harness.Registry, crane: Crane, tmp_path: Path
) -> None:
    img = images.random_image(label="mirror-first", layer_count=2, layer_size=256 * 1024)
    _push(upstream_crane, img=img, ref=f"{upstream.address}/team/app:v1", tmp=tmp_path)
    through = f"{mirror.address}/hub/team/app:v1"

    # First pull fills the cache, byte-identical.
    assert crane("manifest", "--insecure", through).stdout.encode() == img.manifest.data
    crane("validate", "--insecure", "--remote", through)
    crane("pull", "--insecure", "--format", "oci", through, str(tmp_path / "pulled"))
    for blob in [*img.blobs(), img.manifest]:
        pulled = tmp_path / "pulled" / "blobs" / "sha256" / blob.digest.removeprefix("sha256:")
        assert pulled.read_bytes() == blob.data, blob.digest
    client = mirror.client(None)

    # The tag moves upstream: with TTL 0 the next pull sees it.
    moved = images.random_image(label="mirror-moved", layer_count=1, layer_size=64 * 1024)
    _push(upstream_crane, img=moved, ref=f"{upstream.address}/team/app:v1", tmp=tmp_path)
    seen = client.get_manifest("hub/team/app", "v1")
    assert (seen.status, seen.body, seen.header("Dockyard-Mirror")) == (200, moved.manifest.data, "fetched")
    crane("validate", "--insecure", "--remote", through)

    # Upstream stopped: the cached image is still pulled, the manifest marked stale.
    upstream.process.stop()
    stale = client.get_manifest("hub/team/app", "v1")
    assert (stale.status, stale.body, stale.header("Dockyard-Mirror")) == (200, moved.manifest.data, "stale")
    crane("validate", "--insecure", "--remote", through)
    old = client.get_manifest("hub/team/app", img.digest)  # by digest: cached, no upstream needed
    assert (old.status, old.body) == (200, img.manifest.data)
    missing = client.get_manifest("hub/team/other", "v1")
    assert missing.status == 502 and "unreachable" in missing.body.decode(), missing.describe()


def test_upstream_404_wrong_password_and_pushes_into_the_prefix(
    upstream: Upstream, upstream_crane: Crane, mirror: harness.Registry, crane: Crane, tmp_path: Path
) -> None:
    img = images.random_image(label="mirror-errors", layer_count=1, layer_size=32 * 1024)
    _push(upstream_crane, img=img, ref=f"{upstream.address}/team/app:v1", tmp=tmp_path)
    client = mirror.client(None)

    none = client.get_manifest("hub/team/absent", "v1")
    assert none.status == 404 and none.error_codes() == ["MANIFEST_UNKNOWN"], none.describe()
    none = client.get_blob("hub/team/app", "sha256:" + hashlib.sha256(b"absent").hexdigest())
    assert none.status == 404 and none.error_codes() == ["BLOB_UNKNOWN"], none.describe()

    refused = client.get_manifest("bad/team/app", "v1")
    assert refused.status == 502, refused.describe()
    assert (
        "refused the mirror's credentials" in refused.body.decode()
        and upstream.address in refused.body.decode()
    )
    assert upstream.password.encode() not in refused.body

    pushed = crane("push", "--insecure", str(tmp_path / f"layout-{img.digest[7:19]}"),
                   f"{mirror.address}/hub/team/app:mine", check=False)  # fmt: skip
    assert pushed.returncode != 0 and "DENIED" in pushed.stderr, pushed.stderr
    crane("push", "--insecure", str(tmp_path / f"layout-{img.digest[7:19]}"), f"{mirror.address}/own/app:v1")


def test_a_blob_corrupted_upstream_is_refused_and_not_stored(
    upstream: Upstream, upstream_crane: Crane, mirror: harness.Registry, tmp_path: Path
) -> None:
    img = images.random_image(label="mirror-corrupt", layer_count=1, layer_size=64 * 1024)
    _push(upstream_crane, img=img, ref=f"{upstream.address}/team/app:v1", tmp=tmp_path)
    layer = img.layers[0].blob
    hexdigest = layer.digest.removeprefix("sha256:")
    on_disk = upstream.data / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"
    on_disk.write_bytes(bytes(reversed(layer.data)))  # same length, other bytes: Distribution serves it
    client = mirror.client(None)

    assert client.get_manifest("hub/team/app", "v1").status == 200
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        client.get_blob("hub/team/app", layer.digest)  # the first client's body is cut short
    # A client that does not stream (a Range is served from storage) waits for the fetch: the error itself.
    refused = client.request("GET", f"/v2/hub/team/app/blobs/{layer.digest}", headers={"Range": "bytes=0-99"})
    assert refused.status == 502 and "nothing was stored" in refused.body.decode(), refused.describe()
    stored = mirror.data_dir / "blobs/sha256" / hexdigest[:2] / hexdigest / "data"
    assert not stored.exists()
    assert list((mirror.data_dir / "uploads").iterdir()) == []


def test_twenty_concurrent_pulls_of_one_uncached_blob_make_one_upstream_fetch(
    upstream: Upstream,
    upstream_crane: Crane,
    mirror: harness.Registry,
    mirror_metrics_port: procs.Port,
    tmp_path: Path,
) -> None:
    # Big enough that the upstream fetch cannot finish into socket buffers and the mirror's few queued
    # chunks while the first client reads nothing (that client's receive buffer is kept small below).
    img = images.random_image(label="mirror-coalesce", layer_count=1, layer_size=64 * 1024 * 1024)
    _push(upstream_crane, img=img, ref=f"{upstream.address}/team/big:v1", tmp=tmp_path)
    layer = img.layers[0].blob
    assert mirror.client(None).get_manifest("hub/team/big", "v1").status == 200
    path = f"/v2/hub/team/big/blobs/{layer.digest}"
    joined_url = f"http://127.0.0.1:{mirror_metrics_port.number}/metrics"
    before = upstream.blob_gets()

    def connect() -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(mirror.host, mirror.port, timeout=180)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # no autotuned megabytes
        sock.settimeout(180)
        sock.connect((mirror.host, mirror.port))
        conn.sock = sock
        return conn

    def drain(response: http.client.HTTPResponse, *, first: bytes = b"") -> tuple[int, str, int]:
        hasher, size = hashlib.sha256(first), len(first)
        while chunk := response.read(1 << 20):
            hasher.update(chunk)
            size += len(chunk)
        return response.status, "sha256:" + hasher.hexdigest(), size

    def pull(_: int) -> tuple[int, str, int]:
        conn = connect()
        try:
            conn.request("GET", path)
            return drain(conn.getresponse())
        finally:
            conn.close()

    # The first client starts the upstream fetch, reads a few bytes and stalls: the fetch goes at its pace,
    # so it stays running (the upstream serving the blob) while the other 19 arrive.
    first = connect()
    first.request("GET", path)
    leader = first.getresponse()
    assert leader.status == 200, leader.read(2000)
    head = leader.read(64 * 1024)
    assert upstream.blobs_in_flight() == 1
    with concurrent.futures.ThreadPoolExecutor(max_workers=19) as pool:
        others = [pool.submit(pull, i) for i in range(19)]
        deadline = time.monotonic() + 120
        while metric(joined_url, "dockyard_registry_mirror_coalesced_blob_requests_total", mirror="hub") < 19:
            serving = upstream.blobs_in_flight()  # 0: the fetch ended early; more: requests not coalesced
            assert serving == 1, f"the upstream serves {serving:g} blob requests, expected the first one only"
            assert time.monotonic() < deadline, "the other 19 requests did not join the running fetch"
            time.sleep(0.05)
        results = [drain(leader, first=head), *(f.result(timeout=180) for f in others)]
    first.close()

    assert results == [(200, layer.digest, len(layer.data))] * 20
    # Counted by Distribution once its handler returned: wait until nothing is in flight, then read.
    harness.wait_for("the upstream to finish its blob requests", lambda: upstream.blobs_in_flight() == 0)
    assert upstream.blob_gets() - before == 1


class TokenIssuer:
    """The token service a Distribution with `auth: token` sends clients to (Docker's token spec).

    Distribution is the real part: it issues the `Bearer realm=…,service=…,scope=…` challenge and
    verifies every token (signature through the `x5c` chain to its `rootcertbundle`, issuer, audience,
    expiry, granted actions). This issuer only checks Basic credentials and signs ES256 JWTs granting
    what the scope asks; it counts the tokens it issued.
    """

    ISSUER = "dockyard-test-issuer"
    SERVICE = "dockyard-test-upstream"

    def __init__(self, *, directory: Path, username: str, password: str, tls: certs.ServerTLS) -> None:
        now = datetime.datetime.now(datetime.UTC)
        signer = pki.new_ca(common_name="token signer", now=now, duration=datetime.timedelta(days=1))
        self.bundle = directory / "token-signer.crt"
        self.bundle.write_bytes(signer.cert_pem)
        self._key = serialization.load_pem_private_key(signer.key_pem, password=None)
        der = x509.load_pem_x509_certificate(signer.cert_pem).public_bytes(serialization.Encoding.DER)
        self._x5c = base64.b64encode(der).decode()
        self._basic = harness.Credentials(username=username, password=password).basic()
        self.issued = 0
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                if self.headers.get("Authorization") != issuer._basic:
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps({"token": issuer.token(query.get("scope", [])), "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls.cert_file, tls.key_file)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        # https, as clients require for the realm of a TLS registry (the same certificate as Distribution).
        self.realm = f"https://127.0.0.1:{self._server.server_address[1]}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def token(self, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {"iss": self.ISSUER, "sub": UPSTREAM_USER, "aud": self.SERVICE, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(), "access": access}  # fmt: skip
        header = {"alg": "ES256", "typ": "JWT", "x5c": [self._x5c]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        assert isinstance(self._key, ec.EllipticCurvePrivateKey)
        r, s = utils.decode_dss_signature(self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        self.issued += 1
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def auth_config(self) -> str:
        return (
            f"token:\n  realm: {self.realm}\n  service: {self.SERVICE}\n  issuer: {self.ISSUER}\n"
            f"  rootcertbundle: {self.bundle}"
        )

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
def token_upstream(tmp_path: Path) -> Iterator[tuple[Upstream, TokenIssuer]]:
    tmp = tmp_path / "distribution-token"
    tmp.mkdir()
    password = harness.new_password()
    tls = certs.write_server_tls(directory=tmp / "tls", ips=["127.0.0.1"])
    issuer = TokenIssuer(directory=tmp, username=UPSTREAM_USER, password=password, tls=tls)
    try:
        ready = {"Authorization": f"Bearer {issuer.token([])}"}
        with _distribution(tmp, auth=issuer.auth_config(), password=password, ready=ready, tls=tls) as up:
            yield up, issuer
    finally:
        issuer.close()


def test_the_bearer_token_flow_of_a_real_distribution(
    token_upstream: tuple[Upstream, TokenIssuer], crane: Crane, tmp_path: Path
) -> None:
    upstream, issuer = token_upstream
    img = images.random_image(label="mirror-token", layer_count=2, layer_size=128 * 1024)
    layout = images.write_layout(directory=tmp_path / "layout", tag="v1", img=img)
    # skopeo, not crane: crane refuses a token realm on a loopback address (its SSRF guard).
    certs_dir = harness.ca_dir(ca_file=upstream.tls.ca_file, into=tmp_path / "up-certs")
    subprocess.run(
        [harness.require_binary("skopeo"), "copy", "--dest-cert-dir", str(certs_dir),
         "--dest-creds", f"{UPSTREAM_USER}:{upstream.password}", f"oci:{layout}:v1",
         f"docker://{upstream.address}/team/app:v1"],
        check=True, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    (tmp_path / "user").write_text(UPSTREAM_USER)
    (tmp_path / "pass").write_text(upstream.password)
    (tmp_path / "wrong").write_text("wrong")
    common = {"upstream": f"https://{upstream.address}", "caFile": str(upstream.tls.ca_file),
              "usernameFile": str(tmp_path / "user")}  # fmt: skip
    doc = {"mirrors": [{"prefix": "hub", **common, "passwordFile": str(tmp_path / "pass")},
                       {"prefix": "bad", **common, "passwordFile": str(tmp_path / "wrong")}]}  # fmt: skip
    (tmp_path / "mirrors.yaml").write_text(json.dumps(doc))
    with harness.running_registry(
        tmp=tmp_path / "dockyard",
        tls_args=("--no-tls",),
        extra_args=["--no-auth", "--mirrors", str(tmp_path / "mirrors.yaml")],
    ) as mirror:
        before = issuer.issued
        through = f"{mirror.address}/hub/team/app:v1"
        crane("pull", "--insecure", "--format", "oci", through, str(tmp_path / "pulled"))
        for blob in [*img.blobs(), img.manifest]:
            pulled = tmp_path / "pulled" / "blobs" / "sha256" / blob.digest.removeprefix("sha256:")
            assert pulled.read_bytes() == blob.data, blob.digest
        # One token for the repository's pull scope, reused for the manifest and every blob.
        assert issuer.issued - before == 1

        refused = mirror.client(None).get_manifest("bad/team/app", "v1")
        assert refused.status == 502 and "token service" in refused.body.decode(), refused.describe()
    assert upstream.password not in mirror.log()
