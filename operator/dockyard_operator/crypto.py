"""Certificates and password hashes: the CA, the serving certificate, and htpasswd bcrypt entries.

Owns: generating and inspecting PEM material with `cryptography`, and hashing/verifying passwords with
`bcrypt`. The clock (`now`) and the randomness (key factory, serial numbers, bcrypt salts) are parameters, so
renewal windows and reuse decisions are testable without waiting or mocking.
Must not: decide *when* to renew (that is `policies.py`), talk to Kubernetes, or log secrets. Exceptions
raised here never contain key material or passwords.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
from collections.abc import Callable, Iterable, Mapping

import bcrypt
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# bcrypt only looks at the first 72 bytes; bcrypt 5 refuses longer input instead of truncating silently.
BCRYPT_MAX_BYTES = 72
# Backdate certificates a little so a node whose clock lags slightly still accepts a fresh certificate.
_BACKDATE = datetime.timedelta(minutes=5)

KeyFactory = Callable[[], CertificateIssuerPrivateKeyTypes]
SerialFactory = Callable[[], int]
SaltFactory = Callable[[int], bytes]


class CryptoError(ValueError):
    """PEM material is missing, unparseable or inconsistent (the message never includes the material)."""


def default_key() -> CertificateIssuerPrivateKeyTypes:
    """A fresh ECDSA P-256 key: small, fast, and accepted by every OCI client."""
    return ec.generate_private_key(ec.SECP256R1())


def _default_salt(rounds: int) -> bytes:
    return bcrypt.gensalt(rounds=rounds)


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
    """What the operator needs to know about a certificate."""

    subject: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    fingerprint_sha256: str
    is_ca: bool
    permitted: Constraints | None = None
    """The CA's permitted name constraints; None when it has none (it may then issue for any name)."""


def _key_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_cert(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise CryptoError("not a PEM certificate") from None


def _load_key(pem: bytes) -> CertificateIssuerPrivateKeyTypes:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise CryptoError("not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CryptoError("unsupported private key type (use RSA or ECDSA)")
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
        raise CryptoError("the CA key does not belong to the CA certificate")
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


# ------------------------------------------------------------------------------------------ htpasswd


def check_password(password: bytes) -> None:
    """Raise `CryptoError` when bcrypt cannot hash this password faithfully."""
    if not password:
        raise CryptoError("the password is empty")
    if len(password) > BCRYPT_MAX_BYTES:
        raise CryptoError(f"the password is longer than {BCRYPT_MAX_BYTES} bytes (bcrypt's limit)")


def hash_password(password: bytes, *, rounds: int, salt_factory: SaltFactory = _default_salt) -> str:
    """A bcrypt hash in htpasswd form (`$2b$...`)."""
    check_password(password)
    return bcrypt.hashpw(password, salt_factory(rounds)).decode("ascii")


def verify_password(password: bytes, hashed: str) -> bool:
    """Whether `password` matches the bcrypt `hashed`; any malformed hash simply does not match."""
    if not password or len(password) > BCRYPT_MAX_BYTES:
        return False
    try:
        return bool(bcrypt.checkpw(password, hashed.encode("ascii")))
    except (ValueError, UnicodeEncodeError):
        return False


def parse_htpasswd(text: str) -> dict[str, str]:
    """`user:hash` lines to a dict; blank lines, comments and malformed lines are ignored."""
    entries: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        user, _, hashed = line.partition(":")
        entries[user] = hashed
    return entries


def render_htpasswd(entries: Mapping[str, str]) -> str:
    """The htpasswd file for `entries`, one `user:hash` line each, sorted so the content is stable."""
    return "".join(f"{user}:{entries[user]}\n" for user in sorted(entries))


def reuse_or_hash(
    *,
    user: str,
    password: bytes,
    existing: Mapping[str, str],
    rounds: int,
    salt_factory: SaltFactory = _default_salt,
) -> str:
    """The existing hash of `user` when it still verifies `password`, else a new one.

    Keeping verified hashes means the htpasswd Secret (and so the pod checksum) changes only when a password
    or the user set really changes, not on every reconcile.
    """
    current = existing.get(user)
    if current is not None and verify_password(password, current):
        return current
    return hash_password(password, rounds=rounds, salt_factory=salt_factory)
