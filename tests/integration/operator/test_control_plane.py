"""The test control plane itself (tests/support/kube.py), so operator failures are never harness ones.

Covers:
- the API server answers over TLS with the admin client certificate, and reports its version;
- RBAC is enforced: a ServiceAccount token kubeconfig is authenticated but denied, the denial
  is in the audit log, and a RoleBinding then allows exactly what it grants; a client certificate
  kubeconfig is a user of its own in the audit log; `api_json` GETs as admin;
- kube-controller-manager runs: namespace deletion completes, ownerReference garbage
  collection deletes a dependent, and a Deployment gets a ReplicaSet and a Pod;
- playing the kubelet (marking Pods ready) makes a Deployment Available through KCM, and a
  PersistentVolume the test provides is bound to a matching claim, and a deleted claim does not
  hang on its protection finalizer;
- stopping (also after a startup that failed halfway) leaves no process and no temp dir, a
  missing binary fails (not skips) with the command that builds it, and the plane's ports are
  reserved while it runs (nobody else can bind them) and released when it stops.
"""

from __future__ import annotations

import errno
import json
import os
import socket
from pathlib import Path

import lightkube
import lightkube.models.apps_v1
import lightkube.models.core_v1
import lightkube.models.meta_v1
import lightkube.models.rbac_v1
import lightkube.resources.apps_v1
import lightkube.resources.core_v1
import lightkube.resources.rbac_authorization_v1
import pytest

import tests.support
from tests.support import kube, procs

pytestmark = pytest.mark.integration

meta = lightkube.models.meta_v1
core = lightkube.resources.core_v1


def _gone(client: lightkube.Client, resource: type, name: str, *, namespace: str | None = None) -> bool:
    try:
        client.get(resource, name, namespace=namespace)
    except lightkube.ApiError as exc:
        if exc.status.code == 404:
            return True
        raise
    return False


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_api_server_answers_with_its_version_over_tls(control_plane: kube.ControlPlane) -> None:
    version = json.loads(control_plane.kubectl("version", "-o", "json").stdout)["serverVersion"]
    assert version["major"] == "1"
    assert version["gitVersion"].startswith("v1.")
    assert control_plane.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"


def test_a_client_certificate_identity_is_its_own_user_in_the_audit_log(
    control_plane: kube.ControlPlane, namespace: str
) -> None:
    config = control_plane.client_kubeconfig(name="bench-operator")

    control_plane.kubectl("get", "configmaps", "-n", namespace, kubeconfig=config)

    def listed_as_that_user() -> bool:
        return any(
            event.get("user", {}).get("username") == "bench-operator"
            and event.get("verb") == "list"
            and event.get("objectRef", {}).get("namespace") == namespace
            for event in control_plane.audit_events()
        )

    kube.eventually(listed_as_that_user, timeout=30, what="the list by bench-operator in the audit log")


def test_api_json_gets_a_decoded_object_as_admin(control_plane: kube.ControlPlane, namespace: str) -> None:
    found = control_plane.api_json(f"/api/v1/namespaces/{namespace}")
    assert found["kind"] == "Namespace" and found["metadata"]["name"] == namespace


