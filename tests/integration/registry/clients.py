"""The real client command lines the tests share: skopeo, oras and the Docker CLI.

Owns: running skopeo (push an in-Python image layout, pull into a fresh layout), oras (with its own
auth file, never ~/.docker) and the Docker CLI (login without an engine, with the CA placed where Docker
looks for it). Must not: turn off TLS
verification or touch any Docker/containers configuration outside what a test creates and removes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import support
from tests.integration.registry import harness, images

DOCKER = Path("/usr/local/bin/docker")
CERTS_D = Path("/etc/docker/certs.d")


def skopeo(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run skopeo; unless `check` is False, fail with its stderr when it does not exit 0."""
    done = subprocess.run(
        [harness.require_binary("skopeo"), "--command-timeout", "120s", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if check:
        assert done.returncode == 0, f"skopeo {' '.join(args[:2])} exited {done.returncode}: {done.stderr}"
    return done


def skopeo_push(
    *, img: images.Image, ref: str, tmp: Path, cert_dir: Path, creds: harness.Credentials
) -> None:
    """Write `img` as an OCI layout under `tmp` and `skopeo copy` it to `ref`."""
    layout = images.write_layout(directory=tmp / f"src-{img.digest[7:19]}", tag="src", img=img)
    skopeo(
        "copy",
        "--quiet",
        f"oci:{layout}:src",
        f"docker://{ref}",
        "--dest-cert-dir",
        str(cert_dir),
        "--dest-creds",
        creds.colon(),
    )


def skopeo_pull(*, ref: str, into: Path, cert_dir: Path, creds: harness.Credentials) -> images.LayoutContents:
    """`skopeo copy` `ref` into a fresh OCI layout at `into` and read back what arrived (blobs checked)."""
    skopeo(
        "copy",
        "--quiet",
        f"docker://{ref}",
        f"oci:{into}:pulled",
        "--src-cert-dir",
        str(cert_dir),
        "--src-creds",
        creds.colon(),
    )
    return images.read_layout(directory=into, tag="pulled")


def oras(*args: str, registry: harness.Registry, creds: harness.Credentials, cwd: Path) -> str:
    """Run oras against `registry` as `creds` (password on stdin, auth file in `cwd`); its stdout."""
    argv = [
        str(support.tool("oras")), *args, "--ca-file", str(registry.ca), "--username", creds.username,
        "--password-stdin", "--registry-config", str(cwd / "oras-auth.json"),
        *([] if args[0] == "login" else ["--no-tty"]),  # login has no progress output to disable
    ]  # fmt: skip
    done = subprocess.run(
        argv, input=creds.password, capture_output=True, text=True, timeout=180, cwd=cwd, check=False
    )
    assert done.returncode == 0, f"oras {args[0]} exited {done.returncode}: {done.stderr}"
    return done.stdout


@contextlib.contextmanager
def docker_trusts(*, address: str, ca: Path) -> Iterator[Path]:
    """`/etc/docker/certs.d/<address>/ca.crt` for one registry only; everything created is removed."""
    created = [p for p in (CERTS_D.parent, CERTS_D) if not p.exists()]
    host_dir = CERTS_D / address
    try:
        host_dir.mkdir(parents=True)
    except PermissionError:
        pytest.skip(f"writing {CERTS_D} (where the Docker CLI looks for CAs) needs root")
    shutil.copyfile(ca, host_dir / "ca.crt")
    try:
        yield host_dir
    finally:
        shutil.rmtree(host_dir)
        for path in reversed(created):
            # Another test run may have put its own registry's directory here meanwhile: leave it.
            with contextlib.suppress(OSError):
                path.rmdir()


def docker_cli() -> str:
    """The Docker CLI, or a skip: `make setup` does not install it."""
    found = str(DOCKER) if DOCKER.is_file() else shutil.which("docker")
    if found is None:
        pytest.skip("the Docker CLI is not installed (make setup does not provide it)")
    return found


def docker_login(
    *,
    reg: harness.Registry | None = None,
    address: str | None = None,
    username: str,
    password: str,
    config: Path,
) -> subprocess.CompletedProcess[str]:
    target = address if address is not None else reg.address if reg is not None else None
    assert target is not None, "docker_login needs a registry or an address"
    env = {**os.environ, "DOCKER_CONFIG": str(config), "DOCKER_HOST": f"unix://{config}/no-engine.sock"}
    return subprocess.run(
        [docker_cli(), "login", "--username", username, "--password-stdin", target],
        input=password,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
