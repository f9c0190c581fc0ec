"""Steady state: once converged, the operator's periodic passes write nothing.

Covers:
- across several passes with nothing changed (the resync loop's, counted in the API server's audit log,
  not in the operator's), no child and not the registry's status is rewritten (resourceVersions stay),
  conditions keep their lastTransitionTime, and no Event is posted; the same holds for a registry stuck on
  a missing Secret;
- a CA shorter-lived than the certificate's renewal window does not make the operator reissue
  the certificate (and roll the pods) on every pass;
- a hand-corrupted serving certificate or htpasswd Secret is repaired;
- drift no watch event reports (a child edited so that it no longer carries the managed-by label the child
  watches select on) is corrected by the operator-wide resync loop;
- the operator writes nothing of kopf's to a registry: no finalizer, no last-handled-configuration or
  progress annotations; the finalizer earlier versions added (`dockyard.dev/timers`) is removed.
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
from tests.integration.operator import cluster
from tests.integration.operator.conftest import Operator
from tests.support import kube

pytestmark = pytest.mark.integration

core = lightkube.resources.core_v1
apps = lightkube.resources.apps_v1
MERGE = lightkube.types.PatchType.MERGE
N = names.Names.of("demo")


def _versions(client: lightkube.Client, namespace: str) -> dict[str, str]:
    children: list[tuple[Any, str]] = [
        (core.Secret, N.ca_secret),
        (core.Secret, N.tls_secret),
        (core.Secret, N.htpasswd_secret),
        (core.ConfigMap, N.nginx_configmap),
        (core.ConfigMap, N.maintenance_configmap),
        (core.PersistentVolumeClaim, N.pvc),
        (core.Service, N.service),
        (core.Service, N.metrics_service),
        (apps.Deployment, N.deployment),
    ]
    found = {
        f"{resource.__name__}/{name}": client.get(
            resource, name, namespace=namespace
        ).metadata.resourceVersion
        for resource, name in children
    }
    registry = client.get(cluster.PrivateRegistry, "demo", namespace=namespace)
    found["PrivateRegistry/demo"] = registry["metadata"]["resourceVersion"]
    return found


def _event_count(client: lightkube.Client, namespace: str) -> int:
    """Events about namespace/demo, counting repeats the API server folded into one object."""
    return sum(event.count or 1 for event in cluster.events_for(client, namespace, "demo"))


def _serial(client: lightkube.Client, namespace: str) -> int:
    data = cluster.secret_data(client.get(core.Secret, N.tls_secret, namespace=namespace))
    return int(x509.load_pem_x509_certificate(data["tls.crt"]).serial_number)


def test_periodic_passes_over_a_converged_registry_write_nothing(
    control_plane: kube.ControlPlane, kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    cluster.create_registry(
        kube_client,
        namespace=namespace,
        spec={"auth": {"users": [cluster.user("alice", "alice-password")]}},
        passwords={"alice": "alice-Steady-pw-17"},
    )
    cluster.wait_condition(kube_client, "demo", namespace, "CertificateReady", "True")
    # Converged: one full pass after creation, and node trust's status refresh that follows it.
    cluster.await_passes(control_plane, user=operator.username, namespace=namespace, count=1)
    cluster.wait_published(kube_client, "demo", namespace)
    before = _versions(kube_client, namespace)
    conditions = cluster.status_of(kube_client.get(cluster.PrivateRegistry, "demo", namespace=namespace))

    events = _event_count(kube_client, namespace)

    cluster.await_passes(control_plane, user=operator.username, namespace=namespace, count=2)

    assert _versions(kube_client, namespace) == before
    after = cluster.status_of(kube_client.get(cluster.PrivateRegistry, "demo", namespace=namespace))
    assert after["conditions"] == conditions["conditions"]
    assert _event_count(kube_client, namespace) == events


def test_a_registry_stuck_on_a_missing_secret_does_not_repeat_itself_every_pass(
    control_plane: kube.ControlPlane, kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    spec = {"auth": {"users": [cluster.user("hank", "hank-password")]}}
    cluster.create_registry(kube_client, namespace=namespace, spec=spec)
    cluster.wait_condition(
        kube_client, "demo", namespace, "Ready", "False", match=lambda c: "hank-password" in c["message"]
    )
    cluster.await_passes(control_plane, user=operator.username, namespace=namespace, count=1)
    version = kube_client.get(cluster.PrivateRegistry, "demo", namespace=namespace)["metadata"][
        "resourceVersion"
    ]
    events = _event_count(kube_client, namespace)

    cluster.await_passes(control_plane, user=operator.username, namespace=namespace, count=2)

    registry = kube_client.get(cluster.PrivateRegistry, "demo", namespace=namespace)
    assert registry["metadata"]["resourceVersion"] == version, "the status was rewritten on a no-op pass"
    assert _event_count(kube_client, namespace) == events, "an Event was posted again on a no-op pass"


def test_a_short_lived_ca_does_not_make_every_pass_reissue_the_certificate(
    control_plane: kube.ControlPlane, kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    # The CA lives 2 h; the certificate wants 90 days and renewal 30 days before expiry. A
    # certificate cannot outlive its CA, so it is always "inside its renewal window".
    spec = {"tls": {"caDuration": "2h", "certDuration": "2160h", "renewBefore": "720h"}}
    cluster.create_registry(kube_client, namespace=namespace, spec=spec)
    cluster.wait_child(kube_client, apps.Deployment, N.deployment, namespace)
    cluster.await_passes(control_plane, user=operator.username, namespace=namespace, count=1)
    serial = _serial(kube_client, namespace)
    template: Any = kube_client.get(apps.Deployment, N.deployment, namespace=namespace)
    annotations = template.spec.template.metadata.annotations

    cluster.await_passes(control_plane, user=operator.username, namespace=namespace, count=2)

    assert _serial(kube_client, namespace) == serial, "the certificate was reissued on a no-op pass"
    deployment: Any = kube_client.get(apps.Deployment, N.deployment, namespace=namespace)
    assert deployment.spec.template.metadata.annotations == annotations, "the pods rolled on a no-op pass"


def test_a_corrupted_certificate_and_htpasswd_are_repaired(
    control_plane: kube.ControlPlane, kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    cluster.create_registry(
        kube_client,
        namespace=namespace,
        spec={"auth": {"users": [cluster.user("alice", "alice-password")]}},
        passwords={"alice": "alice-Repair-pw-18"},
    )
    cluster.wait_condition(kube_client, "demo", namespace, "CertificateReady", "True")
    patch = functools.partial(kube_client.patch, namespace=namespace, patch_type=MERGE)

    patch(core.Secret, N.tls_secret, {"stringData": {"tls.crt": "not a certificate"}})
    patch(core.Secret, N.htpasswd_secret, {"stringData": {"htpasswd": "mallory:plaintext\n"}})

    def certificate_repaired() -> bool:
        try:
            return _serial(kube_client, namespace) > 0
        except ValueError:  # still the corrupted text
            return False

    kube.eventually(certificate_repaired, what="a parseable certificate again")

    def htpasswd_repaired() -> bool:
        data = cluster.secret_data(kube_client.get(core.Secret, N.htpasswd_secret, namespace=namespace))
        file = apache.HtpasswdFile.from_string(data["htpasswd"])
        return file.users() == ["alice"] and bool(file.check_password("alice", "alice-Repair-pw-18"))

    kube.eventually(htpasswd_repaired, what="the htpasswd Secret to be repaired")


def test_the_resync_loop_corrects_drift_no_watch_event_reports(
    kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    cluster.create_registry(kube_client, namespace=namespace)
    cluster.wait_condition(kube_client, "demo", namespace, "CertificateReady", "True")
    configmap = cluster.wait_child(kube_client, core.ConfigMap, N.nginx_configmap, namespace)
    data = dict(configmap.data or {})
    key = sorted(data)[0]

    # Without the managed-by label the child watch's selector no longer matches: no event handler runs,
    # only the periodic pass (every 3 s in this suite) can see the drift.
    kube_client.patch(
        core.ConfigMap,
        N.nginx_configmap,
        {"metadata": {"labels": {names.LABEL_MANAGED_BY: None}}, "data": {key: "# edited by hand"}},
        namespace=namespace,
        patch_type=MERGE,
    )

    def repaired() -> bool:
        live = kube_client.get(core.ConfigMap, N.nginx_configmap, namespace=namespace)
        labels = (live.metadata.labels if live.metadata else None) or {}
        return labels.get(names.LABEL_MANAGED_BY) == names.MANAGED_BY and dict(live.data or {}) == data

    kube.eventually(repaired, what="the nginx ConfigMap's label and data restored by the resync loop")


def test_kopf_writes_nothing_to_a_registry(
    control_plane: kube.ControlPlane, kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    cluster.create_registry(kube_client, namespace=namespace)
    cluster.wait_condition(kube_client, "demo", namespace, "CertificateReady", "True")
    cluster.await_passes(control_plane, user=operator.username, namespace=namespace, count=1)

    meta = kube_client.get(cluster.PrivateRegistry, "demo", namespace=namespace)["metadata"]
    assert not meta.get("finalizers")
    assert not [key for key in meta.get("annotations") or {} if key.startswith(f"{names.GROUP}/")]

    # The finalizer earlier versions had kopf add for their per-registry timer is taken off a live registry.
    kube_client.patch(
        cluster.PrivateRegistry,
        "demo",
        {"metadata": {"finalizers": [f"{names.GROUP}/timers"]}},
        namespace=namespace,
        patch_type=MERGE,
    )
    kube.eventually(
        lambda: (
            not kube_client.get(cluster.PrivateRegistry, "demo", namespace=namespace)["metadata"].get(
                "finalizers"
            )
        ),
        what="the legacy dockyard.dev/timers finalizer to be removed",
    )
