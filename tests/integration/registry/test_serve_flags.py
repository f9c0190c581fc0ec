"""The `serve` switches the Kubernetes pod relies on, checked on a real process.

Covers:
- `--accel-redirect PREFIX`: an authorized blob GET answers with an empty body and
  `X-Accel-Redirect: PREFIX<path>`, where DATA/<path> is a file holding exactly the blob (what nginx's
  internal `alias` location will send), plus Docker-Content-Digest; an unauthorized GET gets no
  redirect (authorization happens first);
- `--no-delete`: manifest, tag and blob DELETE answer 405 with UNSUPPORTED and nothing is deleted;
- `--realm NAME`: the Basic challenge names that realm;
- `--no-tls`: plain HTTP, the way the registry listens behind the nginx sidecar;
- `--no-auth`: anyone may push and pull, and `/auth` allows everything;
- usage errors (`--tls` with a bogus value, `--tls-cert` without `--tls-key`, a bad `--listen`), a key
  that does not match the certificate, a file that is not PEM and an access.yaml that is not YAML
  exit 2 with a message on stderr (no traceback) and start nothing; a port already in use fails
  with a message.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.registry import certs, harness, images
from tests.support import procs

pytestmark = pytest.mark.integration

ADMIN = harness.Credentials("flags-admin", harness.new_password())
PREFIX = "/_dockyard_blobs/"


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Registry]:
    with harness.running_registry(
        tmp=tmp_path_factory.mktemp("flags"),
        users=[harness.User(ADMIN, access="admin")],
        extra_args=["--accel-redirect", PREFIX, "--no-delete", "--realm", "team-registry"],
    ) as r:
        yield r


@pytest.fixture(scope="module")
def pushed(reg: harness.Registry) -> images.Image:
    admin = reg.client(ADMIN)
    img = images.random_image(label="flags", layer_count=1)
    for blob in img.blobs():
        admin.push_blob("flags/app", blob.data)
    admin.push_manifest("flags/app", "v1", img.manifest.data)
    return img


def test_accel_redirect_points_nginx_at_the_blob_file_after_authorization(
    reg: harness.Registry, pushed: images.Image
) -> None:
    layer = pushed.layers[0].blob

    resp = reg.client(ADMIN).get_blob("flags/app", layer.digest)
    anonymous = reg.client(None).get_blob("flags/app", layer.digest)

    assert resp.status == 200 and resp.body == b"", resp.describe()
    target = resp.header("X-Accel-Redirect")
    assert target is not None and target.startswith(PREFIX), resp.describe()
    assert (reg.data_dir / target.removeprefix(PREFIX)).read_bytes() == layer.data
    assert resp.header("Docker-Content-Digest") == layer.digest
    assert anonymous.status == 401 and anonymous.header("X-Accel-Redirect") is None


def test_no_delete_refuses_every_delete_with_unsupported(reg: harness.Registry, pushed: images.Image) -> None:
    admin = reg.client(ADMIN)

    for path in (
        f"/v2/flags/app/manifests/{pushed.digest}",
        "/v2/flags/app/manifests/v1",
        f"/v2/flags/app/blobs/{pushed.layers[0].blob.digest}",
    ):
        resp = admin.request("DELETE", path)
        assert resp.status == 405 and resp.error_codes() == ["UNSUPPORTED"], f"{path}: {resp.describe()}"
    assert admin.get_manifest("flags/app", "v1").status == 200


def test_realm_flag_names_the_basic_challenge(reg: harness.Registry) -> None:
    resp = reg.client(None).request("GET", "/v2/")

    assert resp.status == 401
    assert resp.header("WWW-Authenticate") == 'Basic realm="team-registry"'


def test_no_tls_serves_plain_http(tmp_path: Path) -> None:
    with harness.running_registry(
        tmp=tmp_path, users=[harness.User(ADMIN, access="admin")], tls_args=["--no-tls"]
    ) as plain:
        assert plain.ca_file is None
        resp = plain.client(ADMIN).request("GET", "/v2/")

    assert resp.status == 200, resp.describe()
    assert resp.header("Docker-Distribution-Api-Version") == "registry/2.0"


def test_no_auth_lets_anyone_push_and_pull_and_auth_allows_everything(tmp_path: Path) -> None:
    with harness.running_registry(tmp=tmp_path, extra_args=["--no-auth"]) as open_reg:
        anonymous = open_reg.client(None)
        digest = anonymous.push_blob("open/anything", b"pushed without credentials")
        fetched = anonymous.get_blob("open/anything", digest)
        auth = anonymous.request(
            "GET",
            "/auth",
            headers={"X-Original-URI": f"/v2/open/anything/blobs/{digest}", "X-Original-Method": "DELETE"},
        )

    assert fetched.status == 200 and fetched.body == b"pushed without credentials"
    assert auth.status == 200, auth.describe()


@pytest.mark.parametrize(
    "args",
    [
        ["--tls", "bogus"],
        ["--tls-cert", "/nonexistent/cert.pem"],
        ["--listen", "not-a-host-port"],
    ],
)
def test_serve_usage_errors_exit_2_with_a_message(tmp_path: Path, args: list[str]) -> None:
    port = procs.reserve_port()  # held: should serve start by mistake, it binds ours, not someone's
    done = harness.run_cli(
        "serve",
        "--data-dir",
        str(tmp_path),
        "--listen",
        f"127.0.0.1:{port.number}",
        *args,
        timeout=60,
    )
    port.release()

    assert done.returncode == 2, f"exit {done.returncode}: {done.stderr}"
    assert done.stderr.strip(), "no message on stderr"


def test_serve_refuses_bad_tls_material_and_a_broken_access_file_with_exit_2(tmp_path: Path) -> None:
    one = certs.write_server_tls(directory=tmp_path / "one", ips=["127.0.0.1"])
    other = certs.write_server_tls(directory=tmp_path / "other", ips=["127.0.0.1"])
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    broken = tmp_path / "access.yaml"
    broken.write_text("users: [unclosed\n")
    port = procs.reserve_port()
    listen = ["--listen", f"127.0.0.1:{port.number}"]

    for what, args in {
        "a key that is not the certificate's": [
            "--tls-cert",
            str(one.cert_file),
            "--tls-key",
            str(other.key_file),
        ],
        "a file that is not PEM": ["--tls-cert", str(garbage), "--tls-key", str(garbage)],
        "an access.yaml that is not YAML": ["--no-tls", "--access", str(broken)],
    }.items():
        done = harness.run_cli("serve", "--data-dir", str(tmp_path / "data"), *listen, *args, timeout=60)
        assert done.returncode == 2, f"{what}: exit {done.returncode}: {done.stderr}"
        assert "error" in done.stderr and "Traceback" not in done.stderr, f"{what}: {done.stderr}"


def test_serve_on_a_port_already_in_use_fails_with_a_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = harness.run_cli(
            "serve",
            "--data-dir",
            str(tmp_path),
            "--listen",
            f"127.0.0.1:{port}",
            "--no-tls",
            "--no-auth",
            timeout=60,
        )

    assert done.returncode != 0
    assert "in use" in done.stderr and "Traceback" not in done.stderr, done.stderr
