"""The pod's real topology: nginx (config rendered by the operator) in front of the real registry.

What the Kubernetes pod runs, minus Kubernetes: Debian's nginx with the nginx.conf the operator's
`nginx_configmap` builder renders (TLS on its port, `auth_request` to the registry's `/auth`, blob
bytes served from the data dir after the registry answers with X-Accel-Redirect), and
`dockyard-registry serve --no-tls --htpasswd … --access … --accel-redirect /_dockyard_blobs/ --realm …`
on a loopback port, exactly the pod's arguments. Clients talk to nginx only, verifying its
certificate against a test CA.

Covers:
- the OCI conformance suite, every API, through nginx (uploads streamed, blob GETs and ranges served
  by nginx from disk, referrers, deletes);
- skopeo push and pull of a multi-layer image through nginx with identical digests, and a blob GET
  whose bytes (served by nginx, not the registry) and Docker-Content-Digest are right;
- an unauthenticated request gets one Basic challenge naming the registry's realm; a pull-only user
  can pull but skopeo's push is denied;
- a 96 MiB blob PUT through nginx in one request (no 413, no size limit) and read back byte-exact;
- upload bodies take the operator's volume path (issue 15): nginx writes each body to a file in the body
  directory on the data volume and the registry (`--body-file-dir`) renames it into the upload, so a pushed
  blob is the very file nginx wrote (one link, nothing left in the body directory); a client's own
  `X-Dockyard-Body-File` naming a file of the registry's never reaches the registry (the push stores the
  client's bytes, that file is untouched); a client gone mid-body leaves no body file and the upload
  unchanged;
- podman pulls through nginx (unpacking every layer nginx served from disk), pushes a copy and
  pulls that back with the same image ID;
- `docker login` through nginx (on this machine's non-loopback address, CA in certs.d) succeeds with
  the right password and is refused as unauthorized with a wrong one;
- six first-time logins, each from its own loopback address, all succeed at their first try while one
  address floods `GET /v2/` with wrong passwords for a real user over 200 connections; the flooder gets
  429 TOOMANYREQUESTS (its password checks over its budget in the registry, which nginx passes on as 429,
  or nginx's own per-address limits), never a 5xx;
- while the registry process is down, nginx answers a retryable 502/503/504 with an OCI error body,
  and recovers when the registry is back (last in the module: it restarts the shared registry).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import json
import os
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from dockyard_registry import bodyfile, paths
from dockyard_registry import digest as digests
from tests.integration.registry import certs, fronts, harness, images
from tests.integration.registry.clients import docker_login, docker_trusts, skopeo, skopeo_pull, skopeo_push
from tests.integration.registry.conformance import assert_conformance_passes
from tests.integration.registry.fronts import Front

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
ADMIN = harness.Credentials("pod-admin", harness.new_password())
PULLER = harness.Credentials("pod-reader", harness.new_password())
REALM = "pod-registry"


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    tmp = tmp_path_factory.mktemp("pod")
    data = tmp / "data"
    data.mkdir()
    harness.add_user(data_dir=data, name=ADMIN.username, password=ADMIN.password, access="admin")
    harness.add_user(data_dir=data, name=PULLER.username, password=PULLER.password, access="pull")
    reg = harness.make_registry(
        data_dir=data,
        log_file=tmp / "registry.log",
        tls_args=["--no-tls"],
        extra_args=[
            "--htpasswd", str(data / "auth" / "htpasswd"),
            "--access", str(data / "auth" / "access.yaml"),
            "--accel-redirect", "/_dockyard_blobs/",
            "--body-file-dir", str(data / bodyfile.DIR_NAME),
            "--realm", REALM,
        ],
    )  # fmt: skip
    # Also certified for this machine's non-loopback address: the Docker CLI verifies TLS only there.
    lan = certs.non_loopback_ipv4()
    reg.start()
    try:
        with fronts.nginx_in_front(
            tmp=tmp, registry=reg, data_dir=data, ips=["127.0.0.1", *([lan] if lan else [])], body_files=True
        ) as result:
            yield result
    finally:
        reg.stop()


def test_conformance_suite_passes_through_nginx(front: Front, tmp_path: Path) -> None:
    assert_conformance_passes(
        address=front.address, ca=front.ca, creds=ADMIN, workdir=tmp_path, server_log=front.logs
    )


def test_skopeo_round_trip_through_nginx_with_blobs_served_from_disk(front: Front, tmp_path: Path) -> None:
    cert_dir = harness.ca_dir(ca_file=front.ca, into=tmp_path / "certs")
    img = images.random_image(label="behind-nginx", layer_count=3, layer_size=1024 * 1024)
    ref = f"{front.address}/pod/app:v1"

    skopeo_push(img=img, ref=ref, tmp=tmp_path, cert_dir=cert_dir, creds=ADMIN)
    back = skopeo_pull(ref=ref, into=tmp_path / "back", cert_dir=cert_dir, creds=PULLER)
    layer = img.layers[1].blob
    blob = front.client(PULLER).get_blob("pod/app", layer.digest)

    assert back.manifest_digest == img.digest
    assert back.layer_digests == [lay.blob.digest for lay in img.layers]
    assert blob.status == 200 and blob.body == layer.data, blob.describe()
    assert blob.header("Docker-Content-Digest") == layer.digest
    assert blob.header("X-Accel-Redirect") is None, "the internal redirect leaked to the client"


def test_through_nginx_anonymous_is_challenged_once_and_a_reader_cannot_push(
    front: Front, tmp_path: Path
) -> None:
    anonymous = front.client(None).request("GET", "/v2/")
    cert_dir = harness.ca_dir(ca_file=front.ca, into=tmp_path / "certs")
    img = images.random_image(label="behind-nginx-denied", layer_count=1)
    layout = images.write_layout(directory=tmp_path / "src", tag="src", img=img)

    denied = skopeo(
        "copy", "--quiet", f"oci:{layout}:src", f"docker://{front.address}/pod/denied:v1",
        "--dest-cert-dir", str(cert_dir), "--dest-creds", PULLER.colon(), check=False,
    )  # fmt: skip

    assert anonymous.status == 401, anonymous.describe()
    assert anonymous.headers.get_all("WWW-Authenticate") == [f'Basic realm="{REALM}"']
    assert denied.returncode != 0 and "denied" in denied.stderr.lower(), denied.stderr


def test_docker_login_through_nginx_succeeds_with_the_right_password_only(
    front: Front, tmp_path: Path
) -> None:
    """The classic failure behind a proxy: docker login needs nginx's own 401 to carry the challenge."""
    lan = certs.non_loopback_ipv4()
    if lan is None:
        pytest.skip("no non-loopback IPv4 address: the Docker CLI never verifies TLS on loopback")
    address = f"{lan}:{front.port}"
    with docker_trusts(address=address, ca=front.ca):
        right = docker_login(
            address=address, username=ADMIN.username, password=ADMIN.password, config=tmp_path / "a"
        )
        wrong = docker_login(
            address=address, username=ADMIN.username, password=harness.new_password(), config=tmp_path / "b"
        )

    assert right.returncode == 0 and "Login Succeeded" in right.stdout, right.stdout + right.stderr
    assert wrong.returncode != 0 and "unauthorized" in (wrong.stdout + wrong.stderr).lower(), wrong.stderr


