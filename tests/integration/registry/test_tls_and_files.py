"""What `--tls auto` and `user add` leave on disk, seen from clients and from the file system.

Covers:
- the generated CA survives a restart unchanged, so clients that trusted it keep working (a CA that
  is silently regenerated breaks every node that trusted the old one);
- the generated server certificate verifies for both `127.0.0.1` and `localhost`;
- private keys under DATA/tls and the htpasswd file are readable by their owner only;
- `user add` refuses an empty or over-long (> 72 bytes, bcrypt's limit) password with exit 2 and a
  message, and a refused add leaves the existing htpasswd exactly as it was.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.registry import harness

pytestmark = pytest.mark.integration

ADMIN = harness.Credentials("tls-admin", harness.new_password())


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[harness.Registry]:
    with harness.running_registry(tmp=tmp_path / "reg", users=[harness.User(ADMIN, access="admin")]) as r:
        yield r


def test_the_generated_ca_survives_a_restart_so_clients_keep_trusting_it(
    reg: harness.Registry, tmp_path: Path
) -> None:
    trusted = tmp_path / "ca-trusted-before-restart.crt"
    shutil.copyfile(reg.ca, trusted)

    reg.restart()
    client = harness.Client(host=reg.host, port=reg.port, ca_file=trusted, credentials=ADMIN)

    assert reg.ca.read_bytes() == trusted.read_bytes()
    assert client.request("GET", "/v2/").status == 200


def test_the_generated_certificate_is_valid_for_localhost_and_127_0_0_1(reg: harness.Registry) -> None:
    for host in ("127.0.0.1", "localhost"):
        client = harness.Client(host=host, port=reg.port, ca_file=reg.ca, credentials=ADMIN)
        assert client.request("GET", "/v2/").status == 200, host


def test_private_keys_and_htpasswd_are_readable_by_their_owner_only(reg: harness.Registry) -> None:
    secrets = [*sorted((reg.data_dir / "tls").rglob("*.key")), reg.data_dir / "auth" / "htpasswd"]

    assert len(secrets) >= 3, secrets  # the CA key, the server key, htpasswd
    for path in secrets:
        mode = path.stat().st_mode & 0o777
        assert mode & 0o077 == 0, f"{path} is mode {mode:o}"


@pytest.mark.parametrize(("password", "why"), [("", "empty"), ("x" * 73, "72 bytes")])
def test_user_add_refuses_a_bad_password_and_leaves_htpasswd_untouched(
    tmp_path: Path, password: str, why: str
) -> None:
    harness.add_user(data_dir=tmp_path, name="existing", password=harness.new_password())
    htpasswd = tmp_path / "auth" / "htpasswd"
    before = htpasswd.read_bytes()

    done = subprocess.run(
        [
            str(harness.registry_bin()),
            "user",
            "add",
            "newcomer",
            "--data-dir",
            str(tmp_path),
            "--password-stdin",
        ],
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2, f"{why}: exit {done.returncode}: {done.stderr}"
    assert done.stderr.strip(), why
    assert htpasswd.read_bytes() == before
