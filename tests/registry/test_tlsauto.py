"""`--tls auto` material: created once, reused, renewed near expiry with the same CA, never replaced.

Covers: CA and server certificate files and modes; SANs (localhost, loopback IPs, extra names); the server
certificate verifies against the CA; a second run reuses both byte-for-byte; a certificate close to
expiry (or missing a requested name, signed by another CA, or not matching its key) is re-issued by the
same CA; a CA key without its certificate, or one that does not belong to it, is refused and kept; the
trust directory holds only the CA; printed instructions and fingerprint; a running server reloads a renewed
certificate and keeps the old one when the new pair is broken; the server context (real handshakes)
refuses TLS 1.2 CBC suites and speaks TLS 1.2 with ECDHE + AES-GCM or ChaCha20-Poly1305, and TLS 1.3.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from dockyard_common import pki
from dockyard_registry import tlsauto

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def make(
    directory: Path, *, now: datetime.datetime = NOW, dns: tuple[str, ...] = ("localhost",)
) -> tlsauto.TlsFiles:
    return tlsauto.ensure(directory, dns_names=list(dns), ip_addresses=["127.0.0.1", "::1"], now=lambda: now)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_creates_a_ca_and_a_server_certificate_it_signed(tmp_path: Path) -> None:
    files = make(tmp_path / "tls", dns=("localhost", "registry.example"))
    ca, cert = load(files.ca_cert), load(files.cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.issuer == ca.subject
    pub = ca.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "registry.example"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    assert files.key.stat().st_mode & 0o777 == 0o600
    assert files.ca_key.stat().st_mode & 0o777 == 0o600


def test_second_run_reuses_everything(tmp_path: Path) -> None:
    first = make(tmp_path)
    before = {p: p.read_bytes() for p in (first.ca_cert, first.ca_key, first.cert, first.key)}
    make(tmp_path, now=NOW + datetime.timedelta(days=10))
    assert {p: p.read_bytes() for p in before} == before


def test_server_certificate_near_expiry_is_renewed_by_the_same_ca(tmp_path: Path) -> None:
    files = make(tmp_path)
    ca_before, cert_before = files.ca_cert.read_bytes(), files.cert.read_bytes()
    later = NOW + datetime.timedelta(days=tlsauto.SERVER_DAYS - 10)
    make(tmp_path, now=later)
    assert files.ca_cert.read_bytes() == ca_before
    assert files.cert.read_bytes() != cert_before
    renewed = load(files.cert)
    renewed.verify_directly_issued_by(load(files.ca_cert))
    assert renewed.not_valid_after_utc > later + datetime.timedelta(days=300)


def test_a_new_name_reissues_the_server_certificate(tmp_path: Path) -> None:
    files = make(tmp_path)
    make(tmp_path, dns=("localhost", "new.example"))
    san = load(files.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "new.example" in san.get_values_for_type(x509.DNSName)


def test_ca_key_without_ca_certificate_is_refused(tmp_path: Path) -> None:
    files = make(tmp_path)
    files.ca_cert.unlink()
    with pytest.raises(RuntimeError, match="refusing to replace the CA"):
        make(tmp_path)


def test_a_ca_key_that_does_not_belong_to_the_ca_is_refused_and_kept(tmp_path: Path) -> None:
    files = make(tmp_path)
    stranger = pki.new_ca(common_name="stranger", now=NOW, duration=datetime.timedelta(days=1))
    files.ca_key.write_bytes(stranger.key_pem)
    ca_before = files.ca_cert.read_bytes()
    with pytest.raises(RuntimeError, match="refusing to replace the CA"):
        make(tmp_path)
    assert files.ca_cert.read_bytes() == ca_before and files.ca_key.read_bytes() == stranger.key_pem


def test_a_server_certificate_from_another_ca_or_with_another_key_is_reissued(tmp_path: Path) -> None:
    files = make(tmp_path)
    other = pki.new_ca(common_name="other", now=NOW, duration=datetime.timedelta(days=3650))
    foreign = pki.issue_server_cert(
        ca=other,
        common_name="localhost",
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1", "::1"],
        now=NOW,
        duration=datetime.timedelta(days=300),
    )
    files.cert.write_bytes(foreign.cert_pem)
    files.key.write_bytes(foreign.key_pem)
    make(tmp_path)
    assert pki.signed_by(cert_pem=files.cert.read_bytes(), ca_pem=files.ca_cert.read_bytes())
    own_cert = files.cert.read_bytes()
    files.key.write_bytes(foreign.key_pem)
    make(tmp_path)
    assert files.cert.read_bytes() != own_cert
    assert pki.key_matches(cert_pem=files.cert.read_bytes(), key_pem=files.key.read_bytes())


def test_trust_directory_holds_only_the_ca(tmp_path: Path) -> None:
    files = make(tmp_path)
    assert sorted(p.name for p in files.trust_dir.iterdir()) == ["ca.crt"]
    assert (files.trust_dir / "ca.crt").read_bytes() == files.ca_cert.read_bytes()


def test_instructions_name_the_ca_fingerprint_and_every_client(tmp_path: Path) -> None:
    files = make(tmp_path)
    text = tlsauto.trust_instructions(files, host_port="localhost:5443")
    assert tlsauto.fingerprint(files.ca_cert) in text
    assert len(tlsauto.fingerprint(files.ca_cert).split(":")) == 32
    for needle in (
        "/etc/docker/certs.d/localhost:5443/ca.crt",
        "/etc/containerd/certs.d/localhost:5443/hosts.toml",
        "/etc/containers/certs.d/localhost:5443/ca.crt",
        f"--cert-dir {files.trust_dir}",
    ):
        assert needle in text


def test_default_names_include_loopback_and_extra_addresses() -> None:
    dns, ips = tlsauto.default_names(("10.1.2.3", "reg.local", "0.0.0.0"))  # noqa: S104 - a name, not a bind
    assert "localhost" in dns and "reg.local" in dns
    assert {"127.0.0.1", "::1", "10.1.2.3"} <= set(ips)
    assert "0.0.0.0" not in ips  # noqa: S104


def server_context(files: tlsauto.TlsFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.cert, files.key)
    return context


def test_reloader_loads_a_renewed_certificate_once(tmp_path: Path) -> None:
    files = make(tmp_path)
    later = NOW + datetime.timedelta(days=tlsauto.SERVER_DAYS - 10)
    reloader = tlsauto.CertReloader(
        server_context(files), cert=files.cert, key=files.key, renew=lambda: make(tmp_path, now=later)
    )
    before = files.cert.read_bytes()
    assert reloader.refresh() is True
    assert files.cert.read_bytes() != before
    assert reloader.refresh() is False, "nothing changed since the last load"


def test_reloader_keeps_the_previous_certificate_when_the_new_pair_is_broken(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = make(tmp_path)
    reloader = tlsauto.CertReloader(server_context(files), cert=files.cert, key=files.key)
    files.key.write_text("not a key")
    assert reloader.refresh() is False
    assert "keeping the previous certificate" in caplog.text


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> tuple[str, str]:
    """A real TLS handshake in memory; (protocol, cipher) the two sides agreed on."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(to_client, to_server, server_hostname="localhost")
    server_side = server.wrap_bio(to_server, to_client, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for side, conn in (("client", client_side), ("server", server_side)):
            if done[side]:
                continue
            try:
                conn.do_handshake()
                done[side] = True
            except ssl.SSLWantReadError:
                pass
        if all(done.values()):
            cipher = client_side.cipher()
            assert cipher is not None
            return cipher[1], cipher[0]
    raise AssertionError("handshake did not finish")


@pytest.fixture
def tls_server(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    files = make(tmp_path, now=datetime.datetime.now(datetime.UTC))
    context = tlsauto.server_context()
    context.load_cert_chain(files.cert, files.key)
    return context, files.ca_cert


def tls12_client(ca: Path, ciphers: str) -> ssl.SSLContext:
    client = ssl.create_default_context(cafile=ca)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.set_ciphers(ciphers)
    return client


@pytest.mark.parametrize("cipher", ["ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA384"])
def test_server_context_refuses_tls12_cbc_suites(
    tls_server: tuple[ssl.SSLContext, Path], cipher: str
) -> None:
    server, ca = tls_server
    with pytest.raises(ssl.SSLError, match=r"NO_SHARED_CIPHER|HANDSHAKE_FAILURE"):
        handshake(server, tls12_client(ca, cipher))


@pytest.mark.parametrize(
    "cipher",
    ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305"],
)
def test_server_context_speaks_tls12_with_ecdhe_aead_suites(
    tls_server: tuple[ssl.SSLContext, Path], cipher: str
) -> None:
    server, ca = tls_server
    assert handshake(server, tls12_client(ca, cipher)) == ("TLSv1.2", cipher)


def test_server_context_still_speaks_tls13(tls_server: tuple[ssl.SSLContext, Path]) -> None:
    server, ca = tls_server
    assert handshake(server, ssl.create_default_context(cafile=ca))[0] == "TLSv1.3"
