"""`python -m bench`: start every target, run the workloads alternating between them, print and save results.

Order within a run: for each workload, every target once, the order rotating from run to run so that no
target always goes first (or last, after the page cache and the other helpers' load settled). Each run
pushes freshly generated random images, so no registry can skip an upload because it already holds a blob.

Owns: the run's plan (sizes, counts, durations), the measurements' bookkeeping and cleanup.
Must not: leave a process or the temp dir behind, or talk to anything but 127.0.0.1.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench import auth_flood, images, loads, prereqs, push, report, servers, tlsfiles
from dockyard_operator.builders import nginx_configmap

MiB = 1024 * 1024
BLOB_SLICE_SECONDS = 4
REGISTRY_WORKLOADS = ("push", "pull", "small", "manifest", "blob")
MAINTENANCE_WORKLOADS = ("metrics", "gc")  # issue 12: standalone registries, no nginx or references
MIRROR_WORKLOADS = ("mirror",)  # issue 13: a pull-through mirror in front of Distribution v3
S3_WORKLOADS = ("s3",)  # issue 14: Dockyard and Distribution v3 on one S3 server (gofakes3)
TOKEN_WORKLOADS = ("tokens",)  # issue 16: manifest GETs with a Bearer registry token next to Basic


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="runs of every workload per target (default 3)")
    p.add_argument("--big-mib", type=int, default=1024, help="size of the big image in MiB (default 1024)")
    p.add_argument("--small-images", type=int, default=50, help="small images per run (default 50)")
    p.add_argument("--get-seconds", type=int, default=20, help="manifest GET loop length (default 20)")
    p.add_argument(
        "--blob-seconds",
        type=int,
        default=12,
        help="blob GET seconds per target and run, in 4 s slices (default 12)",
    )
    p.add_argument("--no-v3", action="store_true", help="skip distribution v3 even when it is built")
    p.add_argument(
        "--streamed-dockyard",
        action="store_true",
        help="also run Dockyard with upload bodies streamed through its socket (the path before issue 15, "
        "and the S3 variant's) as a target of its own",
    )
    p.add_argument("--no-operator", action="store_true", help="skip workload 7 (operator)")
    p.add_argument(
        "--operator-objects",
        type=int,
        default=1000,
        help="objects in the operator's big batch (default 1000)",
    )
    p.add_argument(
        "--operator-resync",
        type=float,
        default=60.0,
        help="the operator's resync period in s; its steady-state API calls are counted over two of them "
        "(default 60, the operator's own default)",
    )
    p.add_argument(
        "--flood-connections",
        type=int,
        default=200,
        help="connections of the password flood in workload 8 (default 200)",
    )
    p.add_argument(
        "--metrics-seconds",
        type=float,
        default=10.0,
        help="seconds per load and server in workload 9, metrics on/off (default 10)",
    )
    p.add_argument(
        "--gc-manifests",
        type=int,
        default=10_000,
        help="image manifests (each with a config and 4 layers) in workload 10's gc store (default 10000)",
    )
    p.add_argument(
        "--only",
        default="",
        help="comma-separated workloads "
        "(push,pull,small,manifest,blob,auth,metrics,gc,mirror,s3,tokens; none)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs) after the run")
    return p


class Recorder:
    """Samples per target and metric, and CPU seconds per target, workload and process."""

    def __init__(self) -> None:
        self.loadavg: list[float] = []  # 1-minute load average at the start of each run
        self.samples: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        self.cpu: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(list))
        )

    def add(self, target: str, metric: str, value: float) -> None:
        self.samples[target][metric].append(value)
        print(f"  {target:9} {metric:16} {value:10.2f}", flush=True)

    @contextlib.contextmanager
    def cpu_of(self, target: servers.Target, workload: str) -> Iterator[None]:
        before = {name: p.cpu_seconds() for name, p in target.processes().items()}
        client = loads.client_cpu_seconds()
        yield
        for name, p in target.processes().items():
            self.cpu[target.key][workload][name].append(p.cpu_seconds() - before[name])
        self.cpu[target.key][workload]["client"].append(loads.client_cpu_seconds() - client)


def _settle() -> None:
    """Flush dirty pages (untimed) so that one target's deferred writeback never lands in the next
    target's measurement: Distribution does not fsync what it stores, Dockyard does before it answers."""
    os.sync()


