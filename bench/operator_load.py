"""Workload 7: the operator against a real kube-apiserver (etcd + kube-apiserver, `tests/support/kube.py`).

Measures the time from applying 1, then N `PrivateRegistry` objects (each with one push user whose password
comes from a Secret) until every one of them has all its children and a current status, and the operator's
peak resident memory. "Current status" is `status.observedGeneration == metadata.generation`: the operator
writes status only after its pass applied every child, and its last child is the Deployment, which is
checked too. The operator runs as the chart runs it (`python -m dockyard_operator`), with production
settings (bcrypt cost 12), so hashing each registry's user is part of what is measured.

Owns: the control plane's lifetime for this workload, the objects it applies, and the polling.
Must not: leave the operator or the control plane running, or know how the operator builds its children.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.support import kube

from bench import procs, servers
from dockyard_operator import names

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT / "crds" / "privateregistries.dockyard.dev.yaml"
CONVERGE_TIMEOUT = 300.0
START_TIMEOUT = 90.0


def _manifests(*, namespace: str, count: int) -> str:
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "pusher-password", "namespace": namespace},
            "type": "Opaque",
            "stringData": {"password": os.urandom(18).hex()},
        },
    ]
    docs += [
        {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "metadata": {"name": f"reg-{i:03d}", "namespace": namespace},
            "spec": {
                "auth": {
                    "users": [
                        {"name": "pusher", "access": "push", "passwordSecretRef": {"name": "pusher-password"}}
                    ]
                }
            },
        }
        for i in range(count)
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})


def _converged(plane: kube.ControlPlane, *, namespace: str, count: int) -> bool:
    registries = json.loads(plane.kubectl("get", names.PLURAL, "-n", namespace, "-o", "json").stdout)["items"]
    deployments = {
        d["metadata"]["name"]
        for d in json.loads(plane.kubectl("get", "deployments", "-n", namespace, "-o", "json").stdout)[
            "items"
        ]
    }
    done = [
        r
        for r in registries
        if (r.get("status") or {}).get("observedGeneration") == r["metadata"]["generation"]
        and names.Names.of(r["metadata"]["name"]).deployment in deployments
    ]
    return len(done) == count


def _time_batch(plane: kube.ControlPlane, operator: procs.Proc, *, namespace: str, count: int) -> float:
    """Seconds from `kubectl apply` of `count` registries until all have children and a current status."""
    start = time.perf_counter()
    plane.kubectl("apply", "-f", "-", input=_manifests(namespace=namespace, count=count))
    deadline = start + CONVERGE_TIMEOUT
    while not _converged(plane, namespace=namespace, count=count):
        operator.check_alive()
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{count} registries in {namespace} not converged after {CONVERGE_TIMEOUT}s")
        time.sleep(0.1)
    return time.perf_counter() - start


def _wait_served(plane: kube.ControlPlane) -> None:
    """Wait until the API server serves the fresh CRD's storage.

    Right after a CRD is created the API server answers 429 "storage is (re)initializing" for a moment; the
    operator's first watch then backs off for a second or more, which would be timed as the first object's
    reconcile. A cluster a user installs into has long passed that point.
    """
    deadline = time.monotonic() + START_TIMEOUT
    while plane.kubectl("get", names.PLURAL, "-A", check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{names.PLURAL} not served after {START_TIMEOUT}s")
        time.sleep(0.2)


def _wait_healthy(operator: procs.Proc, url: str) -> None:
    import urllib.request

    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        operator.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310  # http://127.0.0.1 built here
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"operator not healthy after {START_TIMEOUT}s:\n{procs.tail(operator.log)}")


def run(*, workdir: Path, objects: int) -> dict[str, float]:
    """Run workload 7; returns operator_1 (s), operator_<objects> (s) and operator_rss (MB)."""
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, float] = {}
    with kube.ControlPlane(crds=[CRD], with_controller_manager=False, workdir=workdir / "plane") as plane:
        _wait_served(plane)
        liveness = f"http://127.0.0.1:{servers.free_port()}/healthz"
        operator = procs.Proc(
            name="dockyard-operator",
            argv=[sys.executable, "-m", "dockyard_operator", "--liveness", liveness],
            log=workdir / "operator.log",
            env={**os.environ, "KUBECONFIG": str(plane.kubeconfig), "PYTHONUNBUFFERED": "1"},
        )
        try:
            _wait_healthy(operator, liveness)
            # kopf is healthy before it has discovered the CRD and opened its watch; the first object after
            # a start waits for that (~2 s here). Timed apart: the target is a running operator's latency.
            cold = _time_batch(plane, operator, namespace="bench-warmup", count=1)
            print(f"  operator: first object after start (watch not yet open) in {cold:.2f} s", flush=True)
            results["operator_1"] = _time_batch(plane, operator, namespace="bench-one", count=1)
            print(f"  operator: 1 object in {results['operator_1']:.2f} s", flush=True)
            key = "operator_100" if objects == 100 else f"operator_{objects}"
            results[key] = _time_batch(plane, operator, namespace="bench-many", count=objects)
            print(f"  operator: {objects} objects in {results[key]:.2f} s", flush=True)
            results["operator_rss"] = operator.peak_rss_bytes() / 1e6
        finally:
            operator.stop()
            subprocess.run(["sync"], check=False)
    return results
