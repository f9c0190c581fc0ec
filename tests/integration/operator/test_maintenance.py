"""Day 2 against the real kube-apiserver: online gc in status, storage fill in conditions, retained claims.

The registry pod is played by `tests/support/podrunner.py` from the Deployment the operator wrote (the real
`dockyard-registry serve` with the operator's arguments and the mounted `<name>-maintenance` retention file,
the real nginx with its probes' paths). This cluster has no pod network, so the operator of this module runs
with `DOCKYARD_METRICS_URL_OVERRIDE` pointing at the loopback port the pod's metrics port (9102) is mapped to;
it replaces the session's admin operator while the module runs (`admin_operator_stopped`).

Covers:
- spec.maintenance.schedule set: the registry runs gc on it, status.maintenance.lastRun appears (time,
  counts, dryRun), status.storage shows capacity and use, StorageReady is True, one GarbageCollected Event
  per run;
- over the fill threshold (`maxFillPercent` below the real filesystem's fill, no root mounts needed): nginx's
  /readyz (the readiness probe) fails while /healthz (liveness) answers, StorageReady False/StorageFull and
  Degraded; raising the threshold (a new pod, as a rollout makes it) turns readiness back and the condition to
  StorageAlmostFull with almostFullPercent below the fill;
- deletionPolicy Retain (the default): the claim has no owner reference and is labelled; `kubectl delete preg`
  leaves it, a registry of the same name uses the very same claim again; an owner reference someone else put
  on it is dropped; switching to Delete adds the owner reference, back to Retain drops it, and with Delete
  deleting the registry garbage-collects the claim.
"""

from __future__ import annotations

import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import lightkube
import lightkube.resources.apps_v1
import lightkube.resources.core_v1
import lightkube.types
import pytest

from dockyard_operator import names
from tests.integration.operator import cluster
from tests.integration.operator import conftest as operator_conftest
from tests.support import kube, podrunner, procs

pytestmark = pytest.mark.integration

core = lightkube.resources.core_v1
apps = lightkube.resources.apps_v1
MERGE = lightkube.types.PatchType.MERGE
JSON = lightkube.types.PatchType.JSON
N = names.Names.of("demo")


def _fill_percent(path: Path) -> float:
    """The filesystem's fill as the registry computes it (statvfs: blocks vs. blocks available to users)."""
    fs = os.statvfs(path)
    total, free = fs.f_blocks * fs.f_frsize, fs.f_bavail * fs.f_frsize
    return 100.0 * (total - free) / total


def _registry(client: lightkube.Client, namespace: str) -> Any:
    return client.get(cluster.PrivateRegistry, "demo", namespace=namespace)


def _status(client: lightkube.Client, namespace: str) -> dict[str, Any]:
    return cluster.status_of(_registry(client, namespace))


def _pod(
    client: lightkube.Client, namespace: str, root: Path, metrics_port: procs.Port, *, generation: int
) -> podrunner.PodRunner:
    """The registry pod of the Deployment the operator wrote for `generation` of the registry's spec."""

    def template() -> dict[str, Any] | None:
        registry = _registry(client, namespace)
        if cluster.status_of(registry).get("observedGeneration") != generation:
            return None
        deployment: Any = client.get(apps.Deployment, N.deployment, namespace=namespace)
        return dict(deployment.to_dict()["spec"]["template"])

    found = kube.eventually(template, what=f"the Deployment for generation {generation}")
    return podrunner.PodRunner(
        template=found,
        namespace=namespace,
        client=client,
        root=root,
        extra_ports=[5000],
        ports={names.METRICS_PORT: metrics_port.number},
    )


def _get(pod: podrunner.PodRunner, path: str) -> int:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # as kubelet's probes
    url = f"https://127.0.0.1:{pod.port(5443)}{path}"
    try:
        with urllib.request.urlopen(url, context=context, timeout=5) as response:  # loopback
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


