"""Spec variants and neighbours: names, scaling, exposure and flags, against the real API server.

Covers:
- a registry name that is no valid Service name (longer than 63, a dot, a leading digit) still
  gets valid, owned children and a certificate;
- two registries in one namespace get separate children, and deleting one leaves the other's;
- `kubectl scale preg` (the scale subresource) reaches the Deployment; replicas 0 is reported;
- ingress annotations that reached the API server without the chart's admission policy: a `*-snippet` key
  and one the operator's allowlist does not name are not applied, and Degraded names both;
- removing spec.expose.ingress deletes the Ingress; NodePort with a fixed port, then back to
  ClusterIP, is applied to the Service both ways;
- anonymousPull and deleteEnabled reach the registry's arguments and access.yaml;
- a password bcrypt cannot hash (more than 72 bytes) is reported by user and Secret without
  showing the password;
- an object that already exists with a child's name but is not the registry's is not taken over;
- deleting a namespace with a registry in it completes.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import lightkube
import lightkube.models.meta_v1
import lightkube.resources.apps_v1
import lightkube.resources.core_v1
import lightkube.resources.networking_v1
import lightkube.types
import pytest
import yaml

from dockyard_operator import names
from tests.integration.operator import cluster
from tests.integration.operator.conftest import Operator
from tests.support import kube

pytestmark = pytest.mark.integration

core = lightkube.resources.core_v1
apps = lightkube.resources.apps_v1
networking = lightkube.resources.networking_v1
meta = lightkube.models.meta_v1
MERGE = lightkube.types.PatchType.MERGE


def _patch_spec(client: lightkube.Client, namespace: str, name: str, spec: dict[str, Any]) -> None:
    client.patch(cluster.PrivateRegistry, name, {"spec": spec}, namespace=namespace, patch_type=MERGE)


def _deployment(client: lightkube.Client, namespace: str, name: str = "demo") -> Any:
    return client.get(apps.Deployment, names.Names.of(name).deployment, namespace=namespace)


def _registry_argv(deployment: Any) -> list[str]:
    for container in deployment.spec.template.spec.containers:
        argv = list(container.command or []) + list(container.args or [])
        if "serve" in argv:
            return argv
    raise AssertionError("no registry container")


@pytest.mark.parametrize(
    "name",
    [
        "a-registry-name-that-is-much-longer-than-any-service-name-may-be-" + "x" * 20,
        "team.registry",
        "7seas",
    ],
    ids=["longer-than-63", "with-a-dot", "leading-digit"],
)
def test_a_registry_name_that_is_no_service_name_still_gets_valid_owned_children(
    kube_client: lightkube.Client, namespace: str, operator: Operator, name: str
) -> None:
    created = cluster.create_registry(kube_client, namespace=namespace, name=name)
    n = names.Names.of(name)

    for resource, child in [
        (core.Service, n.service),
        (apps.Deployment, n.deployment),
        (core.Secret, n.tls_secret),
        (core.Secret, n.htpasswd_secret),
        (core.ConfigMap, n.nginx_configmap),
    ]:
        assert len(child) <= 63
        assert cluster.owned_by(cluster.wait_child(kube_client, resource, child, namespace), created)
    cluster.wait_condition(kube_client, name, namespace, "CertificateReady", "True")


def test_two_registries_in_one_namespace_keep_separate_children(
    kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    first = cluster.create_registry(kube_client, namespace=namespace, name="first")
    second = cluster.create_registry(kube_client, namespace=namespace, name="second")
    for registry, name in [(first, "first"), (second, "second")]:
        deployment = cluster.wait_child(
            kube_client, apps.Deployment, names.Names.of(name).deployment, namespace
        )
        assert cluster.owned_by(deployment, registry)
    first_ca = cluster.secret_data(
        kube_client.get(core.Secret, names.Names.of("first").ca_secret, namespace=namespace)
    )
    second_ca = cluster.secret_data(
        kube_client.get(core.Secret, names.Names.of("second").ca_secret, namespace=namespace)
    )
    assert first_ca["ca.crt"] != second_ca["ca.crt"]

    kube_client.delete(cluster.PrivateRegistry, "first", namespace=namespace)

    kube.eventually(
        functools.partial(
            cluster.absent, kube_client, apps.Deployment, names.Names.of("first").deployment, namespace
        ),
        timeout=90,
        what="the first registry's Deployment to be garbage-collected",
    )
    assert cluster.owned_by(_deployment(kube_client, namespace, "second"), second)


def test_kubectl_scale_reaches_the_deployment_and_zero_replicas_is_reported(
    control_plane: kube.ControlPlane, kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    spec = {"storage": {"pvc": {"accessModes": ["ReadWriteMany"]}}}
    cluster.create_registry(kube_client, namespace=namespace, spec=spec)
    cluster.wait_child(kube_client, apps.Deployment, names.Names.of("demo").deployment, namespace)

    control_plane.kubectl("scale", "preg", "demo", "-n", namespace, "--replicas=2")
    kube.eventually(lambda: _deployment(kube_client, namespace).spec.replicas == 2, what="2 replicas")

    control_plane.kubectl("scale", "preg", "demo", "-n", namespace, "--replicas=0")
    kube.eventually(lambda: _deployment(kube_client, namespace).spec.replicas == 0, what="0 replicas")
    # DeploymentProgressing first (KCM has not observed the new generation yet), then this:
    cluster.wait_condition(
        kube_client, "demo", namespace, "Ready", "False", match=lambda c: c["reason"] == "ScaledToZero"
    )


def test_removing_the_ingress_from_the_spec_deletes_it(
    kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    spec = {"expose": {"ingress": {"host": "images.example.test"}}}
    cluster.create_registry(kube_client, namespace=namespace, spec=spec)
    n = names.Names.of("demo")
    cluster.wait_child(kube_client, networking.Ingress, n.ingress, namespace)

    kube_client.patch(
        cluster.PrivateRegistry,
        "demo",
        [{"op": "remove", "path": "/spec/expose/ingress"}],
        namespace=namespace,
        patch_type=lightkube.types.PatchType.JSON,
    )

    kube.eventually(
        functools.partial(cluster.absent, kube_client, networking.Ingress, n.ingress, namespace),
        what="the Ingress to be deleted",
    )


def test_a_node_port_is_applied_and_switching_back_to_cluster_ip_works(
    kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    spec = {"expose": {"type": "NodePort", "nodePort": 30555}}
    cluster.create_registry(kube_client, namespace=namespace, spec=spec)
    name = names.Names.of("demo").service

    def service_is(kind: str) -> Any:
        service: Any = kube_client.get(core.Service, name, namespace=namespace)
        assert service.spec.type == kind, service.spec.type
        return service

    service = kube.eventually(lambda: service_is("NodePort"), what="a NodePort Service")
    assert service.spec.ports[0].nodePort == 30555

    kube_client.patch(
        cluster.PrivateRegistry,
        "demo",
        [{"op": "replace", "path": "/spec/expose", "value": {"type": "ClusterIP"}}],
        namespace=namespace,
        patch_type=lightkube.types.PatchType.JSON,
    )

    service = kube.eventually(lambda: service_is("ClusterIP"), what="the Service back to ClusterIP")
    assert service.spec.ports[0].nodePort is None
    degraded = cluster.wait_condition(kube_client, "demo", namespace, "Degraded", "False")
    assert degraded["reason"]


def test_anonymous_pull_and_delete_reach_the_registry(
    kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    spec = {"auth": {"anonymousPull": True}, "storage": {"deleteEnabled": True, "emptyDir": {}}}
    cluster.create_registry(kube_client, namespace=namespace, spec=spec)
    n = names.Names.of("demo")

    deployment = cluster.wait_child(kube_client, apps.Deployment, n.deployment, namespace)
    argv = _registry_argv(deployment)
    assert "--anonymous-pull" in argv
    assert "--no-delete" not in argv
    assert any(v.emptyDir is not None and v.name == "data" for v in deployment.spec.template.spec.volumes)
    assert cluster.absent(kube_client, core.PersistentVolumeClaim, n.pvc, namespace)
    access = yaml.safe_load(
        cluster.secret_data(kube_client.get(core.Secret, n.htpasswd_secret, namespace=namespace))[
            "access.yaml"
        ]
    )
    assert access["anonymousPull"] is True


def test_a_password_longer_than_bcrypt_can_hash_is_reported_without_showing_it(
    control_plane: kube.ControlPlane, kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    password = "Long-pw-12-" + "L" * 62  # 73 bytes: bcrypt would silently ignore the tail
    spec = {"auth": {"users": [cluster.user("frank", "frank-password")]}}
    cluster.create_registry(kube_client, namespace=namespace, spec=spec, passwords={"frank": password})

    ready = cluster.wait_condition(
        kube_client, "demo", namespace, "Ready", "False", match=lambda c: "frank-password" in c["message"]
    )
    assert "frank" in ready["message"].replace("frank-password", "")
    events = control_plane.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    status = json.dumps(
        cluster.status_of(kube_client.get(cluster.PrivateRegistry, "demo", namespace=namespace))
    )
    for text in (status, events, operator.output()):
        assert password not in text


def test_an_existing_object_with_a_childs_name_is_not_taken_over(
    kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    n = names.Names.of("demo")
    foreign = kube_client.create(
        core.ConfigMap(
            metadata=meta.ObjectMeta(
                name=n.nginx_configmap, namespace=namespace, labels={"app": "someone-else"}
            ),
            data={"nginx.conf": "# someone else's configuration\n"},
        )
    )

    cluster.create_registry(kube_client, namespace=namespace)

    cluster.wait_condition(kube_client, "demo", namespace, "CertificateReady", "True")  # a pass has run
    current: Any = kube_client.get(core.ConfigMap, n.nginx_configmap, namespace=namespace)
    assert current.data == foreign.data, "the operator overwrote a ConfigMap it does not own"
    assert not current.metadata.ownerReferences
    problem = cluster.wait_condition(
        kube_client, "demo", namespace, "Degraded", "True", match=lambda c: n.nginx_configmap in c["message"]
    )
    assert problem["reason"]


def test_deleting_a_namespace_with_a_registry_completes(
    kube_client: lightkube.Client, operator: Operator
) -> None:
    namespace = "doomed-registry-namespace"
    kube_client.create(core.Namespace(metadata=meta.ObjectMeta(name=namespace)))
    cluster.create_registry(kube_client, namespace=namespace, passwords={"alice": "alice-Doomed-pw-13"})
    cluster.wait_child(kube_client, apps.Deployment, names.Names.of("demo").deployment, namespace)

    kube_client.delete(core.Namespace, namespace)

    kube.eventually(
        lambda: cluster.absent_cluster_scoped(kube_client, core.Namespace, namespace),
        timeout=120,
        what="the namespace to be deleted",
    )


def test_unallowed_ingress_annotations_are_not_applied_and_degraded_names_them(
    kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    annotations = {
        "nginx.ingress.kubernetes.io/configuration-snippet": "more_set_headers 'X: y';",
        "nginx.ingress.kubernetes.io/auth-url": "http://attacker.example/",
        "nginx.ingress.kubernetes.io/proxy-read-timeout": "1800",
    }
    spec = {"expose": {"ingress": {"host": "images.example.test", "annotations": annotations}}}
    cluster.create_registry(kube_client, namespace=namespace, name="tenant", spec=spec)

    ingress: Any = cluster.wait_child(
        kube_client, networking.Ingress, names.Names.of("tenant").ingress, namespace
    )
    applied = ingress.metadata.annotations
    assert applied["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "1800"
    assert "nginx.ingress.kubernetes.io/configuration-snippet" not in applied
    assert "nginx.ingress.kubernetes.io/auth-url" not in applied
    degraded = cluster.wait_condition(
        kube_client, "tenant", namespace, "Degraded", "True",
        match=lambda c: c["reason"] == "IngressAnnotationsRefused",
    )  # fmt: skip
    assert "nginx.ingress.kubernetes.io/configuration-snippet" in degraded["message"]
    assert "nginx.ingress.kubernetes.io/auth-url" in degraded["message"]
    assert "more_set_headers" not in degraded["message"]
