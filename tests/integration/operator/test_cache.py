"""The watch-fed cache (`cache.py`) against the real API server: kopf's events keep it, and a pass an event
brings reads its children and its password Secret from it.

Covers:
- once a registry converged, an edit of its password Secret that keeps the password (a label) brings a pass
  that GETs none of the registry's children nor the Secret (the API server's audit log: between that pass's
  read of the registry and the next pass's, no other GET in the namespace); the operator's metrics count
  the cache's answers;
- a Service deleted by hand is restored, and kopf's index handlers feeding the cache never failed (the
  operator's log).
"""

from __future__ import annotations

import urllib.request
from typing import Any

import lightkube
import lightkube.resources.core_v1
import pytest

from dockyard_operator import names
from tests.integration.operator import cluster
from tests.integration.operator.conftest import Operator
from tests.support import kube

pytestmark = pytest.mark.integration

core = lightkube.resources.core_v1
N = names.Names.of("demo")


def _windows(plane: kube.ControlPlane, *, user: str, namespace: str, since: int) -> list[list[str]]:
    """The operator's GETs in `namespace` after `since`, cut into one list per pass: each pass begins with
    its GET of the registry and ends where the next one begins (the last, unfinished one is left out)."""
    windows: list[list[str]] = []
    for event in plane.audit_events(since=since):
        ref = event.get("objectRef") or {}
        if (
            event.get("verb") != "get"
            or event.get("user", {}).get("username") != user
            or ref.get("namespace") != namespace
        ):
            continue
        if ref.get("resource") == names.PLURAL and not ref.get("subresource"):
            windows.append([])
        elif windows:
            windows[-1].append(f"{ref.get('resource')}/{ref.get('name')}")
    return windows[:-1]


def _cache_reads(operator: Operator) -> dict[str, float]:
    with urllib.request.urlopen(operator.metrics, timeout=10) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("dockyard_operator_cache_reads_total{"):
            answer = line.split('answer="', 1)[1].split('"', 1)[0]
            found[answer] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("dockyard_operator_cache_objects "):
            found["objects"] = float(line.rsplit(" ", 1)[1])
    return found


def test_a_pass_an_event_brings_reads_the_children_from_the_cache(
    control_plane: kube.ControlPlane, kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    cluster.create_registry(
        kube_client,
        namespace=namespace,
        spec={"auth": {"users": [cluster.user("alice", "alice-password")]}},
        passwords={"alice": "alice-Cached-pw-31"},
    )
    cluster.wait_condition(kube_client, "demo", namespace, "CertificateReady", "True")
    cluster.await_passes(control_plane, user=operator.username, namespace=namespace, count=1)
    since = control_plane.audit_offset()

    # Twice: a Secret event arriving while a timer's pass waits for its turn is covered by that pass.
    for touch in ("once", "twice"):
        secret: Any = kube_client.get(core.Secret, "alice-password", namespace=namespace)
        secret.metadata.labels = {**(secret.metadata.labels or {}), "touched": touch}
        kube_client.replace(secret)
        cluster.await_passes(control_plane, user=operator.username, namespace=namespace, count=1)
    cluster.await_passes(control_plane, user=operator.username, namespace=namespace, count=3, since=since)

    windows = _windows(control_plane, user=operator.username, namespace=namespace, since=since)
    assert [] in windows, f"every pass GET children: {windows}"  # the Secret's event brought one from memory
    reads = _cache_reads(operator)
    assert reads.get("memory", 0) > 0 and reads.get("api", 0) > 0 and reads.get("objects", 0) > 0, reads


def test_a_deleted_service_is_restored_and_the_cache_was_fed_without_errors(
    kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    offset = operator.offset()
    cluster.create_registry(
        kube_client,
        namespace=namespace,
        spec={"auth": {"users": [cluster.user("bob", "bob-password")]}},
        passwords={"bob": "bob-Cached-pw-32"},
    )
    cluster.wait_condition(kube_client, "demo", namespace, "CertificateReady", "True")
    uid = kube_client.get(core.Service, N.service, namespace=namespace).metadata.uid
    kube_client.delete(core.Service, N.service, namespace=namespace)

    def recreated() -> bool:
        if cluster.absent(kube_client, core.Service, N.service, namespace):
            return False
        return bool(kube_client.get(core.Service, N.service, namespace=namespace).metadata.uid != uid)

    kube.eventually(recreated, what="the Service recreated")
    failed = [
        line
        for line in operator.output(since=offset).splitlines()
        if "'cache_" in line and ("failed" in line or "rror" in line)
    ]
    assert failed == []
