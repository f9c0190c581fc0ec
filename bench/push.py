"""The push workloads (issues 6 and 15): MB/s and the servers' CPU-seconds per GiB pushed, against the floor.

Per run and target, each with a freshly generated image so no registry can skip an upload:

- `push_1g`: the 1 GiB image (4 x 256 MiB layers) with skopeo (issue 6's row);
- `push_lean`: another 1 GiB image with the lean client (`bench.uploader`, monolithic `PUT ?digest=`);
- `push_chunked`: another with the lean client in 64 MiB `PATCH`es (`Content-Range`), then an empty `PUT`;
- `small_lean`: the small images (3 x 64 KiB layers) with the lean client over one connection, next to
  skopeo's `small_push` (in cli.py), and skopeo's fixed per-image cost: the same images copied into a
  local `dir:` with no registry at all (`skopeo_dir_ms`).

For each push the server CPU is the registry process plus nginx's master and workers (utime + stime from
/proc, `procs.Proc.cpu_seconds`), for Dockyard and the Distribution references alike, divided by the GiB
pushed: `<workload>_cpu_gib`. The floor beside it is one sha256 pass over 1 GiB in this process
(`sha256_floor`), measured once per run by `sha256_floor()`, which also names the implementation.

Owns: these workloads' order, images and bookkeeping. Must not: start or stop servers.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import shutil
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from bench import images, loads, prereqs, procs, servers, tlsfiles

MiB = 1024 * 1024
GiB = 1024 * MiB
CHUNK_MIB = 64
LEAN_WORKLOADS = {"push_lean": "monolithic", "push_chunked": "chunked"}


class Recorder(Protocol):
    cpu: dict[str, dict[str, dict[str, list[float]]]]

    def add(self, target: str, metric: str, value: float) -> None: ...
    def cpu_of(self, target: servers.Target, workload: str) -> contextlib.AbstractContextManager[None]: ...


def sha256_implementation() -> str:
    """Which sha256 runs: hashlib's constructor (OpenSSL's or the builtin), OpenSSL's version, SHA-NI."""
    flags = ""
    with contextlib.suppress(OSError):
        flags = Path("/proc/cpuinfo").read_text()
    ni = "SHA-NI" if " sha_ni" in flags else "no SHA-NI"
    cpu = f"{platform.machine()} CPU, {ni}"
    return f"hashlib.sha256 = {hashlib.sha256.__name__} ({ssl.OPENSSL_VERSION}; {cpu})"


def sha256_floor(*, size: int = GiB) -> float:
    """CPU-seconds of one hashlib.sha256 pass over `size` bytes (1 MiB updates of one random buffer)."""
    block = memoryview(os.urandom(MiB))
    hasher = hashlib.sha256()
    start = time.process_time()
    for _ in range(size // MiB):
        hasher.update(block)
    return (time.process_time() - start) * GiB / size


def server_cpu(rec: Recorder, target: servers.Target, workload: str) -> float:
    """The last sample's registry + nginx CPU-seconds of `workload` on `target`."""
    per = rec.cpu[target.key][workload]
    return sum(per[name][-1] for name in ("registry", "nginx") if per.get(name))


def _timed_push(
    *, rec: Recorder, target: servers.Target, workload: str, size: int, push: Callable[[], float],
    settle: Callable[[], None],
) -> None:  # fmt: skip
    sampler = procs.RssSampler(target.registry) if target.registry and workload == "push_1g" else None
    with rec.cpu_of(target, workload), sampler.running() if sampler else contextlib.nullcontext():
        seconds = push()
    settle()
    rec.add(target.key, workload, size / seconds / 1e6)
    rec.add(target.key, f"{workload}_cpu_gib", server_cpu(rec, target, workload) * GiB / size)
    if sampler:
        rec.add(target.key, "push_peak_rss", sampler.peak / 1e6)


@contextlib.contextmanager
def _fresh_big(workdir: Path, layer: int) -> Iterator[tuple[images.Layout, int]]:
    shutil.rmtree(workdir, ignore_errors=True)
    big = images.Layout(workdir)
    big.add_image(tag="big", layer_sizes=[layer] * 4)
    try:
        yield big, sum(p.stat().st_size for p in big.blobs.iterdir())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_big(
    *, tools: prereqs.Tools, tls: tlsfiles.ServerTLS, workdir: Path, big_mib: int, rec: Recorder,
    order: list[servers.Target], run: int, settle: Callable[[], None], pull: Callable[[str, int], None],
) -> None:  # fmt: skip
    """skopeo's 1 GiB push (then `pull(ref, bytes)` of it), then the lean client's two upload styles."""
    layer = big_mib * MiB // 4
    ref = f"bench/big:r{run}"
    with _fresh_big(workdir / "big", layer) as (big, size):
        settle()
        for t in order:
            skopeo = functools.partial(
                loads.skopeo_push, tools=tools, tls=tls, target=t, source=big.reference("big"), dest=ref
            )
            _timed_push(rec=rec, target=t, workload="push_1g", size=size, settle=settle, push=skopeo)
    pull(ref, size)
    for workload, style in LEAN_WORKLOADS.items():
        with _fresh_big(workdir / workload, layer) as (lean, size):
            settle()
            for t in order:
                client = functools.partial(
                    loads.lean_push, tls=tls, target=t, layout=lean.directory, tags=["big"],
                    repo=f"bench/{style}-r{run}", style=style, chunk_mib=CHUNK_MIB,
                )  # fmt: skip
                _timed_push(rec=rec, target=t, workload=workload, size=size, settle=settle, push=client)


def run_small_lean(
    *, tools: prereqs.Tools, tls: tlsfiles.ServerTLS, small: images.Layout, count: int, rec: Recorder,
    order: list[servers.Target], run: int, scratch: Path,
) -> None:  # fmt: skip
    """The small images with the lean client (one process, one connection) and skopeo's fixed cost."""
    tags = [f"s{i}" for i in range(count)]
    for t in order:
        with rec.cpu_of(t, "small_lean"):
            seconds = loads.lean_push(tls=tls, target=t, layout=small.directory, tags=tags,
                                      repo=f"bench/lean-small-r{run}", style="monolithic")  # fmt: skip
        rec.add(t.key, "small_lean", count / seconds)
    # skopeo with no registry: the same images into a local directory; its per-image wall time is the
    # client's fixed cost that every registry's small-push rate carries.
    probe = min(count, 10)
    scratch.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for i in range(probe):
        loads.skopeo_to_dir(tools=tools, source=small.reference(tags[i]), into=scratch / f"dir{i}")
    rec.add("dockyard", "skopeo_dir_ms", (time.perf_counter() - start) / probe * 1000)