def test_scheduled_gc_shows_its_last_run_and_the_volume_in_status(
    kube_client: lightkube.Client,
    namespace: str,
    observing_operator: operator_conftest.Operator,
    metrics_port: procs.Port,
    tmp_path: Path,
) -> None:
    spec = {
        "storage": {"emptyDir": {}, "almostFullPercent": 100, "maxFillPercent": 100},
        "maintenance": {
            "schedule": "@every 1s",
            "gracePeriod": "1s",
            "deleteUntagged": True,
            "retention": [{"repositories": ["**"], "keepLast": 2}],
        },
    }
    cluster.create_registry(kube_client, namespace=namespace, spec=spec)
    retention: Any = cluster.wait_child(kube_client, core.ConfigMap, N.maintenance_configmap, namespace)
    assert '"keepLast": 2' in retention.data["retention.json"]
    with _pod(kube_client, namespace, tmp_path / "pod", metrics_port, generation=1) as pod:
        argv = pod.container("registry").argv
        assert argv[argv.index("--gc-schedule") + 1] == "@every 1s" and "--gc-delete-untagged" in argv

        def last_run() -> dict[str, Any] | None:
            return (_status(kube_client, namespace).get("maintenance") or {}).get("lastRun")

        run = kube.eventually(last_run, timeout=60, what="status.maintenance.lastRun")
        assert run["time"] and run["dryRun"] is False and run["errors"] == 0
        assert run["manifestsDeleted"] == 0 and run["bytesFreed"] == 0  # an empty registry
        assert _status(kube_client, namespace)["maintenance"]["schedule"] == "@every 1s"
        storage = _status(kube_client, namespace)["storage"]
        assert storage["capacityBytes"] > storage["usedBytes"] > 0 and storage["writable"] is True
        ready = cluster.wait_condition(kube_client, "demo", namespace, "StorageReady", "True")
        assert ready["reason"] == "StorageOK"

        def reported() -> list[Any]:
            return [
                e
                for e in cluster.events_for(kube_client, namespace, "demo")
                if e.reason == "GarbageCollected"
            ]

        # A run a second: the runs keep coming, each reported once (an Event per new lastRun time).
        events = kube.eventually(lambda: reported() if len(reported()) >= 2 else None, what="two gc Events")
        assert all(e.message.startswith("gc deleted 0 tags, 0 manifests, 0 blobs") for e in events)
        assert len({e.message for e in events}) >= 1 and len(events) == len({e.metadata.name for e in events})


def test_storage_over_the_fill_threshold_makes_the_pod_unready_and_turns_the_condition(
    kube_client: lightkube.Client,
    namespace: str,
    observing_operator: operator_conftest.Operator,
    metrics_port: procs.Port,
    tmp_path: Path,
) -> None:
    fill = _fill_percent(tmp_path)
    if fill < 2:
        pytest.fail(f"the test filesystem is only {fill:.1f}% full: no threshold below it to test with")
    below = max(1, int(fill) - 1)
    spec = {"storage": {"emptyDir": {}, "almostFullPercent": below, "maxFillPercent": below}}
    cluster.create_registry(kube_client, namespace=namespace, spec=spec)
    full = _pod(kube_client, namespace, tmp_path / "pod", metrics_port, generation=1)
    try:
        full.start(wait=False)  # its readiness probe must fail
        kube.eventually(lambda: _get(full, "/healthz") == 200, what="liveness through nginx")
        kube.eventually(lambda: _get(full, "/readyz") == 503, what="readiness failing on a full volume")
        assert _get(full, "/healthz") == 200  # liveness never looks at storage
        condition = cluster.wait_condition(kube_client, "demo", namespace, "StorageReady", "False")
        assert condition["reason"] == "StorageFull" and f"maxFillPercent {below}" in condition["message"]
        degraded = cluster.wait_condition(kube_client, "demo", namespace, "Degraded", "True")
        assert degraded["reason"] == "StorageFull"
    finally:
        full.stop()
        full.close()

    kube_client.patch(
        cluster.PrivateRegistry,
        "demo",
        {"spec": {"storage": {"almostFullPercent": below, "maxFillPercent": 100}}},
        namespace=namespace,
        patch_type=MERGE,
    )
    with _pod(kube_client, namespace, tmp_path / "pod2", metrics_port, generation=2) as roomy:
        assert _get(roomy, "/readyz") == 200  # PodRunner waited for the readiness probe
        warned = cluster.wait_condition(
            kube_client,
            "demo",
            namespace,
            "StorageReady",
            "False",
            match=lambda c: c["reason"] == "StorageAlmostFull",
        )
        assert f"almostFullPercent {below}" in warned["message"]
        cluster.wait_condition(kube_client, "demo", namespace, "Degraded", "False")


