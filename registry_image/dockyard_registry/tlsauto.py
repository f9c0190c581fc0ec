"""`serve --tls auto`: a self-signed CA and a server certificate under DATA/tls, created once and reused.

Owns: where the key and certificate files live (certificates are built by `dockyard_common.pki`, as the
operator builds its own), renewal of the server certificate (same CA) when it nears expiry,
the trust instructions printed for docker, containerd and podman/skopeo, and reloading a running
server's certificate when it is renewed or replaced (CertReloader), and the server SSLContext's protocol
and cipher policy (server_context). Must not: ever replace an
existing CA (clients have been told to trust it); a missing or unreadable CA key is an error to report.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import logging
import os
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

from dockyard_common import pki

CA_DAYS = 3650
SERVER_DAYS = 397  # the longest lifetime browsers and Apple platforms accept
RENEW_BEFORE = datetime.timedelta(days=30)
log = logging.getLogger(__name__)
# TLS 1.2 suites the server accepts: forward secret (ECDHE) and AEAD only (AES-GCM, ChaCha20-Poly1305), for
# ECDSA (our own keys) and RSA (a bring-your-own certificate) keys. No CBC suite: their MAC-then-encrypt
# construction is what Lucky13-style padding oracles attack. TLS 1.3 suites are all AEAD and are left at
# OpenSSL's defaults (set_ciphers does not touch them). Mozilla's "intermediate" profile, without DHE.
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path
    # A directory holding only ca.crt, for `--cert-dir` (containers/image treats a *.key there without a
    # matching *.cert as an error, so the server key must not sit next to it).
    trust_dir: Path

    @classmethod
    def under(cls, directory: Path) -> TlsFiles:
        return cls(
            directory / "ca.crt",
            directory / "ca.key",
            directory / "server.crt",
            directory / "server.key",
            directory / "trust",
        )


def default_names(extra: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) for the server certificate: loopback, this host's names, and `extra`."""
    dns = ["localhost"]
    ips = ["127.0.0.1", "::1"]
    for host in (socket.gethostname(), socket.getfqdn(), *extra):
        if not host or host in ("0.0.0.0", "::"):  # noqa: S104 - comparing, not binding
            continue
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if host not in dns:
                dns.append(host)
        else:
            if host not in ips:
                ips.append(host)
    return dns, ips


def ensure(
    directory: Path,
    *,
    dns_names: list[str],
    ip_addresses: list[str],
    now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
) -> TlsFiles:
    """Create the CA if absent; (re)issue the server certificate when missing, expiring or lacking a name."""
    files = TlsFiles.under(directory)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    if not files.ca_cert.exists():
        if files.ca_key.exists():
            raise RuntimeError(f"{files.ca_key} exists without {files.ca_cert}; refusing to replace the CA")
        _write_ca(files, now=now())
    ca = pki.KeyPair(files.ca_cert.read_bytes(), files.ca_key.read_bytes())
    try:
        usable = pki.inspect(ca.cert_pem).is_ca and pki.key_matches(cert_pem=ca.cert_pem, key_pem=ca.key_pem)
    except pki.PkiError as exc:
        raise RuntimeError(f"{files.ca_cert} / {files.ca_key}: {exc}; refusing to replace the CA") from None
    if not usable:
        raise RuntimeError(
            f"{files.ca_key} does not belong to CA {files.ca_cert}; refusing to replace the CA"
        )
    files.trust_dir.mkdir(exist_ok=True)
    trust_copy = files.trust_dir / "ca.crt"
    if not trust_copy.exists() or trust_copy.read_bytes() != ca.cert_pem:
        _atomic_write(trust_copy, ca.cert_pem, mode=0o644)
    if _needs_server_cert(
        files, ca_pem=ca.cert_pem, dns_names=dns_names, ip_addresses=ip_addresses, now=now()
    ):
        server = pki.issue_server_cert(
            ca=ca,
            common_name=dns_names[0],
            dns_names=dns_names,
            ip_addresses=ip_addresses,
            now=now(),
            duration=datetime.timedelta(days=SERVER_DAYS),
        )
        _atomic_write(files.key, server.key_pem, mode=0o600)
        _atomic_write(files.cert, server.cert_pem, mode=0o644)
    return files