def test_service_account_is_denied_by_rbac_until_a_role_grants_access(
    control_plane: kube.ControlPlane, kube_client: lightkube.Client, namespace: str
) -> None:
    kube_client.create(core.ServiceAccount(metadata=meta.ObjectMeta(name="nobody", namespace=namespace)))
    config = control_plane.service_account_kubeconfig(namespace=namespace, name="nobody")

    denied = control_plane.kubectl("get", "secrets", "-n", namespace, kubeconfig=config, check=False)
    assert denied.returncode != 0
    # Authenticated (the user name is known) but not authorized: a 403, not a 401.
    user = f"system:serviceaccount:{namespace}:nobody"
    assert f'User "{user}" cannot list resource "secrets"' in denied.stderr

    def denial_audited() -> bool:
        return any(
            event.get("user", {}).get("username") == user
            and event.get("responseStatus", {}).get("code") == 403
            and event.get("objectRef", {}).get("resource") == "secrets"
            for event in control_plane.audit_events()
        )

    kube.eventually(denial_audited, timeout=30, what="the 403 in the audit log")

    rbac = lightkube.models.rbac_v1
    kube_client.create(
        lightkube.resources.rbac_authorization_v1.Role(
            metadata=meta.ObjectMeta(name="read-secrets", namespace=namespace),
            rules=[rbac.PolicyRule(apiGroups=[""], resources=["secrets"], verbs=["list"])],
        )
    )
    kube_client.create(
        lightkube.resources.rbac_authorization_v1.RoleBinding(
            metadata=meta.ObjectMeta(name="read-secrets", namespace=namespace),
            roleRef=rbac.RoleRef(apiGroup="rbac.authorization.k8s.io", kind="Role", name="read-secrets"),
            subjects=[rbac.Subject(kind="ServiceAccount", name="nobody", namespace=namespace)],
        )
    )
    kube.eventually(
        lambda: (
            control_plane.kubectl(
                "get", "secrets", "-n", namespace, kubeconfig=config, check=False
            ).returncode
            == 0
        ),
        timeout=30,
        what="the RoleBinding to take effect",
    )
    still_denied = control_plane.kubectl("get", "configmaps", "-n", namespace, kubeconfig=config, check=False)
    assert "forbidden" in still_denied.stderr.lower()


def test_deleting_a_namespace_completes_through_the_namespace_controller(
    kube_client: lightkube.Client,
) -> None:
    name = "doomed-namespace"
    kube_client.create(core.Namespace(metadata=meta.ObjectMeta(name=name)))
    kube_client.create(
        core.ConfigMap(metadata=meta.ObjectMeta(name="content", namespace=name), data={"a": "b"})
    )
    kube_client.delete(core.Namespace, name)

    kube.eventually(lambda: _gone(kube_client, core.Namespace, name), timeout=90, what="namespace gone")


