"""A throwaway CA and server certificate for registries the tests start with `--tls-cert/--tls-key`.

Owns: generating (with the operator's `crypto`) a CA and a serving certificate for given IP addresses, and
finding this machine's non-loopback IPv4 address.

Must not: be used where `--tls auto` serves the purpose; it exists for the one client (the Docker CLI)
that only verifies TLS for addresses outside 127.0.0.0/8 (it treats loopback registries as insecure
and then skips verification), so that registry must listen on, and be certified for, another address.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import socket
from collections.abc import Sequence
from pathlib import Path

from dockyard_common import pki

_VALID = datetime.timedelta(days=1)


@dataclasses.dataclass(frozen=True)
class ServerTLS:
    ca_file: Path
    cert_file: Path
    key_file: Path


def write_server_tls(*, directory: Path, ips: Sequence[str]) -> ServerTLS:
    """A CA (ca.crt) and a server certificate (server.crt/server.key) valid for `ips`, for one day."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca = pki.new_ca(common_name="dockyard test CA", now=now, duration=_VALID)
    server = pki.issue_server_cert(
        ca=ca, common_name=ips[0], dns_names=[], ip_addresses=ips, now=now, duration=_VALID
    )
    tls = ServerTLS(
        ca_file=directory / "ca.crt", cert_file=directory / "server.crt", key_file=directory / "server.key"
    )
    tls.ca_file.write_bytes(ca.cert_pem)
    tls.cert_file.write_bytes(server.cert_pem)
    tls.key_file.write_bytes(server.key_pem)
    tls.key_file.chmod(0o600)
    return tls


def non_loopback_ipv4() -> str | None:
    """This machine's outbound IPv4 address, or None when it has only loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            # connect() on UDP sends nothing; it only asks the kernel which source address it would use.
            s.connect(("192.0.2.254", 9))
            addr = str(s.getsockname()[0])
        except OSError:
            return None
    return None if ipaddress.ip_address(addr).is_loopback else addr
