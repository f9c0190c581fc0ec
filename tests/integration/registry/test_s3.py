"""`dockyard-registry serve --storage-driver s3` on a real S3-compatible server (gofakes3).

Covers:
- the OCI conformance suite against a registry on S3 (TLS auto and auth files in a local --data-dir,
  content in the bucket; redirects off, as the suite checks our headers on the final blob response);
- a skopeo push and pull round trip with identical digests (pulls follow presigned 307s); crane push
  (streamed PATCHes), `validate --remote` (every layer downloaded and checked) and copy (a mount);
- a blob GET is a 307 to a presigned URL that serves the blob; with --no-s3-redirect the registry
  streams it (a second process without any local directory: --no-tls, --no-auth);
- an upload whose PATCHes go to two registry processes on the same bucket completes, and both serve it;
- `gc --storage-driver s3` removes an unreferenced blob and keeps a tagged image; `fsck` is clean after;
- a registry SIGKILLed mid-chunk and restarted resumes the upload from the last whole chunk, and the blob
  (hashed once committed, since the running hash died with the process) is intact.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_registry import gc as gc_module
from tests import support
from tests.integration.registry import harness, images, replicas
from tests.integration.registry.clients import skopeo_pull, skopeo_push
from tests.integration.registry.conformance import assert_conformance_passes
from tests.support import procs, s3server

pytestmark = pytest.mark.integration

PREFIX = "registry"


def _s3_flags(server: s3server.S3Server, *extra: str, prefix: str = PREFIX) -> list[str]:
    return [
        "--storage-driver", "s3", "--s3-endpoint", server.endpoint, "--s3-bucket", server.bucket,
        "--s3-prefix", prefix, *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def admin() -> harness.Credentials:
    return harness.Credentials(username="admin", password=harness.new_password())


@pytest.fixture(scope="module")
def s3_registry(
    s3_server: s3server.S3Server,
    s3_env: None,
    admin: harness.Credentials,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[harness.Registry]:
    """TLS auto and the auth files under a local --data-dir; every blob and manifest in the bucket."""
    with harness.running_registry(
        tmp=tmp_path_factory.mktemp("s3-registry"),
        users=[harness.User(admin, access="admin")],
        extra_args=_s3_flags(s3_server),
    ) as reg:
        yield reg


@pytest.fixture(scope="module")
def plain_replica(
    s3_server: s3server.S3Server, s3_env: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[harness.Registry]:
    """A second process on the same bucket and prefix, with no local directory at all."""
    reg = replicas.start_replica(
        tmp_path_factory.mktemp("s3-replica"), _s3_flags(s3_server, "--no-s3-redirect")
    )
    try:
        yield reg
    finally:
        reg.stop()


def test_conformance_suite_passes_on_s3(
    s3_server: s3server.S3Server, s3_env: None, admin: harness.Credentials, tmp_path: Path
) -> None:
    # Redirects off: the suite checks our Docker-Content-Digest header on the final blob response, and a
    # presigned URL's response is the bucket's (clients follow it; skopeo does below).
    with harness.running_registry(
        tmp=tmp_path / "registry",
        users=[harness.User(admin, access="admin")],
        extra_args=_s3_flags(s3_server, "--no-s3-redirect", prefix="conformance"),
    ) as reg:
        assert_conformance_passes(
            address=reg.address, ca=reg.ca, creds=admin, workdir=tmp_path, server_log=reg.log_tail
        )


def test_skopeo_round_trip_on_s3_keeps_every_digest(
    s3_registry: harness.Registry, admin: harness.Credentials, tmp_path: Path
) -> None:
    cert_dir = harness.ca_dir(ca_file=s3_registry.ca, into=tmp_path / "certs")
    img = images.random_image(label="s3-roundtrip", layer_count=3, layer_size=6 * 1024 * 1024)
    ref = f"{s3_registry.address}/s3/roundtrip:v1"

    skopeo_push(img=img, ref=ref, tmp=tmp_path, cert_dir=cert_dir, creds=admin)
    back = skopeo_pull(ref=ref, into=tmp_path / "back", cert_dir=cert_dir, creds=admin)

    assert back.manifest_digest == img.digest
    assert back.config_digest == img.config.digest
    assert back.layer_digests == [layer.blob.digest for layer in img.layers]


def test_blob_get_redirects_to_a_presigned_url_or_streams_when_redirects_are_off(
    s3_registry: harness.Registry, plain_replica: harness.Registry, admin: harness.Credentials
) -> None:
    data = os.urandom(200_000)
    dgst = s3_registry.client(admin).push_blob("s3/redirect", data)

    redirected = s3_registry.client(admin).get_blob("s3/redirect", dgst)
    assert redirected.status == 307, redirected.describe()
    location = redirected.header("Location")
    assert location is not None and "X-Amz-Signature" in location
    with urllib.request.urlopen(location, timeout=30) as resp:  # noqa: S310 (http URL we presigned)
        assert resp.read() == data

    streamed = plain_replica.client(None).get_blob("s3/redirect", dgst)
    assert streamed.status == 200 and streamed.body == data, streamed.describe()


def test_an_upload_whose_patches_go_to_two_processes_completes(
    s3_registry: harness.Registry, plain_replica: harness.Registry, admin: harness.Credentials
) -> None:
    one, two = s3_registry.client(admin), plain_replica.client(None)
    data = os.urandom(7 * 1024 * 1024)  # more than one S3 part
    pieces = [data[: 3 << 20], data[3 << 20 : 5 << 20], data[5 << 20 :]]
    start = one.request("POST", "/v2/s3/replicas/blobs/uploads/")
    assert start.status == 202, start.describe()
    location = harness.upload_path(start)
    offset = 0
    for client, piece in zip((one, two, one), pieces, strict=True):
        resp = client.request(
            "PATCH",
            location,
            body=piece,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + len(piece) - 1}",
                "Content-Length": str(len(piece)),
            },
        )
        assert resp.status == 202, resp.describe()
        offset += len(piece)
        location = harness.upload_path(resp)
    dgst = harness.sha256(data)
    sep = "&" if "?" in location else "?"
    done = two.request("PUT", f"{location}{sep}digest={dgst}", headers={"Content-Length": "0"})
    assert done.status == 201, done.describe()

    for client in (one, two):
        head = client.request("HEAD", f"/v2/s3/replicas/blobs/{dgst}")
        assert head.status == 200 and head.header("Content-Length") == str(len(data)), head.describe()
    _resp, got, size = two.download_digest(f"/v2/s3/replicas/blobs/{dgst}")
    assert (got, size) == (dgst, len(data))


def test_gc_on_s3_removes_an_unreferenced_blob_and_fsck_is_clean(
    s3_server: s3server.S3Server, s3_registry: harness.Registry, admin: harness.Credentials
) -> None:
    client = s3_registry.client(admin)
    img = images.random_image(label="s3-gc", layer_count=1)
    for blob in img.blobs():
        client.push_blob("s3/gc", blob.data)
    client.push_manifest("s3/gc", "kept", img.manifest.data)
    orphan = client.push_blob("s3/gc", os.urandom(4096))
    # `--grace 0` collects only what is older than the run's start less `CUTOFF_MARGIN`: a gc process that
    # starts within that margin of the push rightly keeps the orphan.
    time.sleep(gc_module.CUTOFF_MARGIN + 0.5)

    gc = harness.run_cli("gc", *_s3_flags(s3_server), "--grace", "0")
    assert gc.returncode == 0, gc.stderr
    assert f"deleted blob {orphan}" in gc.stdout
    assert client.get_blob("s3/gc", orphan).status == 404
    assert client.get_manifest("s3/gc", "kept").status == 200
    for blob in img.blobs():
        assert client.request("HEAD", f"/v2/s3/gc/blobs/{blob.digest}").status == 200

    fsck = harness.run_cli("fsck", *_s3_flags(s3_server))
    assert fsck.returncode == 0 and "ok: no problems found" in fsck.stdout, fsck.stdout + fsck.stderr


def test_sigkill_mid_chunk_on_s3_then_restart_resumes_the_upload_from_the_last_whole_chunk(
    s3_registry: harness.Registry, plain_replica: harness.Registry, admin: harness.Credentials
) -> None:
    client = s3_registry.client(admin)
    mib = 1024 * 1024
    blob = os.urandom(3 * mib)
    dgst = harness.sha256(blob)
    started = client.request("POST", "/v2/s3/crash/blobs/uploads/")
    assert started.status == 202, started.describe()
    first = client.request(
        "PATCH",
        harness.upload_path(started),
        body=blob[:mib],
        headers={"Content-Type": "application/octet-stream", "Content-Range": f"0-{mib - 1}"},
    )
    assert first.status == 202, first.describe()
    location = harness.upload_path(first)
    with client.partial_request(
        "PATCH",
        location,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{mib}-{2 * mib - 1}",
            "Content-Length": str(mib),
        },
        body_prefix=blob[mib : mib + mib // 4],
    ):
        s3_registry.kill()
    s3_registry.start()

    status = client.request("GET", location)
    # What an interrupted chunk wrote never counts on S3: the upload ends where the last whole chunk did.
    assert status.status == 204 and status.header("Range") == f"0-{mib - 1}", status.describe()
    rest = client.request(
        "PATCH",
        location,
        body=blob[mib:],
        headers={"Content-Type": "application/octet-stream", "Content-Range": f"{mib}-{len(blob) - 1}"},
    )
    assert rest.status == 202, rest.describe()
    location = harness.upload_path(rest)
    sep = "&" if "?" in location else "?"
    done = client.request("PUT", f"{location}{sep}digest={dgst}", headers={"Content-Length": "0"})
    assert done.status == 201, done.describe()
    _resp, got, size = plain_replica.client(None).download_digest(f"/v2/s3/crash/blobs/{dgst}")
    assert (got, size) == (dgst, len(blob))


def test_crane_push_validate_and_copy_on_s3(
    s3_registry: harness.Registry, admin: harness.Credentials, tmp_path: Path
) -> None:
    env = {**os.environ, "DOCKER_CONFIG": str(tmp_path / "docker"), "SSL_CERT_FILE": str(s3_registry.ca)}

    def crane(*args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [str(support.tool("crane")), *args],
            input=stdin,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, f"crane {args[0]} exited {done.returncode}: {done.stderr}"
        return done.stdout.strip()

    login = ("auth", "login", s3_registry.address, "--username", admin.username, "--password-stdin")
    crane(*login, stdin=admin.password)
    img = images.random_image(label="s3-crane", layer_count=2, layer_size=6 * 1024 * 1024)
    layout = images.write_layout(directory=tmp_path / "layout", tag="v1", img=img)
    src, dst = f"{s3_registry.address}/s3/crane-src:v1", f"{s3_registry.address}/s3/crane-dst:v1"

    crane("push", str(layout), src)  # streamed PATCHes without Content-Range
    assert crane("digest", src) == img.digest
    crane("validate", "--remote", src)  # every layer downloaded (following presigned redirects), checked
    crane("copy", src, dst)  # a cross-repository mount
    assert crane("digest", dst) == img.digest


def test_the_operators_arguments_for_an_s3_spec_start_a_registry_that_serves(
    s3_server: s3server.S3Server, s3_env: None, admin: harness.Credentials, tmp_path: Path
) -> None:
    """The operator/registry contract on S3: `deployment.registry_args` of a spec with `storage.s3`, the
    pod's file paths pointed at local copies, start a registry that takes a push and serves it back."""
    from dockyard_operator import names
    from dockyard_operator.builders import deployment, maintenance_configmap, nginx_configmap
    from tests.operator.test_builders import make_inputs

    s3 = {
        "endpoint": s3_server.endpoint,
        "bucket": s3_server.bucket,
        "prefix": "from-operator",
        "credentialsSecret": {"name": "bucket"},
        "redirect": False,
    }
    spec = {"storage": {"s3": s3}, "maintenance": {"retention": [{"repositories": ["*"], "keepLast": 3}]}}
    built = make_inputs(spec)
    state = tmp_path / "state"
    harness.add_user(data_dir=state, name=admin.username, password=admin.password, access="admin")
    retention = tmp_path / "retention.json"
    retention.write_text(maintenance_configmap.build(built)["data"][maintenance_configmap.RETENTION_KEY])
    port, metrics_port = procs.reserve_port(), procs.reserve_port()
    local = {
        nginx_configmap.UPSTREAM: f"127.0.0.1:{port.number}",
        f"0.0.0.0:{names.METRICS_PORT}": f"127.0.0.1:{metrics_port.number}",
        f"{deployment.AUTH_DIR}/htpasswd": str(state / "auth" / "htpasswd"),
        f"{deployment.AUTH_DIR}/access.yaml": str(state / "auth" / "access.yaml"),
        maintenance_configmap.RETENTION_PATH: str(retention),
    }
    args = [local.get(arg, arg) for arg in deployment.registry_args(built)]
    assert not [a for a in args if a.startswith("/etc/") or a.startswith("/var/")], args  # all mapped
    assert "--data-dir" not in args and "--accel-redirect" not in args
    reg = harness.Registry(
        data_dir=tmp_path,
        host="127.0.0.1",
        port=port.number,
        ca_file=None,
        log_file=tmp_path / "registry.log",
        argv=[str(harness.registry_bin()), *args],
        reserved=port,
    )
    reg.start()
    try:
        client = reg.client(admin)
        data = os.urandom(300 * 1024)
        dgst = client.push_blob("team/app", data)
        got = client.get_blob("team/app", dgst)
        assert got.status == 200 and got.body == data, got.describe()
        s3_flags = _s3_flags(s3_server, prefix="from-operator")
        checked = harness.run_cli("fsck", *s3_flags)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    finally:
        reg.stop()
        metrics_port.release()
