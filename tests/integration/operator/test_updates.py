"""Spec changes and drift: children follow the spec, and what is deleted or edited by hand comes back.

Covers:
- a replicas change reaches the Deployment, and observedGeneration follows metadata.generation;
- adding a user adds it to the htpasswd Secret and keeps the existing users' hashes byte for
  byte; removing a user removes it from htpasswd and access.yaml;
- adding a DNS name inside the CA's name constraints reissues the serving certificate with it, from the same
  CA; one outside them is left out (Degraded NamesOutsideCA) and the certificate stays;
- a deleted child (Service, ConfigMap, Deployment, htpasswd Secret) is recreated, owned again;
- a hand edit of a child (Service port, Deployment replicas, nginx config text) is reverted.
"""

from __future__ import annotations

import functools
from typing import Any

import lightkube
import lightkube.resources.apps_v1
import lightkube.resources.core_v1
import lightkube.types
import pytest
from cryptography import x509
from passlib import apache

from dockyard_operator import names
from dockyard_operator.builders import nginx_configmap
from tests.integration.operator import cluster
from tests.integration.operator.conftest import Operator
from tests.support import kube

pytestmark = pytest.mark.integration

core = lightkube.resources.core_v1
apps = lightkube.resources.apps_v1
MERGE = lightkube.types.PatchType.MERGE
N = names.Names.of("demo")
PASSWORDS = {"alice": "alice-Update-pw-3", "bob": "bob-Update-pw-4", "carol": "carol-Update-pw-5"}


@pytest.fixture
def demo(kube_client: lightkube.Client, namespace: str, operator: Operator) -> Any:
    spec = {
        "auth": {"users": [cluster.user("alice", "alice-password", access="push")]},
        "storage": {"pvc": {"accessModes": ["ReadWriteMany"]}},
    }
    created = cluster.create_registry(kube_client, namespace=namespace, spec=spec, passwords=PASSWORDS)
    cluster.wait_child(kube_client, apps.Deployment, N.deployment, namespace)
    return created


def _patch_spec(client: lightkube.Client, namespace: str, spec: dict[str, Any]) -> None:
    client.patch(cluster.PrivateRegistry, "demo", {"spec": spec}, namespace=namespace, patch_type=MERGE)


def _htpasswd(client: lightkube.Client, namespace: str) -> apache.HtpasswdFile:
    data = cluster.secret_data(client.get(core.Secret, N.htpasswd_secret, namespace=namespace))
    return apache.HtpasswdFile.from_string(data["htpasswd"])


def _serving_cert(client: lightkube.Client, namespace: str) -> tuple[x509.Certificate, bytes]:
    data = cluster.secret_data(client.get(core.Secret, N.tls_secret, namespace=namespace))
    return x509.load_pem_x509_certificate(data["tls.crt"]), data["ca.crt"]


def test_changing_replicas_reaches_the_deployment_and_the_observed_generation(
    kube_client: lightkube.Client, namespace: str, demo: Any
) -> None:
    _patch_spec(kube_client, namespace, {"replicas": 3})

    kube.eventually(
        lambda: kube_client.get(apps.Deployment, N.deployment, namespace=namespace).spec.replicas == 3,
        what="the Deployment to have 3 replicas",
    )

    def observed() -> bool:
        registry = kube_client.get(cluster.PrivateRegistry, "demo", namespace=namespace)
        return bool(
            cluster.status_of(registry).get("observedGeneration") == registry["metadata"]["generation"]
        )

    kube.eventually(observed, what="status.observedGeneration to reach the new generation")


def test_adding_a_user_keeps_the_existing_hashes_and_removing_one_drops_it(
    kube_client: lightkube.Client, namespace: str, demo: Any
) -> None:
    before = kube.eventually(lambda: _htpasswd(kube_client, namespace), what="the htpasswd Secret")
    alice_hash = before.get_hash("alice")

    users = [
        cluster.user("alice", "alice-password", access="push"),
        cluster.user("bob", "bob-password"),
    ]
    _patch_spec(kube_client, namespace, {"auth": {"users": users}})

    after = kube.eventually(
        lambda: (found := _htpasswd(kube_client, namespace)) and "bob" in found.users() and found,
        what="bob in the htpasswd Secret",
    )
    assert after.check_password("bob", PASSWORDS["bob"])
    assert after.get_hash("alice") == alice_hash  # not rehashed: the pods need no restart for alice

    _patch_spec(kube_client, namespace, {"auth": {"users": users[1:]}})

    kube.eventually(
        lambda: _htpasswd(kube_client, namespace).users() == ["bob"],
        what="alice to be removed from the htpasswd Secret",
    )
    data = cluster.secret_data(kube_client.get(core.Secret, N.htpasswd_secret, namespace=namespace))
    assert b"alice" not in data["access.yaml"]


