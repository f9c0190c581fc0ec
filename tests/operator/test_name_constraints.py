"""Name constraints of a new CA, verified as TLS clients verify them (cryptography's verifier and OpenSSL).

Covers:
- `policies.ca_constraints` turns the serving certificate's names into permitted subtrees (`*.x` as `x`);
- every name of a registry's serving certificate (Service names, localhost, 127.0.0.1, the Ingress host,
  tls.dnsNames with a wildcard, tls.ipAddresses) verifies against a CA constrained to them, by DNS name
  and by IP address, with cryptography's X.509 verifier and with `openssl verify`;
- a certificate the same CA issues for docker.io or another IP fails both verifiers;
- `policies.within_constraints` keeps names inside the constraints, lists the others, and lets everything
  through for a CA without constraints (one made before they existed).
"""

from __future__ import annotations

import datetime
import ipaddress
import pathlib
import shutil
import subprocess

import pytest
from cryptography import x509
from cryptography.x509 import verification

from dockyard_common import pki
from dockyard_operator import model, names, policies

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
SPEC = model.parse_spec(
    {
        "expose": {"type": "NodePort", "ingress": {"host": "registry.team.example"}},
        "tls": {"dnsNames": ["*.apps.example", "mirror.corp.example"], "ipAddresses": ["10.1.2.3"]},
    }
)
DNS, IPS = policies.desired_sans(
    spec=SPEC, child_names=names.Names.of("demo"), namespace="team", cluster_domain="cluster.local"
)


@pytest.fixture(scope="module")
def ca() -> pki.KeyPair:
    return pki.new_ca(
        common_name="Dockyard CA team/demo",
        now=NOW,
        duration=datetime.timedelta(days=3650),
        permitted=policies.ca_constraints(DNS, IPS),
    )


def issue(ca: pki.KeyPair, dns: list[str], ips: list[str]) -> pki.KeyPair:
    return pki.issue_server_cert(
        ca=ca,
        common_name=(dns or ["x"])[0],
        dns_names=dns,
        ip_addresses=ips,
        now=NOW,
        duration=datetime.timedelta(days=90),
    )


def verify(ca: pki.KeyPair, leaf: pki.KeyPair, subject: x509.DNSName | x509.IPAddress) -> bool:
    store = verification.Store([x509.load_pem_x509_certificate(ca.cert_pem)])
    verifier = (
        verification.PolicyBuilder()
        .store(store)
        .time(NOW + datetime.timedelta(days=1))
        .build_server_verifier(subject)
    )
    try:
        verifier.verify(x509.load_pem_x509_certificate(leaf.cert_pem), [])
    except verification.VerificationError:
        return False
    return True


def openssl_verify(tmp_path: pathlib.Path, ca: pki.KeyPair, leaf: pki.KeyPair) -> bool:
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "leaf.pem").write_bytes(leaf.cert_pem)
    at = str(int((NOW + datetime.timedelta(days=1)).timestamp()))
    done = subprocess.run(
        ["openssl", "verify", "-attime", at, "-CAfile", str(tmp_path / "ca.pem"), str(tmp_path / "leaf.pem")],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode == 0


def test_the_constraints_are_the_certificate_names_with_wildcards_as_subtrees(ca: pki.KeyPair) -> None:
    permitted = pki.inspect(ca.cert_pem).permitted

    assert permitted is not None
    assert permitted.dns_names == tuple(name.removeprefix("*.") for name in DNS)
    assert permitted.ip_addresses == ("127.0.0.1", "10.1.2.3")
    assert {"demo.team.svc.cluster.local", "localhost", "registry.team.example", "apps.example"} <= set(
        permitted.dns_names
    )


def test_every_name_of_the_serving_certificate_verifies_against_the_constrained_ca(
    ca: pki.KeyPair,
) -> None:
    leaf = issue(ca, DNS, IPS)

    for name in DNS:
        subject = name.replace("*", "registry")
        assert verify(ca, leaf, x509.DNSName(subject)), subject
    for ip in IPS:
        assert verify(ca, leaf, x509.IPAddress(ipaddress.ip_address(ip))), ip


def test_a_certificate_for_someone_elses_name_from_the_same_ca_does_not_verify(ca: pki.KeyPair) -> None:
    assert not verify(ca, issue(ca, ["docker.io"], []), x509.DNSName("docker.io"))
    assert not verify(ca, issue(ca, ["localhost", "registry-1.docker.io"], []), x509.DNSName("localhost"))
    assert not verify(ca, issue(ca, [], ["10.9.9.9"]), x509.IPAddress(ipaddress.ip_address("10.9.9.9")))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl binary on this machine")
def test_openssl_accepts_the_registrys_certificate_and_refuses_one_outside_the_constraints(
    ca: pki.KeyPair, tmp_path: pathlib.Path
) -> None:
    assert openssl_verify(tmp_path, ca, issue(ca, DNS, IPS))
    assert not openssl_verify(tmp_path, ca, issue(ca, ["localhost", "docker.io"], ["127.0.0.1"]))


def test_within_constraints_keeps_inside_names_and_names_the_rest(ca: pki.KeyPair) -> None:
    permitted = pki.inspect(ca.cert_pem).permitted

    dns, ips, outside = policies.within_constraints(
        permitted,
        dns_names=["localhost", "x.apps.example", "deep.mirror.corp.example", "docker.io"],
        ip_addresses=["127.0.0.1", "10.9.9.9"],
    )

    assert dns == ["localhost", "x.apps.example", "deep.mirror.corp.example"]
    assert ips == ["127.0.0.1"]
    assert outside == ["docker.io", "10.9.9.9"]
    assert policies.within_constraints(None, dns_names=["docker.io"], ip_addresses=["1.2.3.4"]) == (
        ["docker.io"],
        ["1.2.3.4"],
        [],
    )
