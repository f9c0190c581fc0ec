"""`python -m bench.s3_push_pull`: Dockyard and Distribution v3 on the same S3 server, push and pull MB/s.

Issue 14's S3 section: Dockyard on S3 (the pod's `--storage-driver s3` arguments, behind the operator's
nginx.conf without the blob location) against Distribution v3 with its `s3` storage driver (behind nginx
with Basic auth, as `make bench` runs it), both on one gofakes3 server (the S3 server the tests use,
built by `hack/tools.sh gofakes3`; its memory backend), each under a key prefix of its own. Both answer
blob GETs with a presigned redirect, which skopeo follows to the bucket.

Each run pushes a fresh image (new random, incompressible layers) with skopeo to each target in turn,
the order alternating between runs, then pulls it back into a fresh `dir:` (skopeo verifies every digest);
the registry's peak RSS is sampled during the push. The table shows per-run medians. Targets (issue 14):
push ≥ 1.3x Distribution's, pull (with redirects) ≥ 1.5x, Dockyard's RSS ≤ 150 MB during a 1 GiB push.
gofakes3 keeps every object in memory: a 1 GiB image needs several GiB of RAM for two registries' copies.

Owns: the S3 server, the two registries, the images and the table. Must not: leave a process or the temp
dir behind.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
from pathlib import Path

from tests.support import s3server

from bench import images, loads, prereqs, procs, servers, tlsfiles


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.s3_push_pull", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="images pushed and pulled per target (default 3)")
    p.add_argument("--layers", type=int, default=4, help="layers per image (default 4)")
    p.add_argument("--layer-mib", type=int, default=256, help="MiB per layer (default 256: a 1 GiB image)")
    return p


def _bucket(server: s3server.S3Server, prefix: str) -> servers.Bucket:
    return servers.Bucket(
        endpoint=server.endpoint,
        name=server.bucket,
        prefix=prefix,
        access_key=s3server.ACCESS_KEY,
        secret_key=s3server.SECRET_KEY,
    )


def run(*, runs: int, layers: int, layer_mib: int) -> dict[str, float]:
    """Median push and pull MB/s and peak push RSS (MB) of each target (keys `s3_<target>_<what>`)."""
    tools = prereqs.ensure(python=sys.executable)
    if tools.registry_v3 is None:
        raise SystemExit(
            "bench: Distribution v3 is not in the tool cache: run `bash hack/tools.sh distribution`"
        )
    reason = s3server.available()
    if reason is not None:
        raise SystemExit(f"bench: {reason} (run `bash hack/tools.sh gofakes3`)")
    size_mb = layers * layer_mib * 1024 * 1024 / 1e6
    found: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="dockyard-s3-bench-") as tmp:
        work = Path(tmp)
        tls = tlsfiles.write(directory=work / "tls")
        (work / "s3").mkdir()
        with s3server.running(work / "s3") as server:
            dockyard = servers.start_dockyard(
                tools=tools, workdir=work / "dockyard", tls=tls, password=secrets.token_urlsafe(12),
                bucket=_bucket(server, "dockyard"),
            )  # fmt: skip
            try:
                dist3 = servers.start_distribution(
                    key="dist3", label="Distribution v3", binary=tools.registry_v3, tools=tools,
                    workdir=work / "dist3", tls=tls, password=secrets.token_urlsafe(12),
                    bucket=_bucket(server, "dist3"),
                )  # fmt: skip
                try:
                    targets = [dockyard, dist3]
                    layout = images.Layout(work / "layout")
                    for r in range(runs):
                        tag = f"r{r}"
                        layout.add_image(tag=tag, layer_sizes=[layer_mib * 1024 * 1024] * layers)
                        for target in targets if r % 2 == 0 else targets[::-1]:
                            _one(tools, tls, target, layout, tag, size_mb, work / "pulled", found)
                        server.restart()  # gofakes3 holds objects in RAM: each run starts empty
                finally:
                    dist3.stop()
            finally:
                dockyard.stop()
    medians = {key: statistics.median(values) for key, values in found.items()}
    medians["s3_push_ratio"] = medians["s3_dockyard_push"] / medians["s3_dist3_push"]
    medians["s3_pull_ratio"] = medians["s3_dockyard_pull"] / medians["s3_dist3_pull"]
    medians["s3_image_mib"] = float(layers * layer_mib)
    return medians


def _one(
    tools: prereqs.Tools,
    tls: tlsfiles.ServerTLS,
    target: servers.Target,
    layout: images.Layout,
    tag: str,
    size_mb: float,
    into: Path,
    found: dict[str, list[float]],
) -> None:
    assert target.registry is not None
    with procs.RssSampler(target.registry).running() as rss:
        pushed = loads.skopeo_push(
            tools=tools, tls=tls, target=target, source=layout.reference(tag), dest=f"bench/s3:{tag}"
        )
    pulled = loads.skopeo_pull(tools=tools, tls=tls, target=target, ref=f"bench/s3:{tag}", into=into)
    for what, value in (("push", size_mb / pushed), ("pull", size_mb / pulled), ("rss", rss.peak / 1e6)):
        found.setdefault(f"s3_{target.key}_{what}", []).append(value)
    print(f"  {target.label}: push {size_mb / pushed:.1f} MB/s, pull {size_mb / pulled:.1f} MB/s, "
          f"peak RSS {rss.peak / 1e6:.0f} MB", flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    found = run(runs=args.runs, layers=args.layers, layer_mib=args.layer_mib)
    size = args.layers * args.layer_mib
    print(f"\n{'on gofakes3, a ' + str(size) + ' MiB image':30} {'push MB/s':>10} {'pull MB/s':>10} "
          f"{'push RSS MB':>12}")  # fmt: skip
    for key, label in (("dockyard", "Dockyard"), ("dist3", "Distribution v3")):
        print(f"{label:30} {found[f's3_{key}_push']:10.1f} {found[f's3_{key}_pull']:10.1f} "
              f"{found[f's3_{key}_rss']:12.0f}")  # fmt: skip
    push, pull = found["s3_push_ratio"], found["s3_pull_ratio"]
    print(f"{'Dockyard / Distribution v3':30} {push:9.2f}x {pull:9.2f}x   targets: push ≥ 1.3x, pull ≥ 1.5x, "
          "RSS ≤ 150 MB at 1 GiB")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
