"""Certificates: a CA, a serving certificate signed by it, and what a PEM certificate says.

Owns: generating and inspecting PEM material with `cryptography`, for the operator's SelfSigned mode and the
registry's `serve --tls auto` alike. Keys are ECDSA P-256 unless a key factory says otherwise; a serving
certificate never outlives its CA. The clock (`now`) and the randomness (key factory, serial numbers) are
parameters, so renewal windows and reuse decisions are testable without waiting or mocking.
Must not: decide *when* to renew or whether a CA may be replaced (the callers' policies), read or write files,
or log. Exceptions raised here never contain key material.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
from collections.abc import Callable, Iterable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Backdate certificates a little so a node whose clock lags slightly still accepts a fresh certificate.
_BACKDATE = datetime.timedelta(minutes=5)

KeyFactory = Callable[[], CertificateIssuerPrivateKeyTypes]
SerialFactory = Callable[[], int]


class PkiError(ValueError):
    """PEM material is missing, unparseable or inconsistent (the message never includes the material)."""


def default_key() -> CertificateIssuerPrivateKeyTypes:
    """A fresh ECDSA P-256 key: small, fast, and accepted by every OCI client."""
    return ec.generate_private_key(ec.SECP256R1())


@dataclasses.dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its PEM private key."""

    cert_pem: bytes
    key_pem: bytes


@dataclasses.dataclass(frozen=True)
class Constraints:
    """Permitted name constraints of a CA: DNS subtrees (`example.com` covers itself and every name below
    it) and IP addresses or networks (`127.0.0.1` is one address, `10.0.0.0/8` a network)."""

    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class CertInfo:
    """What the operator and the registry need to know about a certificate."""

    subject: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    fingerprint_sha256: str
    is_ca: bool
    permitted: Constraints | None = None
    """The CA's permitted name constraints; None when it has none (it may then issue for any name)."""

    def expires_within(self, window: datetime.timedelta, *, now: datetime.datetime) -> bool:
        """Whether the certificate is expired at `now + window` (renewal is due)."""
        return self.not_after - window <= now


def _key_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_cert(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise PkiError("not a PEM certificate") from None


def _load_key(pem: bytes) -> CertificateIssuerPrivateKeyTypes:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise PkiError("not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PkiError("unsupported private key type (use RSA or ECDSA)")
    return key


def new_ca(
    *,
    common_name: str,
    now: datetime.datetime,
    duration: datetime.timedelta,
    key_factory: KeyFactory = default_key,
    serial_factory: SerialFactory = x509.random_serial_number,
    permitted: Constraints | None = None,
) -> KeyPair:
    """A self-signed CA certificate valid from `now` (minus a small backdate) for `duration`.

    With `permitted`, the CA carries critical X.509 name constraints: clients that verify them (Go, OpenSSL,
    browsers) accept a certificate it issues only for those DNS names (and names below them) and IP
    addresses, so a node or user that trusts the CA does not trust it for anyone else's name.
    """
    key = key_factory()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])
    builder = x509.CertificateBuilder()
    if permitted is not None:
        subtrees: list[x509.GeneralName] = [x509.DNSName(d) for d in permitted.dns_names]
        subtrees += [x509.IPAddress(ipaddress.ip_network(ip)) for ip in permitted.ip_addresses]
        builder = builder.add_extension(
            x509.NameConstraints(permitted_subtrees=subtrees, excluded_subtrees=None), critical=True
        )
    cert = (
        builder.subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial_factory())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + duration)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue_server_cert(
    *,
    ca: KeyPair,
    common_name: str,
    dns_names: Iterable[str],
    ip_addresses: Iterable[str],
    now: datetime.datetime,
    duration: datetime.timedelta,
    key_factory: KeyFactory = default_key,
    serial_factory: SerialFactory = x509.random_serial_number,
) -> KeyPair:
    """A serving certificate for the given SANs, signed by `ca`, never outliving the CA."""
    ca_cert = _load_cert(ca.cert_pem)
    ca_key = _load_key(ca.key_pem)
    if not key_matches(cert_pem=ca.cert_pem, key_pem=ca.key_pem):
        raise PkiError("the CA key does not belong to the CA certificate")
    key = key_factory()
    not_after = min(now + duration, ca_cert.not_valid_after_utc)
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(serial_factory())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def inspect(pem: bytes) -> CertInfo:
    """Parse the first certificate of a PEM bundle."""
    cert = _load_cert(pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns, ips = (), ()
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    try:
        constraints = cert.extensions.get_extension_for_class(x509.NameConstraints).value
        subtrees = constraints.permitted_subtrees or []
        permitted: Constraints | None = Constraints(
            dns_names=tuple(n.value for n in subtrees if isinstance(n, x509.DNSName)),
            ip_addresses=tuple(
                str(n.value.network_address) if n.value.prefixlen == n.value.max_prefixlen else str(n.value)
                for n in subtrees
                if isinstance(n, x509.IPAddress)
                and isinstance(n.value, ipaddress.IPv4Network | ipaddress.IPv6Network)
            ),
        )
    except x509.ExtensionNotFound:
        permitted = None
    digest = cert.fingerprint(hashes.SHA256()).hex().upper()
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        dns_names=dns,
        ip_addresses=ips,
        fingerprint_sha256=":".join(digest[i : i + 2] for i in range(0, len(digest), 2)),
        is_ca=is_ca,
        permitted=permitted,
    )


def key_matches(*, cert_pem: bytes, key_pem: bytes) -> bool:
    """Whether the private key belongs to the certificate (public keys compared)."""
    cert = _load_cert(cert_pem)
    key = _load_key(key_pem)
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(
        cert.public_key().public_bytes(serialization.Encoding.DER, fmt)
        == key.public_key().public_bytes(serialization.Encoding.DER, fmt)
    )


def signed_by(*, cert_pem: bytes, ca_pem: bytes) -> bool:
    """Whether `cert_pem` was issued and signed by the CA certificate `ca_pem`."""
    cert = _load_cert(cert_pem)
    ca = _load_cert(ca_pem)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
