"""`python -m bench.gc_pass`: time and peak memory of a gc pass over a large store (filesystem driver).

Issue 12's target: a pass over 10,000 manifests / 50,000 blobs completes in < 60 s with < 200 MB.

Setup (untimed) writes the store's layout directly (`paths.py`, the filesystem driver's files, no
fsync): `--repositories` repositories holding `--manifests` image manifests in all, each with a config
and `--layers` layers of its own (so 10,000 manifests make 50,000 config/layer blobs, plus the 10,000
manifest blobs), every file dated two hours back. Half the manifests are tagged; the other half are
untagged. Then, each as a real `dockyard-registry gc` process (the CLI an operator runs), timed, with
its peak RSS (VmHWM, read until it exits):
1. a mark-and-sweep pass that finds nothing to delete (`gc --grace 1h`: the steady state),
2. a dry run with `--delete-untagged` (marks, decides, deletes nothing),
3. the real `--delete-untagged` pass (deletes the untagged half: its manifests and blobs, each with an
   fsync of its directory, as in production).

Owns: building the store and timing the three passes. Must not: talk to the network or leave the temp
dir behind (unless --keep).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dockyard_registry import digest, paths

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
AGE_SECONDS = 7200


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.gc_pass", description=__doc__.splitlines()[0])
    p.add_argument("--manifests", type=int, default=10_000, help="image manifests in all (default 10000)")
    p.add_argument("--layers", type=int, default=4, help="layers per manifest besides its config (default 4)")
    p.add_argument("--repositories", type=int, default=100, help="repositories (default 100)")
    p.add_argument("--blob-bytes", type=int, default=512, help="size of each config/layer blob (default 512)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    return p


def _write(root: Path, rel: str, data: bytes, stamp: float) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (stamp, stamp))


def build(root: Path, *, manifests: int, layers: int, repositories: int, blob_bytes: int) -> int:
    """The store; returns how many blobs (config, layers, manifests) it holds."""
    stamp = time.time() - AGE_SECONDS
    blobs = 0
    for i in range(manifests):
        repo = f"bench/r{i % repositories:04d}"
        descriptors = []
        for j in range(layers + 1):
            content = hashlib.sha256(f"{i}/{j}".encode()).digest() * (blob_bytes // 32 + 1)
            content = content[:blob_bytes]
            d = digest.of_bytes(content)
            _write(root, paths.blob_data(d), content, stamp)
            _write(root, paths.layer_link(repo, d), str(d).encode(), stamp)
            descriptors.append(
                {"mediaType": "application/octet-stream", "digest": str(d), "size": len(content)}
            )
            blobs += 1
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": descriptors[0],
                "layers": descriptors[1:],
            }
        ).encode()
        m = digest.of_bytes(manifest)
        _write(root, paths.blob_data(m), manifest, stamp)
        _write(root, paths.revision_link(repo, m), OCI_MANIFEST.encode(), stamp)
        blobs += 1
        if i % 2 == 0:
            _write(root, paths.tag_link(repo, f"v{i}"), str(m).encode(), stamp)
    return blobs


def _hwm_kib(pid: int) -> int:
    """The process's resident high-water mark (VmHWM), 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return 0


def _gc(data: Path, *extra: str) -> tuple[float, float, dict[str, object]]:
    """One `dockyard-registry gc --json` process: wall seconds, its peak RSS in MB, its report.

    The peak is the child's VmHWM, read until it exits: it belongs to the exec'd image alone. getrusage's
    ru_maxrss of a child is not usable here, because Linux carries the high-water mark across exec, and a
    child spawned by vfork or fork starts from this (large, when run inside `python -m bench`) process's.
    """
    exe = Path(sys.executable).parent / "dockyard-registry"
    began = time.monotonic()
    peak_kib = 0
    with (data.parent / "gc.json").open("wb") as out:
        proc = subprocess.Popen([str(exe), "gc", "--data-dir", str(data), "--json", *extra], stdout=out)
        while proc.poll() is None:
            peak_kib = max(peak_kib, _hwm_kib(proc.pid))  # a high-water mark: the last reading is the peak
            time.sleep(0.02)
    seconds = time.monotonic() - began
    if proc.returncode != 0:
        raise SystemExit(f"gc exited {proc.returncode}")
    report = json.loads((data.parent / "gc.json").read_text())
    return seconds, peak_kib / 1024, report


PASSES = (
    ("mark", "mark and sweep, nothing to delete", ("--grace", "1h")),
    ("dry_run", "--delete-untagged --dry-run", ("--grace", "1h", "--delete-untagged", "--dry-run")),
    ("delete", "--delete-untagged", ("--grace", "1h", "--delete-untagged")),
)


def run(
    *, manifests: int, layers: int = 4, repositories: int = 100, blob_bytes: int = 512, keep: bool = False
) -> dict[str, float]:
    """Build the store and time the three passes: `gc_<pass>_seconds` and `gc_<pass>_peak_mb` for `mark`,
    `dry_run` and `delete`, and `gc_manifests`/`gc_blobs`, the store's size."""
    workdir = Path(tempfile.mkdtemp(prefix="dockyard-gc-bench-"))
    out: dict[str, float] = {}
    try:
        data = workdir / "data"
        began = time.monotonic()
        blobs = build(
            data, manifests=manifests, layers=layers, repositories=repositories, blob_bytes=blob_bytes
        )
        out["gc_manifests"], out["gc_blobs"] = float(manifests), float(blobs)
        print(
            f"store: {manifests} manifests, {blobs} blobs in {repositories} repositories "
            f"(built in {time.monotonic() - began:.1f}s, untimed)",
            flush=True,
        )
        print(f"{'pass':36} {'seconds':>8} {'peak MB':>8} {'manifests':>9} {'blobs':>7}")
        for key, name, extra in PASSES:
            subprocess.run(["sync"], check=False)
            seconds, peak, report = _gc(data, *extra)
            out[f"gc_{key}_seconds"], out[f"gc_{key}_peak_mb"] = seconds, peak
            deleted = f"{report['manifestsDeleted']:>9} {report['blobsDeleted']:>7}"
            print(f"{name:36} {seconds:8.2f} {peak:8.1f} {deleted}", flush=True)
        print(f"(getrusage's peak of this process for reference: {_self_peak_mb():.1f} MB)")
    finally:
        if keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    run(
        manifests=args.manifests,
        layers=args.layers,
        repositories=args.repositories,
        blob_bytes=args.blob_bytes,
        keep=args.keep,
    )
    return 0


def _self_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    sys.exit(main())