def test_podman_pulls_through_nginx_and_pushes_back(
    front: Front, podman: harness.Podman, tmp_path: Path
) -> None:
    cert_dir = harness.ca_dir(ca_file=front.ca, into=tmp_path / "certs")
    img = images.random_image(label="podman-behind-nginx", layer_count=2, layer_size=256 * 1024)
    skopeo_push(img=img, ref=f"{front.address}/pod/podman:v1", tmp=tmp_path, cert_dir=cert_dir, creds=ADMIN)
    tls = ["--cert-dir", str(cert_dir), "--creds", ADMIN.colon()]

    podman("pull", "--quiet", *tls, f"{front.address}/pod/podman:v1")
    podman(
        "push",
        "--quiet",
        *tls,
        f"{front.address}/pod/podman:v1",
        f"docker://{front.address}/pod/podman-copy:v1",
    )
    podman("rmi", "--all", "--force")
    podman("pull", "--quiet", *tls, f"{front.address}/pod/podman-copy:v1")
    image_id = podman("image", "inspect", "--format", "{{.Id}}", f"{front.address}/pod/podman-copy:v1").stdout

    assert f"sha256:{image_id.strip()}" == img.config.digest


def test_a_big_blob_streams_through_nginx_both_ways(front: Front) -> None:
    """No 413 and no size limit (client_max_body_size 0, request buffering off), sendfile on the way back."""
    client = front.client(ADMIN)
    size, seed = 96 * MIB, os.urandom(MIB)

    def chunks() -> Iterator[bytes]:
        for i in range(size // MIB):
            yield i.to_bytes(8, "big") + seed[8:]

    hasher = hashlib.sha256()
    for chunk in chunks():
        hasher.update(chunk)
    digest = f"sha256:{hasher.hexdigest()}"

    started = client.request("POST", "/v2/pod/big/blobs/uploads/")
    assert started.status == 202, started.describe()
    location = harness.upload_path(started)
    sep = "&" if "?" in location else "?"
    done = client.upload_stream(
        "PUT",
        f"{location}{sep}digest={digest}",
        chunks=chunks(),
        length=size,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert done.status == 201, done.describe()
    resp, got_digest, got_size = client.download_digest(f"/v2/pod/big/blobs/{digest}")

    assert resp.status == 200 and got_size == size and got_digest == digest, resp.describe()
    # The blob is the file nginx wrote, renamed into place (one link), and no body file was left behind.
    assert (front.data / paths.blob_data(digests.parse(digest))).stat().st_nlink == 1
    assert list((front.data / bodyfile.DIR_NAME).iterdir()) == []


def test_a_client_cannot_name_a_body_file_through_nginx(front: Front) -> None:
    """The forged header names a file of the registry's own (its htpasswd): nginx replaces the header with
    its own body file, so the push stores exactly what the client sent and the file is untouched."""
    client = front.client(ADMIN)
    target = front.data / "auth" / "htpasswd"
    before = target.read_bytes()
    sent = os.urandom(100_000)
    forged = {bodyfile.HEADER: str(target), "Content-Type": "application/octet-stream"}
    pretend = f"sha256:{hashlib.sha256(before).hexdigest()}"

    as_htpasswd = client.request("POST", f"/v2/pod/forged/blobs/uploads/?digest={pretend}", body=sent,
                                 headers=forged)  # fmt: skip
    honest = client.request("POST", f"/v2/pod/forged/blobs/uploads/?digest={harness_digest(sent)}", body=sent,
                            headers=forged)  # fmt: skip

    assert as_htpasswd.status == 400 and b"DIGEST_INVALID" in as_htpasswd.body, as_htpasswd.describe()
    assert honest.status == 201, honest.describe()
    assert client.request("GET", f"/v2/pod/forged/blobs/{harness_digest(sent)}").body == sent
    assert client.request("HEAD", f"/v2/pod/forged/blobs/{pretend}").status == 404
    assert target.read_bytes() == before
    assert list((front.data / bodyfile.DIR_NAME).iterdir()) == []


def test_a_client_gone_mid_body_leaves_no_body_file_and_the_upload_unchanged(front: Front) -> None:
    """nginx proxies only complete bodies: a half-sent PATCH never reaches the registry and nginx removes
    its file; the upload is where it was and takes the chunk again."""
    client = front.client(ADMIN)
    started = client.request("POST", "/v2/pod/gone/blobs/uploads/")
    location = harness.upload_path(started)
    data = os.urandom(2 * MIB)
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data)),
               "Content-Range": f"0-{len(data) - 1}"}  # fmt: skip

    with client.partial_request("PATCH", location, headers=headers, body_prefix=data[: MIB // 2]):
        pass  # the client goes away with three quarters of the body unsent

    def cleaned() -> bool:
        return list((front.data / bodyfile.DIR_NAME).iterdir()) == []

    for _ in range(600):  # nginx notices the closed connection and removes its file
        if cleaned():
            break
        time.sleep(0.05)
    status = client.request("GET", location)
    again = client.request("PATCH", location, body=data, headers=headers)
    sep = "&" if "?" in location else "?"
    done = client.request("PUT", f"{harness.upload_path(again)}{sep}digest={harness_digest(data)}")

    assert cleaned()
    assert status.status == 204 and status.headers.get("Range") == "0-0", status.describe()
    assert again.status == 202, again.describe()
    assert done.status == 201, done.describe()


def harness_digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


FLOOD_CONNECTIONS = 200


async def _flood_and_log_in(
    front: Front, logins: dict[str, str]
) -> tuple[list[int], collections.Counter[str]]:
    """Statuses of each login's credentialed GET /v2/, and the flood's outcomes ("429 TOOMANYREQUESTS")."""
    url = f"https://{front.address}/v2/"
    context = ssl.create_default_context(cafile=str(front.ca))
    outcomes: collections.Counter[str] = collections.Counter()
    stop = asyncio.Event()

    def basic(user: str, password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    async def describe(resp: aiohttp.ClientResponse) -> str:
        body = await resp.read()
        codes = [e["code"] for e in json.loads(body)["errors"]] if resp.status >= 400 else []
        return " ".join([str(resp.status), *codes])

    async def flood(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            async with session.get(url, headers=basic(ADMIN.username, f"guess-{os.urandom(6).hex()}")) as r:
                outcomes[await describe(r)] += 1

    async def login(address: str, user: str, password: str) -> int:
        connector = aiohttp.TCPConnector(local_addr=(address, 0), ssl=context)
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.get(url) as challenge:
                assert challenge.status == 401
            async with session.get(url, headers=basic(user, password)) as resp:
                return resp.status

    flooder = aiohttp.TCPConnector(limit=FLOOD_CONNECTIONS, local_addr=("127.0.0.1", 0), ssl=context)
    async with aiohttp.ClientSession(connector=flooder) as session:
        flooding = [asyncio.ensure_future(flood(session)) for _ in range(FLOOD_CONNECTIONS)]
        try:
            for _ in range(3000):  # until the flood is over its budget, whatever this machine's speed
                if outcomes["429 TOOMANYREQUESTS"] or any(f.done() for f in flooding):
                    break
                await asyncio.sleep(0.01)
            statuses = await asyncio.gather(
                *(login(f"127.0.0.{i + 2}", u, p) for i, (u, p) in enumerate(logins.items()))
            )
        finally:
            stop.set()
            await asyncio.gather(*flooding)
    return list(statuses), outcomes


def test_six_first_logins_through_nginx_succeed_while_one_address_floods_wrong_passwords(
    front: Front,
) -> None:
    logins = {f"first-login-{i}": harness.new_password() for i in range(7)}
    for user, password in logins.items():
        harness.add_user(data_dir=front.registry.data_dir, name=user, password=password, access="pull")
    canary = harness.Credentials("first-login-6", logins.pop("first-login-6"))
    harness.wait_for(
        "the registry to read the new users",
        lambda: front.client(canary).request("GET", "/v2/").status == 200,
    )

    statuses, flood = asyncio.run(_flood_and_log_in(front, logins))

    assert statuses == [200] * 6, (statuses, flood, front.logs())
    assert flood["429 TOOMANYREQUESTS"] > 0, flood
    assert set(flood) <= {"429 TOOMANYREQUESTS", "401 UNAUTHORIZED"}, flood
    assert all(password not in front.registry.log() for password in logins.values())


def test_while_the_registry_restarts_nginx_answers_a_retryable_oci_error_then_recovers(front: Front) -> None:
    """The registry container can restart (crash, OOM, liveness probe) while nginx keeps serving.

    Clients must then see a retryable status (the spec: retry on 502/503/504, other 5xx are terminal)
    with an OCI error body, not nginx's HTML 500 page; and everything works again once it is back.
    """
    front.registry.stop()
    try:
        answers = [
            front.client(ADMIN).request("GET", "/v2/"),
            front.client(None).request("GET", "/v2/pod/app/manifests/v1"),
            front.client(ADMIN).request("GET", f"/v2/pod/app/blobs/sha256:{'a' * 64}"),
        ]
    finally:
        front.registry.start()

    for resp in answers:
        assert resp.status in (502, 503, 504), resp.describe()
        assert resp.header("Content-Type") == "application/json" and resp.error_codes(), resp.describe()
    assert front.client(ADMIN).request("GET", "/v2/").status == 200
