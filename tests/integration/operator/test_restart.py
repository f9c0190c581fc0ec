"""Operator downtime and its packaged entry point, against the real API server.

Covers:
- the operator stops cleanly on SIGTERM (exit code 0);
- what changed while it was down (a rotated password, a deleted child, a new replica count) is
  reconciled when it comes back (every registry gets a pass on the start's listing), by the packaged
  `python -m dockyard_operator` entry point the image runs, which serves its metrics on `--metrics-listen`;
- nothing is rewritten on a restart when nothing changed: children keep their resourceVersion;
- a registry created while the operator was down converges when it returns;
- a registry an earlier version left holding kopf's timer finalizer (`dockyard.dev/timers`), deleted while the
  operator was down, is released when it returns (kopf drops the finalizer nothing needs any more) and its
  children collected;
- the operator survives a kube-apiserver restart and keeps reacting to new registries and to
  deleted children (its watches reconnect).

The session's operator is stopped for these tests and restarted (as `kopf run`) at the end.
"""

from __future__ import annotations

import collections.abc
import functools
import urllib.request
from typing import Any

import lightkube
import lightkube.resources.apps_v1
import lightkube.resources.core_v1
import lightkube.types
import pytest
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
LEGACY_FINALIZER = f"{names.GROUP}/timers"


@pytest.fixture
def restarted(operator: Operator) -> collections.abc.Iterator[Operator]:
    """The operator; whatever a test does to it, the session's `kopf run` operator runs afterwards."""
    yield operator
    assert operator.process is not None
    if operator.process.alive():
        assert operator.stop() == 0
    operator.start()


def _children(client: lightkube.Client, namespace: str) -> dict[str, str]:
    found: dict[str, str] = {}
    children: list[tuple[Any, str]] = [
        (core.Secret, N.tls_secret),
        (core.Secret, N.htpasswd_secret),
        (core.ConfigMap, N.nginx_configmap),
        (core.Service, N.service),
        (apps.Deployment, N.deployment),
    ]
    for resource, name in children:
        child: Any = client.get(resource, name, namespace=namespace)
        found[f"{resource.__name__}/{name}"] = child.metadata.resourceVersion
    return found


def test_changes_made_while_the_operator_was_down_are_reconciled_when_it_returns(
    kube_client: lightkube.Client, namespace: str, restarted: Operator
) -> None:
    spec = {
        "auth": {"users": [cluster.user("alice", "alice-password", access="push")]},
        "storage": {"pvc": {"accessModes": ["ReadWriteMany"]}},
    }
    cluster.create_registry(
        kube_client, namespace=namespace, spec=spec, passwords={"alice": "alice-Down-pw-14"}
    )
    old_service = cluster.wait_child(kube_client, core.Service, N.service, namespace)
    cluster.wait_condition(kube_client, "demo", namespace, "CertificateReady", "True")

    assert restarted.stop() == 0
    kube_client.patch(
        core.Secret,
        "alice-password",
        {"stringData": {"password": "alice-Back-pw-15"}},
        namespace=namespace,
        patch_type=MERGE,
    )
    kube_client.delete(core.Service, N.service, namespace=namespace)
    kube_client.patch(
        cluster.PrivateRegistry, "demo", {"spec": {"replicas": 2}}, namespace=namespace, patch_type=MERGE
    )
    restarted.start(entrypoint=True)

    def htpasswd() -> apache.HtpasswdFile:
        data = cluster.secret_data(kube_client.get(core.Secret, N.htpasswd_secret, namespace=namespace))
        return apache.HtpasswdFile.from_string(data["htpasswd"])

    kube.eventually(
        lambda: htpasswd().check_password("alice", "alice-Back-pw-15"), what="the rotated password"
    )
    kube.eventually(
        lambda: (
            cluster.get(kube_client, core.Service, N.service, namespace).metadata.uid
            != old_service.metadata.uid
        ),
        what="the Service to be recreated",
    )
    kube.eventually(
        lambda: kube_client.get(apps.Deployment, N.deployment, namespace=namespace).spec.replicas == 2,
        what="2 replicas",
    )
    with urllib.request.urlopen(restarted.metrics, timeout=10) as response:  # noqa: S310 - loopback URL
        assert b"dockyard_operator_reconcile_duration_seconds" in response.read()


