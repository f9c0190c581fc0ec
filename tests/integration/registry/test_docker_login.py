"""The Docker CLI logs in to the registry without a Docker engine (it falls back to a client-side login).

Covers:
- `docker login --password-stdin` with the right password exits 0 and stores the credentials in the
  temporary DOCKER_CONFIG;
- a wrong password exits non-zero with an "unauthorized" message, and nothing is stored;
- TLS really is verified: without the CA in `certs.d` the same login fails with an unknown-authority
  error;
- neither password ever appears in the registry's log.

Why this registry is not the session one: the Docker CLI treats every registry in 127.0.0.0/8 as an
"insecure registry" and then skips certificate verification altogether. So this registry listens
on the machine's non-loopback address with a certificate for that address (`--tls-cert/--tls-key`),
and the CA goes where Docker looks for it, `/etc/docker/certs.d/<ip>:<port>/ca.crt`. The CLI cannot
be pointed at another certs.d, so the fixture creates exactly that directory and removes it (and any
parent it had to create) in teardown.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.registry import certs, harness
from tests.integration.registry.clients import CERTS_D, docker_cli, docker_login, docker_trusts

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def docker_registry(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[harness.Registry, harness.Credentials]]:
    docker_cli()
    address = certs.non_loopback_ipv4()
    if address is None:
        pytest.skip("no non-loopback IPv4 address: the Docker CLI never verifies TLS on loopback")
    tmp = tmp_path_factory.mktemp("docker-registry")
    tls = certs.write_server_tls(directory=tmp / "tls-files", ips=[address])
    creds = harness.Credentials(username="docker-user", password=harness.new_password())
    with harness.running_registry(
        tmp=tmp,
        users=[harness.User(creds)],
        host=address,
        tls_args=("--tls-cert", str(tls.cert_file), "--tls-key", str(tls.key_file)),
        ca_file=tls.ca_file,
    ) as reg:
        yield reg, creds


@pytest.fixture
def trusted(docker_registry: tuple[harness.Registry, harness.Credentials]) -> Iterator[Path]:
    reg, _ = docker_registry
    with docker_trusts(address=reg.address, ca=reg.ca) as host_dir:
        yield host_dir


def test_docker_login_with_the_right_password_succeeds_and_stores_credentials(
    docker_registry: tuple[harness.Registry, harness.Credentials], trusted: Path, tmp_path: Path
) -> None:
    reg, creds = docker_registry

    done = docker_login(reg=reg, username=creds.username, password=creds.password, config=tmp_path)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Login Succeeded" in done.stdout
    assert reg.address in json.loads((tmp_path / "config.json").read_text())["auths"]


def test_docker_login_with_a_wrong_password_fails_as_unauthorized(
    docker_registry: tuple[harness.Registry, harness.Credentials], trusted: Path, tmp_path: Path
) -> None:
    reg, creds = docker_registry
    wrong = harness.new_password()

    done = docker_login(reg=reg, username=creds.username, password=wrong, config=tmp_path)

    assert done.returncode != 0
    assert "unauthorized" in (done.stdout + done.stderr).lower(), done.stdout + done.stderr
    stored = tmp_path / "config.json"
    assert not stored.exists() or reg.address not in json.loads(stored.read_text()).get("auths", {})
    assert wrong not in reg.log() and creds.password not in reg.log()


def test_docker_login_fails_when_the_registry_ca_is_not_trusted(
    docker_registry: tuple[harness.Registry, harness.Credentials], tmp_path: Path
) -> None:
    reg, creds = docker_registry
    assert not (CERTS_D / reg.address).exists()

    done = docker_login(reg=reg, username=creds.username, password=creds.password, config=tmp_path)

    assert done.returncode != 0
    assert "x509" in done.stderr and "unknown authority" in done.stderr, done.stderr