def test_garbage_collector_deletes_a_dependent_when_its_owner_goes(
    kube_client: lightkube.Client, namespace: str
) -> None:
    owner = kube_client.create(core.ConfigMap(metadata=meta.ObjectMeta(name="owner", namespace=namespace)))
    assert owner.metadata is not None and owner.metadata.uid is not None
    reference = meta.OwnerReference(apiVersion="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)
    kube_client.create(
        core.ConfigMap(
            metadata=meta.ObjectMeta(name="dependent", namespace=namespace, ownerReferences=[reference])
        )
    )
    kube_client.create(core.ConfigMap(metadata=meta.ObjectMeta(name="bystander", namespace=namespace)))

    kube_client.delete(core.ConfigMap, "owner", namespace=namespace)

    kube.eventually(
        lambda: _gone(kube_client, core.ConfigMap, "dependent", namespace=namespace),
        timeout=90,
        what="the dependent ConfigMap to be garbage-collected",
    )
    assert not _gone(kube_client, core.ConfigMap, "bystander", namespace=namespace)


def test_deployment_gets_a_replicaset_and_a_pending_pod(
    kube_client: lightkube.Client, namespace: str
) -> None:
    apps = lightkube.models.apps_v1
    models = lightkube.models.core_v1
    labels = {"app": "web"}
    kube_client.create(
        lightkube.resources.apps_v1.Deployment(
            metadata=meta.ObjectMeta(name="web", namespace=namespace),
            spec=apps.DeploymentSpec(
                replicas=1,
                selector=meta.LabelSelector(matchLabels=labels),
                template=models.PodTemplateSpec(
                    metadata=meta.ObjectMeta(labels=labels),
                    spec=models.PodSpec(
                        containers=[models.Container(name="web", image="example.invalid/web")]
                    ),
                ),
            ),
        )
    )

    pods = kube.eventually(
        lambda: list(kube_client.list(core.Pod, namespace=namespace, labels={"app": "web"})),
        timeout=60,
        what="the Deployment's Pod",
    )
    assert pods[0].status is not None and pods[0].status.phase == "Pending"  # no kubelet here


def test_marking_pods_ready_makes_their_deployment_available(
    control_plane: kube.ControlPlane, kube_client: lightkube.Client, namespace: str
) -> None:
    control_plane.kubectl("create", "deployment", "web", "--image=example.invalid/web", "-n", namespace)
    kube.eventually(
        lambda: control_plane.mark_pods_ready(namespace=namespace, selector="app=web"),
        timeout=60,
        what="a Pod to mark ready",
    )

    def available() -> bool:
        deployment = kube_client.get(lightkube.resources.apps_v1.Deployment, "web", namespace=namespace)
        assert deployment.status is not None
        return deployment.status.availableReplicas == 1 and deployment.status.readyReplicas == 1

    kube.eventually(available, timeout=60, what="the Deployment to count the Pod as available")


def test_stop_after_a_failed_start_leaves_no_process_and_no_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken_crd = tmp_path / "broken.yaml"
    broken_crd.write_text("apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nspec: {}\n")
    started: list[procs.Process] = []
    spawn = kube.ControlPlane._spawn

    def recording_spawn(self: kube.ControlPlane, name: str, argv: list[str]) -> procs.Process:
        process = spawn(self, name, argv)
        started.append(process)
        return process

    monkeypatch.setattr(kube.ControlPlane, "_spawn", recording_spawn)
    plane = kube.ControlPlane(crds=[broken_crd])

    with pytest.raises(AssertionError, match="kubectl apply"), plane:
        pytest.fail("the control plane started with a broken CRD")

    assert [process.name for process in started] == ["etcd", "kube-apiserver"]
    assert not any(_pid_exists(process.pid) for process in started)
    assert not plane.workdir.exists()


def test_a_claim_binds_to_a_volume_the_test_provides(
    control_plane: kube.ControlPlane, kube_client: lightkube.Client, namespace: str
) -> None:
    models = lightkube.models.core_v1
    kube_client.create(
        core.PersistentVolumeClaim(
            metadata=meta.ObjectMeta(name="data", namespace=namespace),
            spec=models.PersistentVolumeClaimSpec(
                accessModes=["ReadWriteOnce"],
                storageClassName="",
                resources=models.VolumeResourceRequirements(requests={"storage": "1Gi"}),
            ),
        )
    )
    control_plane.provide_volume(
        namespace=namespace, claim="data", size="1Gi", access_modes=["ReadWriteOnce"]
    )

    def bound() -> bool:
        claim = kube_client.get(core.PersistentVolumeClaim, "data", namespace=namespace)
        return claim.status is not None and claim.status.phase == "Bound"

    kube.eventually(bound, timeout=60, what="the claim to be bound by KCM")


def test_a_deleted_claim_does_not_hang_on_its_protection_finalizer(
    kube_client: lightkube.Client, namespace: str
) -> None:
    models = lightkube.models.core_v1
    claim = kube_client.create(
        core.PersistentVolumeClaim(
            metadata=meta.ObjectMeta(name="scratch", namespace=namespace),
            spec=models.PersistentVolumeClaimSpec(
                accessModes=["ReadWriteOnce"],
                resources=models.VolumeResourceRequirements(requests={"storage": "1Gi"}),
            ),
        )
    )
    assert claim.metadata is not None and "kubernetes.io/pvc-protection" in (claim.metadata.finalizers or [])

    kube_client.delete(core.PersistentVolumeClaim, "scratch", namespace=namespace)

    kube.eventually(
        lambda: _gone(kube_client, core.PersistentVolumeClaim, "scratch", namespace=namespace),
        timeout=60,
        what="the claim to be deleted (KCM removes the pvc-protection finalizer)",
    )


def test_a_missing_binary_fails_with_the_command_that_builds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setattr(tests.support, "tools_bin", lambda: tmp_path)
    plane = kube.ControlPlane()

    with pytest.raises(FileNotFoundError, match=r"etcd is missing: run `bash hack/tools.sh`"), plane:
        pytest.fail("the control plane started without binaries")

    assert plane.workdir == Path()  # nothing was created on disk


def test_the_planes_ports_are_reserved_while_it_runs_and_released_when_it_stops() -> None:
    with kube.ControlPlane(with_controller_manager=False) as plane:
        assert plane.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
        port = plane.api_port
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other, pytest.raises(OSError) as taken:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            other.bind(("127.0.0.1", port))
        assert taken.value.errno == errno.EADDRINUSE

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as after:
        after.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        after.bind(("127.0.0.1", port))
