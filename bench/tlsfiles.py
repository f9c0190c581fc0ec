"""The throwaway CA and 127.0.0.1 server certificate that every nginx of the run serves with.

Owns: writing `ca.crt`, `server.crt`, `server.key` (P-256, valid one day) and a `certs/` directory holding
only `ca.crt`, the form skopeo's `--cert-dir` wants.
Must not: be reused outside one benchmark run (the key is written unencrypted to a temp dir).
"""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

from dockyard_common import pki

_VALID = datetime.timedelta(days=1)


@dataclasses.dataclass(frozen=True)
class ServerTLS:
    ca_file: Path
    cert_file: Path
    key_file: Path
    cert_dir: Path  # holds only ca.crt: for skopeo --src-cert-dir/--dest-cert-dir


def write(*, directory: Path, ip: str = "127.0.0.1") -> ServerTLS:
    """The same kind of CA and serving certificate the operator issues, for `ip`."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca = pki.new_ca(common_name="dockyard bench CA", now=now, duration=_VALID)
    server = pki.issue_server_cert(
        ca=ca, common_name=ip, dns_names=[], ip_addresses=[ip], now=now, duration=_VALID
    )
    (directory / "ca.crt").write_bytes(ca.cert_pem)
    (directory / "server.crt").write_bytes(server.cert_pem)
    (directory / "server.key").write_bytes(server.key_pem)
    (directory / "server.key").chmod(0o600)
    cert_dir = directory / "certs"
    cert_dir.mkdir(exist_ok=True)
    (cert_dir / "ca.crt").write_bytes(ca.cert_pem)
    return ServerTLS(
        ca_file=directory / "ca.crt",
        cert_file=directory / "server.crt",
        key_file=directory / "server.key",
        cert_dir=cert_dir,
    )
