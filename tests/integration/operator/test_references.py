"""Secrets a registry only references (passwords, a bring-your-own certificate), and many registries.

Covers:
- one password Secret shared by two registries: rotating it updates both htpasswd Secrets;
- rotating a bring-your-own TLS Secret rolls the pods and updates status.certificate;
- several registries created at once in one namespace all converge, each with its own CA.
"""

from __future__ import annotations

import datetime
import functools
from typing import Any

import lightkube
import lightkube.models.meta_v1
import lightkube.resources.apps_v1
import lightkube.resources.core_v1
import lightkube.types
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import oid
from passlib import apache

from dockyard_operator import names
from tests.integration.operator import cluster
from tests.integration.operator.conftest import Operator
from tests.support import kube

pytestmark = pytest.mark.integration

core = lightkube.resources.core_v1
apps = lightkube.resources.apps_v1
meta = lightkube.models.meta_v1
MERGE = lightkube.types.PatchType.MERGE


def _htpasswd(client: lightkube.Client, namespace: str, registry: str) -> apache.HtpasswdFile:
    secret = client.get(core.Secret, names.Names.of(registry).htpasswd_secret, namespace=namespace)
    return apache.HtpasswdFile.from_string(cluster.secret_data(secret)["htpasswd"])


def _verifies(client: lightkube.Client, namespace: str, registry: str, password: str) -> bool:
    return bool(_htpasswd(client, namespace, registry).check_password("team", password))


def test_rotating_a_password_shared_by_two_registries_updates_both(
    kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    kube_client.create(cluster.password_secret("team-password", namespace, "team-Shared-pw-19"))
    spec = {"auth": {"users": [cluster.user("team", "team-password", access="push")]}}
    for registry in ("left", "right"):
        cluster.create_registry(kube_client, namespace=namespace, name=registry, spec=spec)
    for registry in ("left", "right"):
        kube.eventually(
            functools.partial(_verifies, kube_client, namespace, registry, "team-Shared-pw-19"),
            what=f"{registry}'s htpasswd",
        )

    kube_client.patch(
        core.Secret,
        "team-password",
        {"stringData": {"password": "team-Rotated-pw-20"}},
        namespace=namespace,
        patch_type=MERGE,
    )

    for registry in ("left", "right"):
        kube.eventually(
            functools.partial(_verifies, kube_client, namespace, registry, "team-Rotated-pw-20"),
            what=f"{registry}'s htpasswd to follow the rotation",
        )


def _certificate(host: str, *, days: int) -> dict[str, str]:
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
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return {"tls.crt": cert.public_bytes(serialization.Encoding.PEM).decode(), "tls.key": key_pem.decode()}


def test_rotating_a_bring_your_own_certificate_rolls_the_pods_and_updates_status(
    kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    kube_client.create(
        core.Secret(
            metadata=meta.ObjectMeta(name="my-cert", namespace=namespace),
            type="kubernetes.io/tls",
            stringData=_certificate("registry.example.test", days=10),
        )
    )
    spec = {"tls": {"mode": "Secret", "secretName": "my-cert"}}
    cluster.create_registry(kube_client, namespace=namespace, spec=spec)
    cluster.wait_condition(kube_client, "demo", namespace, "CertificateReady", "True")
    deployment: Any = cluster.wait_child(
        kube_client, apps.Deployment, names.Names.of("demo").deployment, namespace
    )
    annotations = deployment.spec.template.metadata.annotations
    first_expiry = cluster.status_of(kube_client.get(cluster.PrivateRegistry, "demo", namespace=namespace))[
        "certificate"
    ]["notAfter"]

    kube_client.patch(
        core.Secret,
        "my-cert",
        {"stringData": _certificate("registry.example.test", days=20)},
        namespace=namespace,
        patch_type=MERGE,
    )

    def rolled() -> bool:
        current: Any = kube_client.get(
            apps.Deployment, names.Names.of("demo").deployment, namespace=namespace
        )
        return bool(current.spec.template.metadata.annotations != annotations)

    kube.eventually(rolled, what="the pods to roll for the new certificate")
    kube.eventually(
        lambda: (
            cluster.status_of(kube_client.get(cluster.PrivateRegistry, "demo", namespace=namespace))[
                "certificate"
            ]["notAfter"]
            > first_expiry
        ),
        what="status.certificate.notAfter to follow",
    )


def test_several_registries_created_at_once_all_converge(
    kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    registries = [f"burst-{index}" for index in range(6)]
    for registry in registries:
        cluster.create_registry(kube_client, namespace=namespace, name=registry)

    fingerprints = set()
    for registry in registries:
        cluster.wait_condition(kube_client, registry, namespace, "CertificateReady", "True", timeout=120)
        cluster.wait_child(kube_client, apps.Deployment, names.Names.of(registry).deployment, namespace)
        status = cluster.status_of(kube_client.get(cluster.PrivateRegistry, registry, namespace=namespace))
        fingerprints.add(status["ca"]["fingerprintSha256"])
    assert len(fingerprints) == len(registries)
