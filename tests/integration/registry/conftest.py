"""Session fixtures for the real-client tests: one standalone registry with TLS `auto` and basic auth.

The session registry is what every client test that does not need a registry of its own talks to:
`dockyard-registry serve --tls auto --data-dir <tmp> --listen 127.0.0.1:<reserved port>`, with one user
created by `dockyard-registry user add admin --access admin --password-stdin`. It is stopped by PID
at the end of the session (SIGTERM, then SIGKILL). Each test module uses its own repository names,
so the modules do not depend on each other's content. Tests that kill, reconfigure or
garbage-collect a registry start their own with `harness.running_registry`.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.registry import harness
from tests.support import s3server


@pytest.fixture(scope="session")
def admin() -> harness.Credentials:
    """The session registry's user: `admin` (pull, push, delete) on every repository."""
    return harness.Credentials(username="admin", password=harness.new_password())


@pytest.fixture(scope="session")
def registry(
    tmp_path_factory: pytest.TempPathFactory, admin: harness.Credentials
) -> Iterator[harness.Registry]:
    tmp = tmp_path_factory.mktemp("session-registry")
    # `--access admin`: without an access.yaml entry a user only gets `push`, and the conformance
    # suite and `skopeo delete` need delete.
    # `--access-log`: every request of every client is logged, so the check below covers them all.
    with harness.running_registry(
        tmp=tmp, users=[harness.User(admin, access="admin")], extra_args=["--access-log"]
    ) as reg:
        yield reg
    # Whatever the tests did (wrong passwords included), no credential may reach the log.
    log = reg.log()
    assert admin.password not in log, "the registry logged a password"
    assert admin.basic().removeprefix("Basic ") not in log, "the registry logged an Authorization header"


@pytest.fixture(scope="session")
def client(registry: harness.Registry, admin: harness.Credentials) -> harness.Client:
    """HTTPS client for the session registry, authenticated as `admin`, verifying the generated CA."""
    return registry.client(admin)


@pytest.fixture(scope="session")
def cert_dir(registry: harness.Registry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with only the session registry's CA as `ca.crt` (skopeo/podman `--cert-dir`)."""
    return harness.ca_dir(ca_file=registry.ca, into=tmp_path_factory.mktemp("certs"))


@pytest.fixture
def podman() -> Iterator[harness.Podman]:
    """podman with all its state (images, run dir, tmp, events) in a fresh temp dir, removed afterwards.

    Not under pytest's tmp_path: podman refuses a runroot longer than 50 characters. Skips (with
    podman's own error) only when podman cannot run on this machine at all.
    """
    state = Path(tempfile.mkdtemp(prefix="dockyard-podman-"))
    base = [
        harness.require_binary("podman"),
        "--root", str(state / "root"),
        "--runroot", str(state / "run"),
        "--tmpdir", str(state / "tmp"),
        "--storage-driver", "vfs",
        "--events-backend", "file",
        "--cgroup-manager", "cgroupfs",
    ]  # fmt: skip

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*base, *args], capture_output=True, text=True, timeout=240, check=False)
        if check:
            assert done.returncode == 0, f"podman {args[0]} exited {done.returncode}: {done.stderr}"
        return done

    try:
        probe = run("images", "--quiet", check=False)
        if probe.returncode != 0:
            pytest.skip(f"podman cannot run on this machine (not a registry problem): {probe.stderr.strip()}")
        yield run
    finally:
        # vfs layers are plain directories owned by us; podman's own `system reset` would also work
        # but needs the same flags and asks for confirmation.
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def s3_env(s3_server: s3server.S3Server) -> Iterator[None]:
    """The S3 credentials every registry process and CLI run of a module inherits."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", s3server.ACCESS_KEY)
        env.setenv("AWS_SECRET_ACCESS_KEY", s3server.SECRET_KEY)
        yield