def test_adding_a_dns_name_reissues_the_certificate_from_the_same_ca(
    kube_client: lightkube.Client, namespace: str, demo: Any
) -> None:
    first, first_ca = kube.eventually(lambda: _serving_cert(kube_client, namespace), what="the TLS Secret")
    inside = f"mirror.demo.{namespace}.svc"  # below a name the CA was made for: inside its name constraints

    _patch_spec(kube_client, namespace, {"tls": {"dnsNames": [inside]}})

    def reissued() -> tuple[x509.Certificate, bytes]:
        cert, ca = _serving_cert(kube_client, namespace)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert inside in sans.get_values_for_type(x509.DNSName)
        return cert, ca

    cert, ca = kube.eventually(reissued, what=f"a certificate for {inside}")
    assert ca == first_ca
    assert cert.serial_number != first.serial_number
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca))


def test_a_dns_name_outside_the_cas_name_constraints_is_left_out_and_reported(
    kube_client: lightkube.Client, namespace: str, demo: Any
) -> None:
    first, first_ca = kube.eventually(lambda: _serving_cert(kube_client, namespace), what="the TLS Secret")

    _patch_spec(kube_client, namespace, {"tls": {"dnsNames": ["mirror.example.test"]}})

    degraded = cluster.wait_condition(
        kube_client, "demo", namespace, "Degraded", "True", match=lambda c: c["reason"] == "NamesOutsideCA"
    )
    assert "mirror.example.test" in degraded["message"] and "rotate-ca" in degraded["message"]
    cert, ca = _serving_cert(kube_client, namespace)
    assert (cert.serial_number, ca) == (first.serial_number, first_ca), "TLS keeps verifying as it did"


@pytest.mark.parametrize(
    ("resource", "name"),
    [
        (core.Service, N.service),
        (core.ConfigMap, N.nginx_configmap),
        (apps.Deployment, N.deployment),
        (core.Secret, N.htpasswd_secret),
    ],
    ids=["service", "configmap", "deployment", "htpasswd-secret"],
)
def test_a_deleted_child_is_recreated_and_owned_again(
    kube_client: lightkube.Client, namespace: str, demo: Any, resource: Any, name: str
) -> None:
    old = cluster.wait_child(kube_client, resource, name, namespace)

    kube_client.delete(resource, name, namespace=namespace)

    def recreated() -> Any:
        new = kube_client.get(resource, name, namespace=namespace)
        return new if new.metadata.uid != old.metadata.uid else None

    new = kube.eventually(recreated, what=f"{resource.__name__} {name} to be recreated")
    assert cluster.owned_by(new, demo)


def test_hand_edits_of_children_are_reverted(
    kube_client: lightkube.Client, namespace: str, demo: Any
) -> None:
    service = cluster.wait_child(kube_client, core.Service, N.service, namespace)
    port = service.spec.ports[0]
    configmap = cluster.wait_child(kube_client, core.ConfigMap, N.nginx_configmap, namespace)
    rendered = configmap.data[nginx_configmap.CONFIG_KEY]

    kube_client.patch(
        core.Service,
        N.service,
        {"spec": {"ports": [{"name": port.name, "port": 8443, "targetPort": port.targetPort}]}},
        namespace=namespace,
        patch_type=MERGE,
    )
    kube_client.patch(
        apps.Deployment, N.deployment, {"spec": {"replicas": 7}}, namespace=namespace, patch_type=MERGE
    )
    kube_client.patch(
        core.ConfigMap,
        N.nginx_configmap,
        {"data": {nginx_configmap.CONFIG_KEY: "events {}\n"}},
        namespace=namespace,
        patch_type=MERGE,
    )

    get = functools.partial(kube_client.get, namespace=namespace)
    kube.eventually(
        lambda: get(core.Service, N.service).spec.ports[0].port == 443, what="Service port 443 again"
    )
    kube.eventually(lambda: get(apps.Deployment, N.deployment).spec.replicas == 1, what="1 replica again")
    kube.eventually(
        lambda: get(core.ConfigMap, N.nginx_configmap).data[nginx_configmap.CONFIG_KEY] == rendered,
        what="the rendered nginx.conf again",
    )