def server_context() -> ssl.SSLContext:
    """A server SSLContext without a certificate: TLS 1.2 (ECDHE + AEAD suites only) and TLS 1.3."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    return context


def fingerprint(cert_path: Path) -> str:
    return pki.inspect(cert_path.read_bytes()).fingerprint_sha256


def _atomic_write(path: Path, data: bytes, *, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_ca(files: TlsFiles, *, now: datetime.datetime) -> None:
    ca = pki.new_ca(
        common_name=f"Dockyard registry CA ({socket.gethostname()})",
        now=now,
        duration=datetime.timedelta(days=CA_DAYS),
    )
    # Key first: a CA certificate without its key would block issuing forever.
    _atomic_write(files.ca_key, ca.key_pem, mode=0o600)
    _atomic_write(files.ca_cert, ca.cert_pem, mode=0o644)


def _needs_server_cert(
    files: TlsFiles, *, ca_pem: bytes, dns_names: list[str], ip_addresses: list[str], now: datetime.datetime
) -> bool:
    """Missing, unreadable, not this CA's, not matching its key, expiring, or lacking a wanted name."""
    if not files.cert.exists() or not files.key.exists():
        return True
    cert_pem = files.cert.read_bytes()
    try:
        info = pki.inspect(cert_pem)
        if not pki.signed_by(cert_pem=cert_pem, ca_pem=ca_pem):
            return True
        if not pki.key_matches(cert_pem=cert_pem, key_pem=files.key.read_bytes()):
            return True
    except pki.PkiError:
        return True
    if info.expires_within(RENEW_BEFORE, now=now):
        return True
    wanted_ips = {str(ipaddress.ip_address(i)) for i in ip_addresses}
    return not (set(dns_names) <= set(info.dns_names) and wanted_ips <= set(info.ip_addresses))


def trust_instructions(files: TlsFiles, *, host_port: str) -> str:
    """How to make docker, containerd and podman/skopeo trust the CA for `host_port`."""
    ca = files.ca_cert
    return "\n".join(
        [
            f"TLS: CA certificate {ca}",
            f"     SHA-256 fingerprint {fingerprint(ca)}",
            "Trust it with:",
            f"  docker:      sudo mkdir -p /etc/docker/certs.d/{host_port} && "
            f"sudo cp {ca} /etc/docker/certs.d/{host_port}/ca.crt",
            f"  containerd:  sudo mkdir -p /etc/containerd/certs.d/{host_port} && "
            f"sudo cp {ca} /etc/containerd/certs.d/{host_port}/ca.crt",
            f"               and write /etc/containerd/certs.d/{host_port}/hosts.toml:",
            f'                 server = "https://{host_port}"',
            f'                 [host."https://{host_port}"]',
            '                   capabilities = ["pull", "resolve", "push"]',
            '                   ca = "ca.crt"',
            f"  podman/skopeo: sudo mkdir -p /etc/containers/certs.d/{host_port} && "
            f"sudo cp {ca} /etc/containers/certs.d/{host_port}/ca.crt",
            f"               or pass --cert-dir {files.trust_dir} (skopeo: --src-cert-dir/--dest-cert-dir)",
        ]
    )


class CertReloader:
    """Keeps a live server SSLContext on the newest certificate files without a restart.

    New handshakes use whatever `load_cert_chain` loaded last, so renewing (here, via `ensure`) or
    replacing the files (cert-manager, a Secret update) takes effect without dropping connections.
    A half-written or mismatched pair is logged and the previous certificate stays in use.
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        *,
        cert: Path,
        key: Path,
        renew: Callable[[], object] | None = None,
    ) -> None:
        self._context, self._cert, self._key, self._renew = context, cert, key, renew
        self._signature = self._stat()

    def _stat(self) -> tuple[int, int, int, int] | None:
        try:
            c, k = self._cert.stat(), self._key.stat()
        except FileNotFoundError:
            return None
        return (c.st_mtime_ns, c.st_ino, k.st_mtime_ns, k.st_ino)

    def refresh(self) -> bool:
        """Renew if due, then reload when the files changed; True when a new certificate was loaded."""
        if self._renew is not None:
            try:
                self._renew()
            except (OSError, ValueError, RuntimeError) as exc:
                log.error("could not renew the server certificate: %s", exc)
        signature = self._stat()
        if signature is None or signature == self._signature:
            return False
        try:
            self._context.load_cert_chain(self._cert, self._key)
        except (OSError, ssl.SSLError) as exc:
            log.error("keeping the previous certificate, cannot load %s: %s", self._cert, exc)
            return False
        self._signature = signature
        log.info("loaded renewed server certificate %s", self._cert)
        return True
