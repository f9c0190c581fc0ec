"""Certificates with an injected clock and injected randomness (`dockyard_common.pki`).

Covers: a CA is a CA (basicConstraints, keyCertSign) valid for its duration; a server certificate carries
exactly the requested SANs, is signed by the CA, never outlives the CA, and its key matches; injected key and
serial factories make issuance deterministic where it matters; bad PEM gives a PkiError without material;
name constraints round-trip through `inspect`; `expires_within` says when renewal is due.
"""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509

from dockyard_common import pki

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)


@pytest.fixture(scope="module")
def ca() -> pki.KeyPair:
    return pki.new_ca(common_name="test ca", now=NOW, duration=10 * DAY)


def test_a_new_ca_is_a_ca_valid_for_its_duration(ca: pki.KeyPair) -> None:
    info = pki.inspect(ca.cert_pem)
    assert info.is_ca
    assert info.not_after == NOW + 10 * DAY
    assert info.not_before <= NOW
    assert pki.key_matches(cert_pem=ca.cert_pem, key_pem=ca.key_pem)
    assert info.permitted is None, "name constraints only when asked for"


def test_a_server_certificate_has_the_sans_and_is_signed_by_the_ca(ca: pki.KeyPair) -> None:
    server = pki.issue_server_cert(
        ca=ca,
        common_name="reg",
        dns_names=["reg", "reg.ns.svc"],
        ip_addresses=["127.0.0.1", "::1"],
        now=NOW,
        duration=DAY,
    )
    info = pki.inspect(server.cert_pem)
    assert info.dns_names == ("reg", "reg.ns.svc")
    assert info.ip_addresses == ("127.0.0.1", "::1")
    assert not info.is_ca
    assert info.not_after == NOW + DAY
    assert pki.signed_by(cert_pem=server.cert_pem, ca_pem=ca.cert_pem)
    assert pki.key_matches(cert_pem=server.cert_pem, key_pem=server.key_pem)
    assert not pki.key_matches(cert_pem=server.cert_pem, key_pem=ca.key_pem)


def test_a_server_certificate_never_outlives_its_ca(ca: pki.KeyPair) -> None:
    server = pki.issue_server_cert(
        ca=ca, common_name="reg", dns_names=["reg"], ip_addresses=[], now=NOW, duration=100 * DAY
    )
    assert pki.inspect(server.cert_pem).not_after == pki.inspect(ca.cert_pem).not_after


def test_another_ca_did_not_sign_it(ca: pki.KeyPair) -> None:
    other = pki.new_ca(common_name="other", now=NOW, duration=DAY)
    server = pki.issue_server_cert(
        ca=other, common_name="reg", dns_names=["reg"], ip_addresses=[], now=NOW, duration=DAY
    )
    assert not pki.signed_by(cert_pem=server.cert_pem, ca_pem=ca.cert_pem)


def test_injected_key_and_serial_factories_are_used(ca: pki.KeyPair) -> None:
    key = pki.default_key()
    pair = pki.new_ca(
        common_name="fixed", now=NOW, duration=DAY, key_factory=lambda: key, serial_factory=lambda: 4242
    )
    again = pki.new_ca(
        common_name="fixed", now=NOW, duration=DAY, key_factory=lambda: key, serial_factory=lambda: 4242
    )
    assert pair.key_pem == again.key_pem
    assert pki.key_matches(cert_pem=again.cert_pem, key_pem=pair.key_pem)
    assert x509.load_pem_x509_certificate(pair.cert_pem).serial_number == 4242


def test_garbage_pem_is_a_pki_error_without_the_material() -> None:
    with pytest.raises(pki.PkiError) as info:
        pki.inspect(b"-----BEGIN CERTIFICATE-----\nsecretstuff\n-----END CERTIFICATE-----\n")
    assert "secretstuff" not in str(info.value)
    with pytest.raises(pki.PkiError):
        pki.key_matches(cert_pem=b"nope", key_pem=b"nope")


def test_name_constraints_of_a_ca_are_read_back() -> None:
    permitted = pki.Constraints(dns_names=("reg.example",), ip_addresses=("127.0.0.1", "10.0.0.0/8"))
    constrained = pki.new_ca(common_name="c", now=NOW, duration=DAY, permitted=permitted)
    assert pki.inspect(constrained.cert_pem).permitted == permitted


def test_expires_within_says_when_renewal_is_due(ca: pki.KeyPair) -> None:
    info = pki.inspect(ca.cert_pem)  # valid until NOW + 10 days
    assert not info.expires_within(DAY, now=NOW)
    assert info.expires_within(DAY, now=NOW + 9 * DAY)
    assert info.expires_within(datetime.timedelta(0), now=NOW + 10 * DAY)
