"""Certificates and htpasswd hashing with an injected clock and injected randomness.

Covers: a CA is a CA (basicConstraints, keyCertSign) valid for its duration; a server certificate carries
exactly the requested SANs, is signed by the CA, never outlives the CA, and its key matches; injected key and
serial factories make issuance deterministic where it matters; bad PEM gives a CryptoError without material;
bcrypt hashes verify, an existing hash is reused for an unchanged password and replaced for a changed one,
passwords over 72 bytes or empty are refused; htpasswd renders sorted and parses back.
"""

from __future__ import annotations

import datetime

import pytest

from dockyard_operator import crypto

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)


@pytest.fixture(scope="module")
def ca() -> crypto.KeyPair:
    return crypto.new_ca(common_name="test ca", now=NOW, duration=10 * DAY)


def test_a_new_ca_is_a_ca_valid_for_its_duration(ca: crypto.KeyPair) -> None:
    info = crypto.inspect(ca.cert_pem)
    assert info.is_ca
    assert info.not_after == NOW + 10 * DAY
    assert info.not_before <= NOW
    assert crypto.key_matches(cert_pem=ca.cert_pem, key_pem=ca.key_pem)
    assert info.permitted is None, "name constraints only when asked for"


def test_a_server_certificate_has_the_sans_and_is_signed_by_the_ca(ca: crypto.KeyPair) -> None:
    server = crypto.issue_server_cert(
        ca=ca,
        common_name="reg",
        dns_names=["reg", "reg.ns.svc"],
        ip_addresses=["127.0.0.1", "::1"],
        now=NOW,
        duration=DAY,
    )
    info = crypto.inspect(server.cert_pem)
    assert info.dns_names == ("reg", "reg.ns.svc")
    assert info.ip_addresses == ("127.0.0.1", "::1")
    assert not info.is_ca
    assert info.not_after == NOW + DAY
    assert crypto.signed_by(cert_pem=server.cert_pem, ca_pem=ca.cert_pem)
    assert crypto.key_matches(cert_pem=server.cert_pem, key_pem=server.key_pem)
    assert not crypto.key_matches(cert_pem=server.cert_pem, key_pem=ca.key_pem)


def test_a_server_certificate_never_outlives_its_ca(ca: crypto.KeyPair) -> None:
    server = crypto.issue_server_cert(
        ca=ca, common_name="reg", dns_names=["reg"], ip_addresses=[], now=NOW, duration=100 * DAY
    )
    assert crypto.inspect(server.cert_pem).not_after == crypto.inspect(ca.cert_pem).not_after


def test_another_ca_did_not_sign_it(ca: crypto.KeyPair) -> None:
    other = crypto.new_ca(common_name="other", now=NOW, duration=DAY)
    server = crypto.issue_server_cert(
        ca=other, common_name="reg", dns_names=["reg"], ip_addresses=[], now=NOW, duration=DAY
    )
    assert not crypto.signed_by(cert_pem=server.cert_pem, ca_pem=ca.cert_pem)


def test_injected_key_and_serial_factories_are_used(ca: crypto.KeyPair) -> None:
    key = crypto.default_key()
    pair = crypto.new_ca(
        common_name="fixed", now=NOW, duration=DAY, key_factory=lambda: key, serial_factory=lambda: 4242
    )
    again = crypto.new_ca(
        common_name="fixed", now=NOW, duration=DAY, key_factory=lambda: key, serial_factory=lambda: 4242
    )
    from cryptography import x509

    assert pair.key_pem == again.key_pem
    assert crypto.key_matches(cert_pem=again.cert_pem, key_pem=pair.key_pem)
    assert x509.load_pem_x509_certificate(pair.cert_pem).serial_number == 4242


def test_garbage_pem_is_a_crypto_error_without_the_material() -> None:
    with pytest.raises(crypto.CryptoError) as info:
        crypto.inspect(b"-----BEGIN CERTIFICATE-----\nsecretstuff\n-----END CERTIFICATE-----\n")
    assert "secretstuff" not in str(info.value)
    with pytest.raises(crypto.CryptoError):
        crypto.key_matches(cert_pem=b"nope", key_pem=b"nope")


def test_a_hash_verifies_its_password_only() -> None:
    hashed = crypto.hash_password(b"pw-one", rounds=4)
    assert hashed.startswith("$2b$04$")
    assert crypto.verify_password(b"pw-one", hashed)
    assert not crypto.verify_password(b"pw-two", hashed)
    assert not crypto.verify_password(b"pw-one", "not-a-hash")


def test_an_unchanged_password_keeps_its_hash_and_a_changed_one_gets_a_new_hash() -> None:
    existing = {"alice": crypto.hash_password(b"old", rounds=4)}
    assert (
        crypto.reuse_or_hash(user="alice", password=b"old", existing=existing, rounds=4) == existing["alice"]
    )
    fresh = crypto.reuse_or_hash(user="alice", password=b"new", existing=existing, rounds=4)
    assert fresh != existing["alice"] and crypto.verify_password(b"new", fresh)


def test_the_salt_factory_is_injected() -> None:
    import bcrypt

    salt = bcrypt.gensalt(rounds=4)
    assert crypto.hash_password(b"pw", rounds=4, salt_factory=lambda _: salt) == crypto.hash_password(
        b"pw", rounds=4, salt_factory=lambda _: salt
    )


@pytest.mark.parametrize("password", [b"", b"x" * 73])
def test_passwords_bcrypt_cannot_hash_faithfully_are_refused(password: bytes) -> None:
    with pytest.raises(crypto.CryptoError):
        crypto.hash_password(password, rounds=4)


def test_htpasswd_renders_sorted_and_parses_back() -> None:
    text = crypto.render_htpasswd({"bob": "$2b$04$b", "alice": "$2b$04$a"})
    assert text == "alice:$2b$04$a\nbob:$2b$04$b\n"
    assert crypto.parse_htpasswd(text + "# comment\n\nmalformed\n") == {
        "alice": "$2b$04$a",
        "bob": "$2b$04$b",
    }
