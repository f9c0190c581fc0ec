"""The serving certificate and its CA over time, against the real API server.

Covers:
- a certificate inside its renewal window (short certDuration/renewBefore in the spec) is
  renewed by the same CA: CA fingerprint and ca.crt unchanged, new serial, later notAfter in
  the Secret and in status, and the pod template changes so nginx picks it up;
- a deleted TLS Secret is reissued from the same CA;
- a deleted CA Secret is reported (Degraded, naming the reason) and never silently replaced
  while clients may trust the old CA: the TLS Secret stays as it was and the pods do not roll;
- a bring-your-own TLS Secret (tls.mode Secret) is mounted as is; a missing one makes
  CertificateReady False with a message naming it.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Any

import lightkube
import lightkube.models.meta_v1
import lightkube.resources.apps_v1
import lightkube.resources.core_v1
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import oid

from dockyard_operator import names
from tests.integration.operator import cluster
from tests.integration.operator.conftest import Operator
from tests.support import kube

pytestmark = pytest.mark.integration

core = lightkube.resources.core_v1
apps = lightkube.resources.apps_v1
N = names.Names.of("demo")


def _tls(client: lightkube.Client, namespace: str) -> dict[str, bytes]:
    return cluster.secret_data(client.get(core.Secret, N.tls_secret, namespace=namespace))


def _fingerprint(pem: bytes) -> str:
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def _reported_fingerprint(client: lightkube.Client, namespace: str) -> str:
    status = cluster.status_of(client.get(cluster.PrivateRegistry, "demo", namespace=namespace))
    return str(status["ca"]["fingerprintSha256"]).replace(":", "").lower()


def _template(client: lightkube.Client, namespace: str) -> dict[str, str]:
    deployment: Any = client.get(apps.Deployment, N.deployment, namespace=namespace)
    return dict(deployment.spec.template.metadata.annotations or {})


def test_a_certificate_in_its_renewal_window_is_renewed_by_the_same_ca(
    kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    # Valid for 90 s, renewed 60 s before expiry: the first certificate is due after ~30 s.
    spec = {"tls": {"certDuration": "90s", "renewBefore": "60s"}}
    cluster.create_registry(kube_client, namespace=namespace, spec=spec)
    first = kube.eventually(lambda: _tls(kube_client, namespace), what="the first certificate")
    cluster.wait_child(kube_client, apps.Deployment, N.deployment, namespace)
    annotations = _template(kube_client, namespace)
    first_cert = x509.load_pem_x509_certificate(first["tls.crt"])

    def renewed() -> dict[str, bytes]:
        current = _tls(kube_client, namespace)
        assert x509.load_pem_x509_certificate(current["tls.crt"]).serial_number != first_cert.serial_number
        return current

    second = kube.eventually(renewed, timeout=120, interval=1, what="the certificate to be renewed")

    second_cert = x509.load_pem_x509_certificate(second["tls.crt"])
    assert second["ca.crt"] == first["ca.crt"]
    second_cert.verify_directly_issued_by(x509.load_pem_x509_certificate(second["ca.crt"]))
    assert second_cert.not_valid_after_utc > first_cert.not_valid_after_utc
    # A fresh certificate is outside its own renewal window, or renewal would loop.
    lifetime = second_cert.not_valid_after_utc - second_cert.not_valid_before_utc
    assert lifetime > datetime.timedelta(seconds=60)
    kube.eventually(
        lambda: _reported_fingerprint(kube_client, namespace) == _fingerprint(first["ca.crt"]),
        what="status.ca to keep the CA fingerprint",
    )

    def status_follows() -> bool:
        status = cluster.status_of(kube_client.get(cluster.PrivateRegistry, "demo", namespace=namespace))
        reported = datetime.datetime.fromisoformat(status["certificate"]["notAfter"].replace("Z", "+00:00"))
        return reported >= second_cert.not_valid_after_utc.replace(microsecond=0)

    kube.eventually(status_follows, what="status.certificate.notAfter to follow the renewal")
    kube.eventually(
        lambda: _template(kube_client, namespace) != annotations,
        what="the pod template to roll for the new cert",
    )


def test_a_deleted_tls_secret_is_reissued_from_the_same_ca(
    kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    cluster.create_registry(kube_client, namespace=namespace)
    first = kube.eventually(lambda: _tls(kube_client, namespace), what="the first certificate")

    kube_client.delete(core.Secret, N.tls_secret, namespace=namespace)

    def reissued() -> dict[str, bytes]:
        current = _tls(kube_client, namespace)
        assert current["tls.crt"] != first["tls.crt"]
        return current

    second = kube.eventually(reissued, what="a new TLS Secret")
    assert second["ca.crt"] == first["ca.crt"]


def test_a_deleted_ca_secret_is_reported_and_the_ca_is_not_silently_replaced(
    kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    cluster.create_registry(kube_client, namespace=namespace)
    first = kube.eventually(lambda: _tls(kube_client, namespace), what="the first certificate")
    cluster.wait_condition(kube_client, "demo", namespace, "CertificateReady", "True")
    cluster.wait_child(kube_client, apps.Deployment, N.deployment, namespace)
    annotations = _template(kube_client, namespace)

    kube_client.delete(core.Secret, N.ca_secret, namespace=namespace)

    degraded = cluster.wait_condition(
        kube_client, "demo", namespace, "Degraded", "True", match=lambda c: "CA" in c.get("reason", "")
    )
    assert "CA" in degraded["message"]
    assert _tls(kube_client, namespace) == first
    assert cluster.absent(kube_client, core.Secret, N.ca_secret, namespace)
    assert _reported_fingerprint(kube_client, namespace) == _fingerprint(first["ca.crt"])
    # The served certificate did not change, so the pods must not roll either.
    assert _template(kube_client, namespace) == annotations


def _self_signed(host: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(oid.NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def test_a_bring_your_own_tls_secret_is_mounted_and_a_missing_one_is_named(
    kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    spec = {"tls": {"mode": "Secret", "secretName": "my-cert"}}
    cluster.create_registry(kube_client, namespace=namespace, spec=spec)

    missing = cluster.wait_condition(kube_client, "demo", namespace, "CertificateReady", "False")
    assert "my-cert" in missing["message"]

    cert_pem, key_pem = _self_signed("registry.example.test")
    kube_client.create(
        core.Secret(
            metadata=lightkube.models.meta_v1.ObjectMeta(name="my-cert", namespace=namespace),
            type="kubernetes.io/tls",
            stringData={"tls.crt": cert_pem.decode(), "tls.key": key_pem.decode()},
        )
    )

    cluster.wait_condition(kube_client, "demo", namespace, "CertificateReady", "True")
    deployment: Any = cluster.wait_child(kube_client, apps.Deployment, N.deployment, namespace)
    mounted = {v.secret.secretName for v in deployment.spec.template.spec.volumes if v.secret}
    assert "my-cert" in mounted
    assert cluster.absent(kube_client, core.Secret, N.ca_secret, namespace)  # no CA of ours in this mode