def test_a_restart_with_nothing_changed_rewrites_nothing(
    control_plane: kube.ControlPlane, kube_client: lightkube.Client, namespace: str, restarted: Operator
) -> None:
    cluster.create_registry(kube_client, namespace=namespace, passwords={"alice": "alice-Same-pw-16"})
    cluster.wait_child(kube_client, apps.Deployment, N.deployment, namespace)
    cluster.wait_condition(kube_client, "demo", namespace, "CertificateReady", "True")
    before = kube.eventually(lambda: _children(kube_client, namespace), what="every child")

    assert restarted.stop() == 0
    since = control_plane.audit_offset()
    restarted.start()

    # The restarted operator's first pass (the start's listing) and the resync loop's after it have finished.
    cluster.await_passes(control_plane, user=restarted.username, namespace=namespace, count=2, since=since)
    assert _children(kube_client, namespace) == before


def test_a_registry_created_while_the_operator_was_down_converges_when_it_returns(
    kube_client: lightkube.Client, namespace: str, restarted: Operator
) -> None:
    assert restarted.stop() == 0
    cluster.create_registry(
        kube_client,
        namespace=namespace,
        spec={"auth": {"users": [cluster.user("alice", "alice-password")]}},
        passwords={"alice": "alice-Late-pw-19"},
    )
    restarted.start()

    cluster.wait_child(kube_client, apps.Deployment, N.deployment, namespace)
    cluster.wait_condition(kube_client, "demo", namespace, "CertificateReady", "True")
    registry = kube_client.get(cluster.PrivateRegistry, "demo", namespace=namespace)
    assert cluster.status_of(registry)["observedGeneration"] == registry["metadata"]["generation"]
    assert not registry["metadata"].get("finalizers"), "the operator added a finalizer"


def test_a_registry_held_by_the_legacy_timer_finalizer_and_deleted_while_down_goes_away(
    kube_client: lightkube.Client, namespace: str, restarted: Operator
) -> None:
    cluster.create_registry(kube_client, namespace=namespace)
    cluster.wait_child(kube_client, apps.Deployment, N.deployment, namespace)

    assert restarted.stop() == 0
    # What earlier operator versions left on every registry: kopf's finalizer for the per-registry timer.
    kube_client.patch(
        cluster.PrivateRegistry,
        "demo",
        {"metadata": {"finalizers": [LEGACY_FINALIZER]}},
        namespace=namespace,
        patch_type=MERGE,
    )
    kube_client.delete(cluster.PrivateRegistry, "demo", namespace=namespace)
    held = kube_client.get(cluster.PrivateRegistry, "demo", namespace=namespace)
    assert held["metadata"].get("deletionTimestamp"), "the legacy finalizer did not hold the registry"
    restarted.start()

    kube.eventually(
        functools.partial(cluster.absent, kube_client, cluster.PrivateRegistry, "demo", namespace),
        what="the registry to be deleted (the legacy finalizer released)",
    )
    kube.eventually(
        functools.partial(cluster.absent, kube_client, apps.Deployment, N.deployment, namespace),
        timeout=90,
        what="its Deployment to be garbage-collected",
    )


def test_the_operator_keeps_reconciling_across_an_api_server_restart(
    control_plane: kube.ControlPlane, kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    cluster.create_registry(kube_client, namespace=namespace, name="before")
    cluster.wait_child(kube_client, apps.Deployment, names.Names.of("before").deployment, namespace)

    control_plane.restart_apiserver()

    operator.check_alive()
    cluster.create_registry(kube_client, namespace=namespace, name="after")
    cluster.wait_child(
        kube_client, apps.Deployment, names.Names.of("after").deployment, namespace, timeout=120
    )
    kube_client.delete(core.Service, names.Names.of("before").service, namespace=namespace)
    cluster.wait_child(kube_client, core.Service, names.Names.of("before").service, namespace, timeout=120)
