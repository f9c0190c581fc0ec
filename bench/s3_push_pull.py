"""`python -m bench.s3_push_pull`: Dockyard and Distribution v3 on the same S3 server, issue 14's S3 section.

Dockyard on S3 (the pod's `--storage-driver s3` arguments, behind the operator's nginx.conf without the
blob location) against Distribution v3 with its `s3` storage driver (behind nginx with Basic auth, as
`make bench` runs it), both on one gofakes3 server (the S3 server the tests use, built by
`hack/tools.sh gofakes3`; its memory backend), each under a key prefix of its own. Each registry runs
twice on its prefix: once answering blob GETs with a presigned redirect (Dockyard's default
`--s3-redirect`, Distribution's `redirect: disable: false`), which skopeo follows to the bucket, and once
with redirects off (`--no-s3-redirect`, `redirect: disable: true`), streaming blobs itself.

Each run, for each registry in turn (the order alternating between runs): a push of a fresh image (new
random, incompressible layers; 1 GiB by default) with skopeo to the redirecting instance, the registry's
peak RSS sampled during it; a pull of it into a fresh `dir:` (skopeo verifies every digest) through the
redirecting instance and one through the streaming one; then `--small-images` small images (3 x 64 KiB
layers, as `make bench`'s filesystem section), one `skopeo copy` after another. Around each push the CPU
seconds per GiB of the registry, its nginx, the S3 server and skopeo are read from /proc (printed per run;
the table has the server side, registry + nginx, and the S3 server's). The table shows medians
over runs (ratios paired within a run) and the issue's targets with verdicts: push >= 1.3x
Distribution's, pull with redirects >= 1.5x, Dockyard's RSS <= 150 MB during the 1 GiB push (judged at
1 GiB only); pull without redirects and small pushes have no target and are printed as ratios.
gofakes3 keeps every object in memory: a 1 GiB image needs several GiB of RAM for two registries'
copies, so the server is restarted (emptied) after each run.

Owns: the S3 server, the four registries, the images and the table. Must not: leave a process or the
temp dir behind (unless `--keep`).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests.support import s3server

from bench import images, loads, prereqs, procs, report, servers, tlsfiles

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
SMALL_LAYERS = [64 * KiB] * 3  # as the filesystem section's small pushes (bench/cli.py)
REGISTRIES = (("dockyard", "Dockyard"), ("dist3", "Distribution v3"))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.s3_push_pull", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="images pushed and pulled per target (default 3)")
    p.add_argument("--layers", type=int, default=4, help="layers per image (default 4)")
    p.add_argument("--layer-mib", type=int, default=256, help="MiB per layer (default 256: a 1 GiB image)")
    p.add_argument("--small-images", type=int, default=50, help="small images pushed per run (default 50)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (every server's log) after the run")
    return p


def _bucket(server: s3server.S3Server, prefix: str, *, redirect: bool) -> servers.Bucket:
    return servers.Bucket(
        endpoint=server.endpoint,
        name=server.bucket,
        prefix=prefix,
        access_key=s3server.ACCESS_KEY,
        secret_key=s3server.SECRET_KEY,
        redirect=redirect,
    )


def _start(
    tools: prereqs.Tools, work: Path, tls: tlsfiles.ServerTLS, server: s3server.S3Server, key: str, *,
    redirect: bool,
) -> servers.Target:  # fmt: skip
    """One registry on its prefix; the streaming instance (`<key>_stream`) shares the prefix."""
    name = key if redirect else f"{key}_stream"
    bucket = _bucket(server, key, redirect=redirect)
    if key == "dockyard":
        return servers.start_dockyard(
            tools=tools, workdir=work / name, tls=tls, password=secrets.token_urlsafe(12), bucket=bucket,
            key=name, label="Dockyard" if redirect else "Dockyard, no redirect",
        )  # fmt: skip
    assert tools.registry_v3 is not None
    return servers.start_distribution(
        key=name, label="Distribution v3" if redirect else "Distribution v3, no redirect",
        binary=tools.registry_v3, tools=tools, workdir=work / name, tls=tls,
        password=secrets.token_urlsafe(12), bucket=bucket,
    )  # fmt: skip


def run(
    *, runs: int, layers: int, layer_mib: int, small_images: int = 50, keep: bool = False
) -> dict[str, list[float]]:
    """Per-run values (keys `s3_<registry>_<what>`: push, pull, pull_stream MB/s, small images/s, rss MB)
    and the ratios Dockyard / Distribution v3 of each run (`s3_<what>_ratio`). `keep`: leave the temp dir
    (each registry's, nginx's and gofakes3's log) behind and say where."""
    tools = prereqs.ensure(python=sys.executable)
    if tools.registry_v3 is None:
        raise SystemExit(
            "bench: Distribution v3 is not in the tool cache: run `bash hack/tools.sh distribution`"
        )
    reason = s3server.available()
    if reason is not None:
        raise SystemExit(f"bench: {reason} (run `bash hack/tools.sh gofakes3`)")
    size_mb = layers * layer_mib * MiB / 1e6
    found: dict[str, list[float]] = {}
    started: list[servers.Target] = []
    work = Path(tempfile.mkdtemp(prefix="dockyard-s3-bench-"))
    try:
        tls = tlsfiles.write(directory=work / "tls")
        (work / "s3").mkdir()
        with s3server.running(work / "s3") as server:
            try:
                pairs: list[tuple[servers.Target, servers.Target]] = []
                for key, _label in REGISTRIES:
                    redirecting = _start(tools, work, tls, server, key, redirect=True)
                    started.append(redirecting)
                    streaming = _start(tools, work, tls, server, key, redirect=False)
                    started.append(streaming)
                    pairs.append((redirecting, streaming))
                for r in range(runs):
                    print(f"== S3 run {r + 1}/{runs}; load {os.getloadavg()[0]:.1f}", flush=True)
                    layout = images.Layout(work / f"layout-{r}")
                    layout.add_image(tag="big", layer_sizes=[layer_mib * MiB] * layers)
                    for i in range(small_images):
                        layout.add_image(tag=f"s{i}", layer_sizes=SMALL_LAYERS)
                    for pair in pairs if r % 2 == 0 else pairs[::-1]:
                        _one(tools, tls, pair, layout, r, size_mb, small_images, work / "pulled", found,
                             s3_pid=server.process.pid)  # fmt: skip
                    server.restart()  # gofakes3 holds objects in RAM: each run starts empty
            finally:
                for target in started:
                    target.stop()
    finally:
        if keep:
            print(f"kept {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    # Ratios paired within a run (the machine's load drifts between runs), then their medians in the table.
    for what in ("push", "pull", "pull_stream", "small"):
        found[f"s3_{what}_ratio"] = [
            mine / theirs
            for mine, theirs in zip(found[f"s3_dockyard_{what}"], found[f"s3_dist3_{what}"], strict=True)
        ]
    found["s3_image_mib"] = [float(layers * layer_mib)]
    return found


def _one(
    tools: prereqs.Tools,
    tls: tlsfiles.ServerTLS,
    pair: tuple[servers.Target, servers.Target],
    layout: images.Layout,
    run: int,
    size_mb: float,
    small_images: int,
    into: Path,
    found: dict[str, list[float]],
    *,
    s3_pid: int,
) -> None:
    """One run's workloads against one registry: its redirecting and its streaming instance."""
    target, streaming = pair
    assert target.registry is not None
    ref = f"bench/s3:r{run}"
    before = _push_cpu(target, s3_pid)
    with procs.RssSampler(target.registry).running() as rss:
        pushed = loads.skopeo_push(
            tools=tools, tls=tls, target=target, source=layout.reference("big"), dest=ref
        )
    after = _push_cpu(target, s3_pid)
    gib = size_mb * 1e6 / GiB
    cpu = {part: (after[part] - before[part]) / gib for part in before}
    pulled = loads.skopeo_pull(tools=tools, tls=tls, target=target, ref=ref, into=into)
    streamed = loads.skopeo_pull(tools=tools, tls=tls, target=streaming, ref=ref, into=into)
    start = time.perf_counter()
    for i in range(small_images):
        loads.skopeo_push(tools=tools, tls=tls, target=target, source=layout.reference(f"s{i}"),
                          dest=f"bench/s3-small-r{run}:s{i}")  # fmt: skip
    small = small_images / (time.perf_counter() - start)
    values = {
        "push": size_mb / pushed, "pull": size_mb / pulled, "pull_stream": size_mb / streamed,
        "small": small, "rss": rss.peak / 1e6,
        "push_cpu": cpu["registry"] + cpu["nginx"], "push_s3_cpu": cpu["S3 server"],
    }  # fmt: skip
    for what, value in values.items():
        found.setdefault(f"s3_{target.key}_{what}", []).append(value)
    print(f"  {target.label}: push {values['push']:.1f} MB/s, pull {values['pull']:.1f} MB/s (redirect), "
          f"{values['pull_stream']:.1f} MB/s (no redirect), {small:.2f} small images/s, "
          f"peak push RSS {values['rss']:.0f} MB", flush=True)  # fmt: skip
    shown = ", ".join(f"{part} {value:.2f}" for part, value in cpu.items())
    print(f"    push, CPU-s per GiB: {shown}", flush=True)


def _push_cpu(target: servers.Target, s3_pid: int) -> dict[str, float]:
    """CPU seconds so far of the processes a push passes through: the registry, its nginx, the S3 server
    (shared by both registries, so read only around one registry's push) and skopeo (reaped children)."""
    assert target.registry is not None
    return {
        "registry": target.registry.cpu_seconds(),
        "nginx": target.nginx.cpu_seconds(),
        "S3 server": procs.cpu_seconds_of(s3_pid),
        "skopeo": loads.client_cpu_seconds(),
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if min(args.runs, args.layers, args.layer_mib, args.small_images) < 1:
        print("bench.s3_push_pull: every count must be >= 1", file=sys.stderr)
        return 2
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    found = run(
        runs=args.runs, layers=args.layers, layer_mib=args.layer_mib, small_images=args.small_images,
        keep=args.keep,
    )  # fmt: skip
    print()
    print(report.table(samples={"dockyard": found}, labels={"dockyard": "Dockyard"}, references=[]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