def _rotate(items: list[servers.Target], n: int) -> list[servers.Target]:
    k = n % len(items)
    return items[k:] + items[:k]


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # SIGTERM (and SIGINT, which a shell's background job ignores) must still run the cleanup below.
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    if args.runs < 1 or args.big_mib < 4 or args.small_images < 1:
        print("bench: --runs, --small-images must be >= 1 and --big-mib >= 4", file=sys.stderr)
        return 2
    only = {w.strip() for w in args.only.split(",") if w.strip()}
    unknown = only - {
        *REGISTRY_WORKLOADS, *MAINTENANCE_WORKLOADS, *MIRROR_WORKLOADS, *S3_WORKLOADS, *TOKEN_WORKLOADS,
        "auth", "none",
    }  # fmt: skip
    if unknown:
        print(f"bench: unknown workloads in --only: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2

    def want(workload: str) -> bool:
        return not only or workload in only

    started = time.monotonic()
    clients = (*REGISTRY_WORKLOADS, *MIRROR_WORKLOADS, *S3_WORKLOADS)  # skopeo and the references
    tools = prereqs.ensure(python=sys.executable, registry_workloads=any(want(w) for w in clients))
    workdir = Path(tempfile.mkdtemp(prefix="dockyard-bench-"))
    rec = Recorder()
    targets: list[servers.Target] = []
    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "args": vars(args),
    }
    try:
        labels = {"dockyard": "Dockyard"}
        if any(want(w) for w in REGISTRY_WORKLOADS):
            tls, targets, static = _start_all(tools=tools, workdir=workdir, args=args)
            labels = {t.key: t.label for t in [*targets, static]}
            _run_registry_workloads(tools=tools, tls=tls, workdir=workdir, args=args, rec=rec,
                                    targets=targets, static=static, want=want)  # fmt: skip
            static.stop()
            for t in targets:
                t.stop()
        meta["targets"] = labels
        if want("auth"):
            _run_auth_flood(tools=tools, workdir=workdir, args=args, rec=rec)
        if want("metrics"):
            from bench import metrics_cost

            print("== workload 9: the registry with metrics on and off, side by side", flush=True)
            found = metrics_cost.run(
                rounds=args.runs, seconds=args.metrics_seconds, blob_mib=64, connections=64
            )
            for metric, values in found.items():
                for value in values:
                    rec.add("dockyard", metric, value)
        if want("gc"):
            from bench import gc_pass

            print(f"== workload 10: gc over {args.gc_manifests} manifests (filesystem driver)", flush=True)
            for metric, value in gc_pass.run(manifests=args.gc_manifests).items():
                rec.add("dockyard", metric, value)
        if want("mirror") and tools.registry_v3 is not None:
            from bench import mirror_pull

            print("== workload 11: pulls through a pull-through mirror and from its upstream", flush=True)
            found_mirror = mirror_pull.run(runs=args.runs, layers=4, layer_mib=64)
            for metric, value in found_mirror.items():
                rec.add("dockyard", metric, value)
            print(mirror_pull.cpu_table(found_mirror), flush=True)
        if want("s3") and tools.registry_v3 is not None:
            from bench import s3_push_pull

            print("== workload 12: push and pull on S3 (gofakes3), Dockyard and Distribution v3", flush=True)
            layer_mib = max(args.big_mib // 4, 1)
            found = s3_push_pull.run(
                runs=args.runs, layers=4, layer_mib=layer_mib, small_images=args.small_images
            )
            for metric, values in found.items():
                for value in values:
                    rec.add("dockyard", metric, value)
        if want("tokens"):
            from bench import token_cost

            print("== workload 13: manifest GETs with a Bearer registry token and with Basic", flush=True)
            found = token_cost.manifest_gets(rounds=args.runs, seconds=args.metrics_seconds, connections=64)
            for metric, values in found.items():
                for value in values:
                    rec.add("dockyard", metric, value)
        if not args.no_operator:
            from bench import operator_load

            print("== workload 7: operator against a real kube-apiserver", flush=True)
            for metric, value in operator_load.run(
                workdir=workdir / "operator",
                objects=args.operator_objects,
                resync_seconds=args.operator_resync,
            ).items():
                rec.add("dockyard", metric, value)
        meta["loadavg_end"] = os.getloadavg()
        meta["loadavg_per_run"] = rec.loadavg
        meta["seconds"] = time.monotonic() - started
        references = [k for k in ("dist2", "dist3") if k in labels]
        print()
        print(report.table(samples=rec.samples, labels=labels, references=references))
        print()
        print(report.cpu_table(cpu=rec.cpu, labels=labels))
        if "sha256_floor" in rec.samples.get("dockyard", {}):
            print()
            print(report.push_table(samples=rec.samples, labels=labels, references=references,
                                    implementation=push.sha256_implementation()))  # fmt: skip
        path = report.write_json({"meta": meta, "samples": rec.samples, "cpu": rec.cpu})
        print(f"\nbench: {meta['seconds']:.0f} s in total; results in {path}", flush=True)
        return 0
    finally:
        for t in targets:
            t.stop()
        if args.keep:
            print(f"bench: kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _password() -> str:
    return base64.urlsafe_b64encode(os.urandom(18)).decode()


def _run_auth_flood(*, tools: prereqs.Tools, workdir: Path, args: argparse.Namespace, rec: Recorder) -> None:
    """Workload 8 on its own Dockyard with the pod's own per-address limits; six new users per run."""
    print(
        f"== workload 8: six first-time logins during a {args.flood_connections}-connection flood", flush=True
    )
    tls = tlsfiles.write(directory=workdir / "tls-auth")
    target = servers.start_dockyard(tools=tools, workdir=workdir / "dockyard-auth", tls=tls,
                                    password=_password(), limits=nginx_configmap.ClientLimits())  # fmt: skip
    assert target.data_dir is not None
    try:
        for run in range(args.runs):
            users = {f"login{run}-{i}": _password() for i in range(len(auth_flood.LOGIN_ADDRESSES))}
            for user, password in users.items():
                servers.add_user(tools=tools, data=target.data_dir, user=user, password=password)
            time.sleep(1.1)  # the registry re-reads htpasswd at most once a second
            with rec.cpu_of(target, "auth_flood"):
                found = auth_flood.run(
                    address=target.address, tls=tls, users=users, connections=args.flood_connections
                )
            for metric, value in found.items():
                rec.add("dockyard", metric, value)
    finally:
        target.stop()


def _start_all(
    *, tools: prereqs.Tools, workdir: Path, args: argparse.Namespace
) -> tuple[tlsfiles.ServerTLS, list[servers.Target], servers.Target]:
    tls = tlsfiles.write(directory=workdir / "tls")
    password = _password

    targets = [
        servers.start_dockyard(tools=tools, workdir=workdir / "dockyard", tls=tls, password=password())
    ]
    if args.streamed_dockyard:
        targets.append(servers.start_dockyard(
            tools=tools, workdir=workdir / "dockstream", tls=tls, password=password(), body_files=False,
            key="dockstream", label="Dockyard, streamed",
        ))  # fmt: skip
    targets.append(servers.start_distribution(
        key="dist2", label="Distribution 2.8.2", binary=tools.registry_v2, tools=tools,
        workdir=workdir / "dist2", tls=tls, password=password(),
    ))  # fmt: skip
    if tools.registry_v3 and not args.no_v3:
        targets.append(servers.start_distribution(
            key="dist3", label="Distribution v3", binary=tools.registry_v3, tools=tools,
            workdir=workdir / "dist3", tls=tls, password=password(),
        ))  # fmt: skip
    else:
        print("bench: distribution v3 not built (bash hack/tools.sh distribution); skipping it", flush=True)
    # The 64 MiB blob (and the manifest the GET loop asks for) pushed once to every registry.
    fixture = images.Layout(workdir / "fixture")
    fixture.add_image(tag="fixture", layer_sizes=[64 * MiB])
    for t in targets:
        loads.skopeo_push(
            tools=tools, tls=tls, target=t, source=fixture.reference("fixture"), dest="bench/blob:fixture"
        )
    static_files = workdir / "static-files"
    static_files.mkdir()
    blob = _fixture_blob(fixture)
    shutil.copyfile(blob.path, static_files / "blob64m")
    static = servers.start_static(tools=tools, workdir=workdir / "static", tls=tls, files=static_files)
    return tls, targets, static


def _fixture_blob(layout: images.Layout) -> images.Blob:
    biggest = max(layout.blobs.iterdir(), key=lambda p: p.stat().st_size)
    return images.Blob(digest=f"sha256:{biggest.name}", size=biggest.stat().st_size, path=biggest)


def _run_registry_workloads(
    *, tools: prereqs.Tools, tls: tlsfiles.ServerTLS, workdir: Path, args: argparse.Namespace, rec: Recorder,
    targets: list[servers.Target], static: servers.Target, want: Callable[[str], bool],
) -> None:  # fmt: skip
    blob = _fixture_blob(images.Layout(workdir / "fixture"))
    print(f"bench: sha256 floor measured with {push.sha256_implementation()}", flush=True)
    for run in range(args.runs):
        order = _rotate(targets, run)
        load = os.getloadavg()[0]
        rec.loadavg.append(load)
        print(
            f"== run {run + 1}/{args.runs}: order {', '.join(t.key for t in order)}; load {load:.1f}",
            flush=True,
        )
        floor = push.sha256_floor()
        rec.add("dockyard", "sha256_floor", floor)
        if want("push") or want("pull"):

            def pull(ref: str, size: int, order: list[servers.Target] = order) -> None:
                if not want("pull"):
                    return
                for t in order:
                    with rec.cpu_of(t, "pull_1g"):
                        seconds = loads.skopeo_pull(
                            tools=tools, tls=tls, target=t, ref=ref, into=workdir / "pulled"
                        )
                    _settle()
                    rec.add(t.key, "pull_1g", size / seconds / 1e6)

            push.run_big(tools=tools, tls=tls, workdir=workdir, big_mib=args.big_mib, rec=rec, order=order,
                         run=run, settle=_settle, pull=pull)  # fmt: skip
        if want("small"):
            shutil.rmtree(workdir / "small", ignore_errors=True)
            small = images.Layout(workdir / "small")
            for i in range(args.small_images):
                small.add_image(tag=f"s{i}", layer_sizes=[64 * 1024] * 3)
            _settle()
            for t in order:
                with rec.cpu_of(t, "small_push"):
                    start = time.perf_counter()
                    for i in range(args.small_images):
                        loads.skopeo_push(tools=tools, tls=tls, target=t, source=small.reference(f"s{i}"),
                                          dest=f"bench/small-r{run}:s{i}")  # fmt: skip
                    seconds = time.perf_counter() - start
                rec.add(t.key, "small_push", args.small_images / seconds)
            _settle()
            push.run_small_lean(tools=tools, tls=tls, small=small, count=args.small_images, rec=rec,
                                order=order, run=run, scratch=workdir / "skopeo-dir")  # fmt: skip
        if want("manifest"):
            accept = f"{images.MANIFEST_TYPE}, application/vnd.oci.image.index.v1+json"
            for t in order:
                with rec.cpu_of(t, "manifest_get"):
                    result = loads.wrk(
                        tools=tools,
                        url=f"https://{t.address}/v2/bench/blob/manifests/fixture",
                        connections=64,
                        seconds=args.get_seconds,
                        headers={"Authorization": t.authorization, "Accept": accept},
                        script_dir=workdir,
                    )
                rec.add(t.key, "manifest_rps", result.rps)
                rec.add(t.key, "manifest_p50", result.p50_ms)
                rec.add(t.key, "manifest_p99", result.p99_ms)
        if want("blob"):
            # Short slices, round robin with the ceiling in the rotation: the machine's load drifts within
            # seconds, and one long loop per target compared targets under different loads.
            slices = max(1, args.blob_seconds // BLOB_SLICE_SECONDS)
            for part in range(slices):
                for t in _rotate([*targets, static], run + part):
                    path = "/static/blob64m" if t is static else f"/v2/bench/blob/blobs/{blob.digest}"
                    headers = {} if t is static else {"Authorization": t.authorization}
                    with rec.cpu_of(t, "blob_get"):
                        result = loads.wrk(
                            tools=tools,
                            url=f"https://{t.address}{path}",
                            connections=16,
                            seconds=args.blob_seconds // slices,
                            headers=headers,
                            script_dir=workdir,
                        )
                    rec.add(t.key, "blob_mbps", result.mb_per_s)
