"""Workload 7: the operator against a real kube-apiserver (etcd + kube-apiserver, `tests/support/kube.py`).

Measures, with the operator running as the chart runs it (`python -m dockyard_operator`, production settings
incl. bcrypt cost 12, so hashing each registry's user is part of what is measured):

- the time from applying 1, then N `PrivateRegistry` objects (each with one push user whose password comes
  from a Secret) until every one of them has all its children and a current status;
- the operator's peak resident memory (VmHWM) over the whole workload;
- the batch's cost: the API requests the operator makes from the create of the N objects until they all
  converged, per (verb, resource) and per object (a GET of the registry is one pass: every pass reads it
  once), counted from the API server's audit log; and the CPU seconds the operator, kube-apiserver and etcd
  used meanwhile, per object (from /proc: less sensitive to a busy machine than the wall time);
- the steady-state resync cost: once the N objects converged and nothing changes, the API requests the
  operator makes over `WINDOW_PERIODS` resync periods (`DOCKYARD_RESYNC_SECONDS`), counted from the audit
  log too, per object and period.

"Current status" is `status.observedGeneration == metadata.generation`, without Degraded=True (a pass records
its generation even when a child was refused, the API server's Service IP range full, say) and without a
condition still waiting for node trust to publish the registry's CA (the publisher's round brings one more
status write per registry); the Deployment (what runs the pods) is checked too.

Requests are told apart by user: the operator authenticates with a client certificate of its own
(`dockyard-operator`, in `system:masters`), the bench's polling as the admin. Writes are create, update,
patch, delete; reads are get and list (a watch is a long-running stream and counted apart). A LIST costs
the API server one object per item it returns, so the listed objects are estimated too: for every LIST in
the window, the number of objects of that resource in its namespace (or cluster-wide) at the end of the
window. It ignores label and field selectors, so it is an upper bound.

Owns: the control plane's lifetime for this workload, the objects it applies, the polling, the audit count.
Must not: leave the operator or the control plane running, or know how the operator builds its children.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from tests.support import kube
from tests.support import procs as support_procs

from bench import procs
from dockyard_operator import names
from dockyard_operator.conditions import Reason

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT / "crds" / "privateregistries.dockyard.dev.yaml"
START_TIMEOUT = 90.0
OPERATOR_USER = "dockyard-operator"
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
READ_VERBS = frozenset({"get", "list"})
# After convergence: let the last status writes' watch echoes and queued passes drain before the window.
SETTLE_SECONDS = 5.0
# Resync periods the steady-state window spans (see `measure_resync`).
WINDOW_PERIODS = 2
# Metadata only: the names of the Deployments without their specs, cheap to poll at 1,000 objects.
PARTIAL_METADATA = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
# The audit log's name for the registries: every reconcile pass GETs its registry once.
_REGISTRIES = f"{names.PLURAL}.{names.GROUP}"


def _converge_timeout(count: int) -> float:
    return max(300.0, 1.0 * count)


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
            "metadata": {"name": f"reg-{i:04d}", "namespace": namespace},
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
    registries = plane.api_json(f"/apis/{names.API_VERSION}/namespaces/{namespace}/{names.PLURAL}")["items"]
    listed = plane.api_json(f"/apis/apps/v1/namespaces/{namespace}/deployments", accept=PARTIAL_METADATA)
    deployments = {d["metadata"]["name"] for d in listed["items"] or []}  # null when there are none
    done = [
        r
        for r in registries
        if (r.get("status") or {}).get("observedGeneration") == r["metadata"]["generation"]
        and names.Names.of(r["metadata"]["name"]).deployment in deployments
        and not _unsettled(r)
    ]
    return len(done) == count


def _unsettled(registry: Mapping[str, Any]) -> bool:
    """A pass that could not write a child still records its generation, but says so in Degraded; one that
    handed its CA to node trust says it waits for the publisher, whose round brings one more status write."""
    conditions = (registry.get("status") or {}).get("conditions") or []
    return any(
        (c.get("type") == "Degraded" and c.get("status") == "True") or c.get("reason") == Reason.PUBLISHING
        for c in conditions
    )


def _time_batch(plane: kube.ControlPlane, operator: procs.Proc, *, namespace: str, count: int) -> float:
    """Seconds from `kubectl create` of `count` registries until all have children and a current status
    (the batch's requests: `measure_batch`).

    Polled every 0.1 s for a few objects, every second for many: listing 1,000 registries costs the API
    server and this process CPU the operator would otherwise get, and a second is <1% of the measure.
    """
    interval = 0.1 if count <= 10 else 1.0
    timeout = _converge_timeout(count)
    start = time.perf_counter()
    # `create`, not `apply`: one request per object instead of a GET and a POST, and no last-applied copy.
    plane.kubectl("create", "-f", "-", input=_manifests(namespace=namespace, count=count), timeout=timeout)
    deadline = start + timeout
    while not _converged(plane, namespace=namespace, count=count):
        operator.check_alive()
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{count} registries in {namespace} not converged after {timeout:.0f}s")
        time.sleep(interval)
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


# --- the steady-state resync cost ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ResyncCost:
    """The operator's API requests during `periods` resync periods with `objects` unchanged registries."""

    objects: int
    periods: int
    seconds: float
    requests: Mapping[tuple[str, str], int]  # (verb, resource) -> count
    listed: int  # objects returned by the window's LISTs (upper bound: selectors ignored)

    def count(self, verbs: Iterable[str]) -> int:
        wanted = set(verbs)
        return sum(n for (verb, _), n in self.requests.items() if verb in wanted)

    @property
    def writes(self) -> int:
        return self.count(WRITE_VERBS)

    @property
    def reads(self) -> int:
        return self.count(READ_VERBS)

    def per_object(self, count: int) -> float:
        """`count` per object and resync period."""
        return count / (self.objects * self.periods)

    def lines(self, unit: str = "per object and period") -> list[str]:
        """One line per (verb, resource), most frequent first, with the count per object and period."""
        width = max((len(resource) for _, resource in self.requests), default=0)
        return [
            f"    {verb:8} {resource:{width}} {n:7d}  ({self.per_object(n):.2f} {unit})"
            for (verb, resource), n in sorted(self.requests.items(), key=lambda item: (-item[1], item[0]))
        ]


def _timestamp(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _resource(ref: Mapping[str, Any]) -> str:
    group = ref.get("apiGroup") or ""
    resource = str(ref.get("resource", "?"))
    sub = ref.get("subresource")
    return f"{resource}{'.' + group if group else ''}{'/' + sub if sub else ''}"


def _in_scope(plane: kube.ControlPlane, *, group: str, resource: str, namespace: str | None) -> int:
    """How many objects of `resource` exist in `namespace` (all namespaces when None), by name only."""
    if group:
        version = plane.api_json(f"/apis/{group}")["preferredVersion"]["version"]
        base = f"/apis/{group}/{version}"
    else:
        base = "/api/v1"
    path = f"{base}/namespaces/{namespace}/{resource}" if namespace else f"{base}/{resource}"
    return len(plane.api_json(path, accept=PARTIAL_METADATA)["items"] or [])


def _audit_events(path: Path, *, offset: int, user: str) -> Iterator[dict[str, Any]]:
    """`user`'s audit events logged after byte `offset` (at 1,000 objects the whole log is 100 MB or more)."""
    needle = f'"username":"{user}"'.encode()
    with path.open("rb") as log:
        log.seek(offset)
        for line in log:
            if needle in line:  # cheap prefilter: most lines are other users' and need no decoding
                event = json.loads(line)
                if (event.get("user") or {}).get("username") == user:
                    yield event


def _count_requests(
    plane: kube.ControlPlane, *, offset: int, start: float, end: float
) -> tuple[dict[tuple[str, str], int], int]:
    """The operator's requests received in [start, end) (wall clock), logged after byte `offset`, by (verb,
    resource), and the objects its LISTs returned (upper bound, see the module docstring)."""
    requests: collections.Counter[tuple[str, str]] = collections.Counter()
    lists: collections.Counter[tuple[str, str, str | None]] = collections.Counter()
    for event in _audit_events(plane.audit_log, offset=offset, user=OPERATOR_USER):
        if not start <= _timestamp(event["requestReceivedTimestamp"]) < end:
            continue
        ref = event.get("objectRef") or {}
        verb = str(event.get("verb"))
        requests[(verb, _resource(ref))] += 1
        if verb == "list":
            lists[(ref.get("apiGroup") or "", str(ref.get("resource")), ref.get("namespace"))] += 1
    listed = sum(
        n * _in_scope(plane, group=group, resource=resource, namespace=namespace)
        for (group, resource, namespace), n in lists.items()
    )
    return dict(requests), listed


def measure_batch(
    plane: kube.ControlPlane, operator: procs.Proc, *, namespace: str, count: int
) -> tuple[ResyncCost, dict[str, float]]:
    """Time a batch of `count` new registries (`_time_batch`) and count the operator's requests meanwhile,
    and the CPU seconds each process used (the operator, kube-apiserver, etcd).

    Returned as a `ResyncCost` of one period: its counts per object and period are per object of the batch.
    The two registries created before the batch may get their timer's pass in it: at most two passes."""
    offset = plane.audit_log.stat().st_size
    before = _cpu(plane, operator)
    start = time.time()
    seconds = _time_batch(plane, operator, namespace=namespace, count=count)
    end = time.time()
    after = _cpu(plane, operator)
    time.sleep(1.0)  # the audit log backend writes an event when its request completes
    requests, listed = _count_requests(plane, offset=offset, start=start, end=end)
    cost = ResyncCost(objects=count, periods=1, seconds=seconds, requests=requests, listed=listed)
    return cost, {name: after[name] - before.get(name, 0.0) for name in after}


def _cpu(plane: kube.ControlPlane, operator: procs.Proc) -> dict[str, float]:
    """CPU seconds (user + system) so far of the operator and of the control plane's processes."""
    used = {"operator": operator.cpu_seconds()}
    for process in plane.processes:
        used[process.name] = procs.cpu_seconds_of(process.pid)
    return used


def measure_resync(
    plane: kube.ControlPlane, operator: procs.Proc, *, objects: int, period: float, periods: int
) -> ResyncCost:
    """Count the operator's requests during `periods` resync periods, from the audit log.

    Every registry's timer fires about once per period (kopf's timers sleep `period` after each run), so a
    window of k periods covers about k resyncs of every object. Timers of objects created together fire
    together, and a window edge may cut such a burst: the error is at most one pass per object in the
    whole window, hence more than one period. The bench makes no request of its own meanwhile.
    """
    time.sleep(SETTLE_SECONDS)
    offset = plane.audit_log.stat().st_size  # what was logged before the window is never read
    start = time.time()
    deadline = time.monotonic() + period * periods
    while time.monotonic() < deadline:
        operator.check_alive()
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    end = time.time()
    time.sleep(1.0)  # the audit log backend writes an event when its request completes
    requests, listed = _count_requests(plane, offset=offset, start=start, end=end)
    return ResyncCost(objects=objects, periods=periods, seconds=end - start, requests=requests, listed=listed)


def run(*, workdir: Path, objects: int, resync_seconds: float) -> dict[str, float]:
    """Run workload 7. Returns operator_1 and operator_many (s), operator_objects (N), operator_rss (MB),
    per object of the batch: operator_batch_writes, _reads, _cpu and _apiserver_cpu (CPU-s), and per object
    and resync period:
    operator_resync_writes, _reads, _listed."""
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, float] = {}
    with kube.ControlPlane(crds=[CRD], with_controller_manager=False, workdir=workdir / "plane") as plane:
        _wait_served(plane)
        port = support_procs.reserve_port()
        liveness = f"http://127.0.0.1:{port.number}/healthz"
        env = {
            **os.environ,
            "KUBECONFIG": str(plane.client_kubeconfig(name=OPERATOR_USER)),
            "DOCKYARD_RESYNC_SECONDS": f"{resync_seconds:g}",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("DOCKYARD_BCRYPT_ROUNDS", None)  # production cost, whatever the caller's shell says
        operator = procs.Proc(
            name="dockyard-operator",
            argv=[sys.executable, "-m", "dockyard_operator", "--liveness", liveness],
            log=workdir / "operator.log",
            env=env,
            ports=[port],
        )
        try:
            # kopf serves the liveness endpoint once every startup handler has finished.
            support_procs.wait_http(liveness, watch=[operator], timeout=START_TIMEOUT)
            # kopf is healthy before it has discovered the CRD and opened its watch; the first object after
            # a start waits for that (~2 s here). Timed apart: the target is a running operator's latency.
            cold = _time_batch(plane, operator, namespace="bench-warmup", count=1)
            print(f"  operator: first object after start (watch not yet open) in {cold:.2f} s", flush=True)
            results["operator_1"] = _time_batch(plane, operator, namespace="bench-one", count=1)
            print(f"  operator: 1 object in {results['operator_1']:.2f} s", flush=True)
            results["operator_objects"] = objects
            batch, cpu = measure_batch(plane, operator, namespace="bench-many", count=objects)
            results["operator_many"] = batch.seconds
            passes = batch.per_object(batch.requests.get(("get", _REGISTRIES), 0))
            print(
                f"  operator: {objects} objects in {batch.seconds:.2f} s: {batch.writes} writes, "
                f"{batch.reads} reads ({batch.per_object(batch.writes + batch.reads):.1f} per object; "
                f"{passes:.2f} passes per object)",
                flush=True,
            )
            print("\n".join(batch.lines("per object")), flush=True)
            print(
                "  operator: CPU seconds per object of the batch: "
                + ", ".join(f"{name} {used / objects:.3f}" for name, used in cpu.items()),
                flush=True,
            )
            results["operator_batch_cpu"] = cpu["operator"] / objects
            results["operator_batch_apiserver_cpu"] = cpu.get("kube-apiserver", 0.0) / objects
            results["operator_batch_writes"] = batch.per_object(batch.writes)
            results["operator_batch_reads"] = batch.per_object(batch.reads)
            total = objects + 2  # the warm-up's and the single batch's registries resync too
            print(
                f"  operator: API requests over {WINDOW_PERIODS} resync periods of {resync_seconds:g} s",
                flush=True,
            )
            cost = measure_resync(
                plane, operator, objects=total, period=resync_seconds, periods=WINDOW_PERIODS
            )
            print(
                f"  operator: {total} unchanged objects, {cost.seconds:.1f} s: {cost.writes} writes, "
                f"{cost.reads} reads, {cost.listed} objects listed (upper bound)",
                flush=True,
            )
            print("\n".join(cost.lines()), flush=True)
            results["operator_resync_writes"] = cost.per_object(cost.writes)
            results["operator_resync_reads"] = cost.per_object(cost.reads)
            results["operator_resync_listed"] = cost.per_object(cost.listed)
            results["operator_rss"] = operator.peak_rss_bytes() / 1e6
        finally:
            operator.stop()
            subprocess.run(["sync"], check=False)
    return results


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.operator_load`: workload 7 alone, without the registries' workloads."""
    import argparse
    import shutil
    import tempfile

    from bench import report

    parser = argparse.ArgumentParser(prog="python -m bench.operator_load", description=main.__doc__)
    parser.add_argument("--objects", type=int, default=1000, help="objects in the big batch (default 1000)")
    parser.add_argument(
        "--resync", type=float, default=60.0, help="resync period in s, counted over two (default 60)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, audit log)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="dockyard-bench-operator-"))
    try:
        results = run(workdir=workdir, objects=args.objects, resync_seconds=args.resync)
    finally:
        if args.keep:
            print(f"bench: kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    samples = {"dockyard": {metric: [value] for metric, value in results.items()}}
    print()
    print(report.table(samples=samples, labels={"dockyard": "Dockyard"}, references=[]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