def _claim(client: lightkube.Client, namespace: str) -> Any:
    return client.get(core.PersistentVolumeClaim, N.pvc, namespace=namespace)


def _owner_uids(claim: Any) -> list[str]:
    return [ref.uid for ref in claim.metadata.ownerReferences or []]


def test_a_retained_claim_outlives_its_registry_and_serves_the_next_one_of_that_name(
    kube_client: lightkube.Client, namespace: str, observing_operator: operator_conftest.Operator
) -> None:
    first = cluster.create_registry(kube_client, namespace=namespace, spec={})
    claim = cluster.wait_child(kube_client, core.PersistentVolumeClaim, N.pvc, namespace)
    assert _owner_uids(claim) == [] and claim.metadata.labels[names.RETAINED_FROM] == "demo"
    cluster.wait_child(kube_client, apps.Deployment, N.deployment, namespace)

    kube_client.delete(cluster.PrivateRegistry, "demo", namespace=namespace)
    # Garbage collection removes what the registry owned; the claim stays.
    kube.eventually(
        lambda: (
            cluster.absent(kube_client, apps.Deployment, N.deployment, namespace)
            and cluster.absent(kube_client, core.ConfigMap, N.maintenance_configmap, namespace)
        ),
        what="the owned children garbage-collected",
    )
    kept = _claim(kube_client, namespace)
    assert kept.metadata.uid == claim.metadata.uid and kept.metadata.deletionTimestamp is None

    second = cluster.create_registry(kube_client, namespace=namespace, spec={})
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    deployment: Any = cluster.wait_child(kube_client, apps.Deployment, N.deployment, namespace)
    volumes = {v.name: v for v in deployment.spec.template.spec.volumes}
    assert volumes["data"].persistentVolumeClaim.claimName == N.pvc
    assert _claim(kube_client, namespace).metadata.uid == claim.metadata.uid  # the very same claim

    # An owner reference someone else put there (an older operator's update) would let GC delete it: dropped.
    foreign_owner = {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "name": "demo",
        "uid": second["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    kube_client.patch(
        core.PersistentVolumeClaim,
        N.pvc,
        [{"op": "add", "path": "/metadata/ownerReferences", "value": [foreign_owner]}],
        namespace=namespace,
        patch_type=JSON,
    )
    kube.eventually(
        lambda: _owner_uids(_claim(kube_client, namespace)) == [], what="the owner reference dropped"
    )

    def switch(policy: str) -> None:
        kube_client.patch(
            cluster.PrivateRegistry,
            "demo",
            {"spec": {"storage": {"pvc": {"deletionPolicy": policy}}}},
            namespace=namespace,
            patch_type=MERGE,
        )

    switch("Delete")

    def owned_by_second() -> Any:
        found = _claim(kube_client, namespace)
        return found if _owner_uids(found) == [second["metadata"]["uid"]] else None

    owned = kube.eventually(owned_by_second, what="the claim owned by the registry")
    assert names.RETAINED_FROM not in (owned.metadata.labels or {})
    switch("Retain")
    kube.eventually(lambda: _owner_uids(_claim(kube_client, namespace)) == [], what="released again")
    switch("Delete")
    kube.eventually(lambda: _owner_uids(_claim(kube_client, namespace)) != [], what="owned again")
    kube_client.delete(cluster.PrivateRegistry, "demo", namespace=namespace)

    def gone_or_terminating() -> bool:
        if cluster.absent(kube_client, core.PersistentVolumeClaim, N.pvc, namespace):
            return True
        return _claim(kube_client, namespace).metadata.deletionTimestamp is not None

    kube.eventually(gone_or_terminating, what="the owned claim garbage-collected with its registry")
