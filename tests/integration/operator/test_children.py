"""What one PrivateRegistry becomes in a real cluster, and what deleting it leaves behind.

Covers:
- every child (CA and TLS Secrets, htpasswd Secret, nginx and maintenance ConfigMaps, Service,
  Deployment) is created with a controller owner reference to the registry, the PVC without one
  (deletionPolicy Retain, labelled with the registry's name); no Ingress unless asked for;
- the htpasswd Secret verifies each user's password (bcrypt) and carries the access rules;
- the TLS Secret holds a certificate for the Service names (plus extra SANs) signed by the CA
  whose fingerprint the status reports, with the matching key; the CA key is not in it;
- the Deployment runs the registry as the registry/operator contract says, behind an nginx
  sidecar that mounts the certificate, and the Service selects its pods on https/443;
- the rendered nginx.conf in the ConfigMap passes a real `nginx -t` with that certificate;
- an exposed host gets an Ingress (HTTPS backend, unlimited bodies, the user's annotations
  kept), is in the certificate and becomes the endpoint in status;
- status (observedGeneration, endpoint, CA, certificate, conditions) and `kubectl get preg`;
- deleting the registry garbage-collects every child (KCM) but the retained PVC, and nothing else.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path
from typing import Any

import lightkube
import lightkube.resources.apps_v1
import lightkube.resources.core_v1
import lightkube.resources.networking_v1
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from passlib import apache

from dockyard_operator import model, names
from dockyard_operator.builders import nginx_configmap
from tests.integration.operator import cluster
from tests.integration.operator.conftest import Operator
from tests.support import kube

pytestmark = pytest.mark.integration

core = lightkube.resources.core_v1
apps = lightkube.resources.apps_v1
networking = lightkube.resources.networking_v1

NGINX = Path("/usr/sbin/nginx")
PASSWORDS = {"alice": "alice-Integration-pw-1", "bob": "bob-Integration-pw-2"}
SPEC: dict[str, Any] = {
    "auth": {
        "users": [
            cluster.user("alice", "alice-password", access="push", repositories=["team/*"]),
            cluster.user("bob", "bob-password", access="pull"),
        ]
    },
    "tls": {"dnsNames": ["registry.example.test"], "ipAddresses": ["192.0.2.7"]},
}


def _children(n: names.Names) -> list[tuple[Any, str]]:
    return [
        (core.Secret, n.ca_secret),
        (core.Secret, n.tls_secret),
        (core.Secret, n.htpasswd_secret),
        (core.ConfigMap, n.nginx_configmap),
        (core.ConfigMap, n.maintenance_configmap),
        (core.Service, n.service),
        (apps.Deployment, n.deployment),
    ]


@pytest.fixture
def demo(kube_client: lightkube.Client, namespace: str, operator: Operator) -> Any:
    """A registry with two users and extra SANs, once the operator has created its Deployment."""
    created = cluster.create_registry(kube_client, namespace=namespace, spec=SPEC, passwords=PASSWORDS)
    cluster.wait_child(kube_client, apps.Deployment, names.Names.of("demo").deployment, namespace)
    return created


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def _sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(ext.get_values_for_type(x509.DNSName)), {
        str(ip) for ip in ext.get_values_for_type(x509.IPAddress)
    }


def test_creating_a_registry_creates_every_child_with_a_controller_owner_reference_but_the_claim(
    kube_client: lightkube.Client, namespace: str, demo: Any
) -> None:
    n = names.Names.of("demo")
    for resource, name in _children(n):
        child = cluster.wait_child(kube_client, resource, name, namespace)
        assert cluster.owned_by(child, demo), f"{resource.__name__} {name} is not owned by the registry"
        assert child.metadata.labels[names.LABEL_INSTANCE] == "demo"
    # deletionPolicy Retain (the default): the images outlive the registry (test_maintenance.py).
    claim = cluster.wait_child(kube_client, core.PersistentVolumeClaim, n.pvc, namespace)
    assert not claim.metadata.ownerReferences and claim.metadata.labels[names.RETAINED_FROM] == "demo"
    assert cluster.absent(kube_client, networking.Ingress, n.ingress, namespace)


def test_htpasswd_secret_verifies_each_password_and_holds_the_access_rules(
    kube_client: lightkube.Client, namespace: str, demo: Any
) -> None:
    data = cluster.secret_data(
        cluster.wait_child(kube_client, core.Secret, names.Names.of("demo").htpasswd_secret, namespace)
    )

    htpasswd = apache.HtpasswdFile.from_string(data["htpasswd"])
    assert sorted(htpasswd.users()) == ["alice", "bob"]
    for user_name, password in PASSWORDS.items():
        assert htpasswd.check_password(user_name, password)
        assert htpasswd.get_hash(user_name).startswith(b"$2")  # bcrypt, as the registry requires
    assert not htpasswd.check_password("alice", PASSWORDS["bob"])
    access = yaml.safe_load(data["access.yaml"])
    assert access["anonymousPull"] is False
    assert access["users"]["alice"] == {"access": "push", "repositories": ["team/*"]}
    assert access["users"]["bob"] == {"access": "pull", "repositories": ["**"]}


def test_tls_secret_holds_a_certificate_for_the_service_names_signed_by_the_reported_ca(
    kube_client: lightkube.Client, namespace: str, demo: Any
) -> None:
    n = names.Names.of("demo")
    tls = cluster.secret_data(cluster.wait_child(kube_client, core.Secret, n.tls_secret, namespace))
    ca_secret = cluster.secret_data(cluster.wait_child(kube_client, core.Secret, n.ca_secret, namespace))
    assert set(tls) == {"tls.crt", "tls.key", "ca.crt"}  # the pod never gets the CA key

    cert, ca = _cert(tls["tls.crt"]), _cert(tls["ca.crt"])
    assert ca_secret["ca.crt"] == tls["ca.crt"]
    cert.verify_directly_issued_by(ca)
    key = serialization.load_pem_private_key(tls["tls.key"], password=None)
    assert key.public_key() == cert.public_key()
    ca_key = serialization.load_pem_private_key(ca_secret["ca.key"], password=None)
    assert ca_key.public_key() == ca.public_key()

    dns, ips = _sans(cert)
    assert set(names.service_hosts(n.service, namespace)) <= dns
    assert {"registry.example.test", "localhost"} <= dns
    assert {"127.0.0.1", "192.0.2.7"} <= ips

    status = cluster.wait_condition(kube_client, "demo", namespace, "CertificateReady", "True")
    assert status["reason"]
    registry = kube_client.get(cluster.PrivateRegistry, "demo", namespace=namespace)
    reported = cluster.status_of(registry)
    fingerprint = hashlib.sha256(ca.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert reported["ca"]["fingerprintSha256"].replace(":", "").lower() == fingerprint
    assert set(reported["certificate"]["dnsNames"]) == dns


def _container(pod_spec: Any, *, image_part: str) -> Any:
    matches = [c for c in pod_spec.containers if image_part in (c.image or "")]
    assert len(matches) == 1, [c.image for c in pod_spec.containers]
    return matches[0]


def test_deployment_runs_the_registry_behind_an_nginx_sidecar_as_the_contract_says(
    kube_client: lightkube.Client, namespace: str, demo: Any
) -> None:
    n = names.Names.of("demo")
    deployment = cluster.wait_child(kube_client, apps.Deployment, n.deployment, namespace)
    pod = deployment.spec.template.spec
    assert deployment.spec.replicas == 1

    registry = next(c for c in pod.containers if "serve" in (c.command or []) + (c.args or []))
    argv = (registry.command or []) + (registry.args or [])
    for flag in ("--no-tls", "--data-dir", "--htpasswd", "--access", "--accel-redirect", "--realm"):
        assert flag in argv, argv
    assert argv[argv.index("--listen") + 1] == "127.0.0.1:5000"
    assert argv[argv.index("--realm") + 1] == "demo"
    assert argv[argv.index("--accel-redirect") + 1] == "/_dockyard_blobs/"
    body_dir = nginx_configmap.NginxPaths().body_dir  # nginx writes upload bodies there (issue 15)
    assert argv[argv.index("--body-file-dir") + 1] == body_dir
    assert "--no-delete" in argv  # storage.deleteEnabled defaults to false
    assert "--anonymous-pull" not in argv

    sidecar = _container(pod, image_part="nginx")
    assert any(port.containerPort == 5443 for port in sidecar.ports or [])
    # Under a read-only root file system, every directory nginx.conf reads or writes is a mount.
    mounts = {m.mountPath: m for m in sidecar.volumeMounts}
    for directory in (nginx_configmap.CONFIG_DIR, nginx_configmap.TLS_DIR, nginx_configmap.DATA_DIR):
        assert directory in mounts, f"{directory} is not mounted into nginx"
    for directory in (nginx_configmap.CACHE_DIR, nginx_configmap.TMP_DIR, body_dir):
        assert directory in mounts and not mounts[directory].readOnly, f"{directory} is not writable"
    assert mounts[nginx_configmap.DATA_DIR].readOnly  # blobs: read-only; only the body directory is writable
    assert (mounts[body_dir].name, mounts[body_dir].subPath) == (
        mounts[nginx_configmap.DATA_DIR].name,
        ".nginx-bodies",
    )
    config_path = f"{nginx_configmap.CONFIG_DIR}/{nginx_configmap.CONFIG_KEY}"
    assert config_path in (sidecar.command or []) + (sidecar.args or [])
    volumes = {v.name: v for v in pod.volumes}
    secrets = {v.secret.secretName for v in volumes.values() if v.secret}
    assert {n.tls_secret, n.htpasswd_secret} <= secrets
    assert n.ca_secret not in secrets
    assert any(v.configMap and v.configMap.name == n.nginx_configmap for v in volumes.values())
    assert any(
        v.persistentVolumeClaim and v.persistentVolumeClaim.claimName == n.pvc for v in volumes.values()
    )

    service = cluster.wait_child(kube_client, core.Service, n.service, namespace)
    (port,) = service.spec.ports
    assert (port.name, port.port, port.targetPort) == ("https", 443, 5443)
    pod_labels = deployment.spec.template.metadata.labels
    assert service.spec.selector.items() <= pod_labels.items()
    assert deployment.spec.selector.matchLabels.items() <= pod_labels.items()


def test_rendered_nginx_config_passes_nginx_t_with_the_generated_certificate(
    kube_client: lightkube.Client, namespace: str, demo: Any, tmp_path: Path
) -> None:
    n = names.Names.of("demo")
    configmap = cluster.wait_child(kube_client, core.ConfigMap, n.nginx_configmap, namespace)
    tls = cluster.secret_data(cluster.wait_child(kube_client, core.Secret, n.tls_secret, namespace))
    spec = model.parse_spec(kube_client.get(cluster.PrivateRegistry, "demo", namespace=namespace)["spec"])

    # The ConfigMap is exactly the renderer's output for this spec with the pod's paths, so
    # re-rendering with temp paths (the renderer's own parameters) tests the same text.
    served = configmap.data[nginx_configmap.CONFIG_KEY]
    # A registry with a data volume: upload bodies go to files on it (issue 15).
    assert served == nginx_configmap.render(nginx=spec.nginx, body_files=True)
    (tmp_path / "tls.crt").write_bytes(tls["tls.crt"])
    (tmp_path / "tls.key").write_bytes(tls["tls.key"])
    (tmp_path / "data").mkdir()
    (tmp_path / "cache").mkdir()  # an emptyDir in the pod
    paths = nginx_configmap.NginxPaths(
        cert=str(tmp_path / "tls.crt"),
        key=str(tmp_path / "tls.key"),
        pid=str(tmp_path / "nginx.pid"),
        temp_dir=str(tmp_path / "cache"),
        data_dir=str(tmp_path / "data"),
    )
    config = tmp_path / "nginx.conf"
    config.write_text(nginx_configmap.render(nginx=spec.nginx, paths=paths, body_files=True))

    done = subprocess.run(
        [str(NGINX), "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


def test_an_exposed_host_gets_an_ingress_and_is_in_the_certificate(
    kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    ingress_spec = {
        "host": "images.example.test",
        "className": "nginx",
        "annotations": {"nginx.ingress.kubernetes.io/proxy-read-timeout": "1800"},
    }
    spec = {"expose": {"ingress": ingress_spec}}
    registry = cluster.create_registry(kube_client, namespace=namespace, name="public", spec=spec)
    n = names.Names.of("public")

    ingress = cluster.wait_child(kube_client, networking.Ingress, n.ingress, namespace)
    assert cluster.owned_by(ingress, registry)
    (rule,) = ingress.spec.rules
    assert rule.host == "images.example.test"
    assert rule.http.paths[0].backend.service.name == n.service
    assert ingress.spec.ingressClassName == "nginx"
    assert ingress.spec.tls[0].hosts == ["images.example.test"]
    # The backend speaks TLS and must take layers of any size; the user's annotations are kept.
    annotations = ingress.metadata.annotations
    assert annotations["nginx.ingress.kubernetes.io/backend-protocol"] == "HTTPS"
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "0"
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "1800"
    tls = cluster.secret_data(cluster.wait_child(kube_client, core.Secret, n.tls_secret, namespace))
    assert "images.example.test" in _sans(_cert(tls["tls.crt"]))[0]
    kube.eventually(
        lambda: (
            cluster.status_of(kube_client.get(cluster.PrivateRegistry, "public", namespace=namespace)).get(
                "endpoint"
            )
            == "images.example.test:443"
        ),
        what="the Ingress host as the endpoint in status",
    )


def test_status_reports_generation_endpoint_and_conditions_and_kubectl_shows_the_columns(
    control_plane: kube.ControlPlane, kube_client: lightkube.Client, namespace: str, demo: Any
) -> None:
    cluster.wait_condition(kube_client, "demo", namespace, "CertificateReady", "True")
    registry = kube_client.get(cluster.PrivateRegistry, "demo", namespace=namespace)
    status = cluster.status_of(registry)
    assert status["observedGeneration"] == registry["metadata"]["generation"]
    host, _, port = status["endpoint"].rpartition(":")
    assert host in names.service_hosts(names.Names.of("demo").service, namespace) and port == "443"
    kinds = {c["type"] for c in status["conditions"]}
    assert {"Ready", "Progressing", "Degraded", "CertificateReady", "StorageReady"} <= kinds
    ready = cluster.condition(registry, "Ready")
    assert ready is not None and ready["status"] == "False"  # no pod is ready: nothing runs them

    table = control_plane.kubectl("get", "preg", "demo", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "ENDPOINT", "READY", "REPLICAS", "CA", "EXPIRY", "AGE"]
    row = table[1].split()
    # READY False, REPLICAS 0 ready pods, CA EXPIRY the CA's notAfter as status reports it.
    assert row[:5] == ["demo", status["endpoint"], "False", "0", status["ca"]["notAfter"]]


def test_deleting_the_registry_garbage_collects_every_child_but_the_retained_claim(
    kube_client: lightkube.Client, namespace: str, demo: Any
) -> None:
    n = names.Names.of("demo")
    for resource, name in _children(n):
        cluster.wait_child(kube_client, resource, name, namespace)

    kube_client.delete(cluster.PrivateRegistry, "demo", namespace=namespace)

    for resource, name in _children(n):
        kube.eventually(
            functools.partial(cluster.absent, kube_client, resource, name, namespace),
            timeout=90,
            what=f"{resource.__name__} {name} to be garbage-collected",
        )
    # The users' own password Secrets are not children and stay; so does the claim (deletionPolicy Retain).
    for user_name in PASSWORDS:
        assert not cluster.absent(kube_client, core.Secret, f"{user_name}-password", namespace)
    assert not cluster.absent(kube_client, core.PersistentVolumeClaim, n.pvc, namespace)
