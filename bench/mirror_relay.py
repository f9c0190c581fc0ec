"""`python -m bench.mirror_relay`: the registry's own CPU seconds for relaying cold blobs from an upstream.

`bench.mirror_pull` times whole pulls through a mirror and reads each process's CPU from /proc, but on a
busy two-core machine skopeo, two nginx and the upstream share the cores with the registry, and its CPU
column moves by ±20% between identical runs. This measures the registry's part alone, with the registry's
own code in this process: the upstream is the same Distribution v3 behind nginx with TLS and Basic auth
(`servers.start_distribution`); `Store`, `PullThrough` and the registry's aiohttp app run here, on a
loopback TCP port without nginx or authentication; the clients are plain HTTP GETs in child processes (one
per layer, all at once, as skopeo pulls), each hashing what it receives and failing on a wrong digest.

Each round relays every layer cold (a fresh data directory), waits until the fetches are committed
(fsync included) and reads this process's CPU (getrusage: the event loop plus the hashing/writing worker
threads) and the event loop thread's alone. Prints each round, the medians, and CPU-s per GiB relayed.
Before the timed rounds one manifest GET fills the upstream client's authentication (as skopeo's pull
does). Owns: the temp dir, the upstream, the app. Must not: leave a process or the temp dir behind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web
from tests.support import procs as support_procs

from bench import images, loads, prereqs, servers, tlsfiles
from dockyard_registry import app, digest, mirror, mirrors, state, store
from dockyard_registry.storage import filesystem

PREFIX = "up"
# The client: GET a URL, hash the body as it arrives, exit 1 unless it has the digest in the URL.
_CLIENT = """
import hashlib, sys, urllib.request
url = sys.argv[1]
h = hashlib.sha256()
with urllib.request.urlopen(url) as r:
    while chunk := r.read(1 << 20):
        h.update(chunk)
sys.exit(0 if url.endswith("sha256:" + h.hexdigest()) else 1)
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.mirror_relay", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5, help="cold relays of the image (default 5)")
    p.add_argument("--layers", type=int, default=4, help="layers, fetched at once (default 4)")
    p.add_argument("--layer-mib", type=int, default=64, help="MiB per layer (default 64)")
    return p


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _relay_once(*, work: Path, conf: Path, layers: list[str], port: int) -> tuple[float, float, float]:
    """(process CPU-s, event loop thread CPU-s, wall seconds) of one cold relay of `layers`."""
    data = work / f"data-{secrets.token_hex(4)}"
    st = store.Store(filesystem.FilesystemDriver(data))
    pull = mirror.PullThrough(mirrors.load(conf), store=st)
    await pull.prepare()
    runner = web.AppRunner(app.create_app(state.Settings(store=st, authenticator=None, mirror=pull)))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        base = f"http://127.0.0.1:{port}/v2/{PREFIX}/lib/app"
        warm = await asyncio.create_subprocess_exec(sys.executable, "-c", _CLIENT, f"{base}/manifests/t")
        await warm.wait()  # its exit code says nothing (the URL names no digest): the status is checked below
        cpu, loop_cpu, wall = _cpu(), time.thread_time(), time.perf_counter()
        clients = [
            await asyncio.create_subprocess_exec(sys.executable, "-c", _CLIENT, f"{base}/blobs/{d}")
            for d in layers
        ]
        codes = [await c.wait() for c in clients]
        # The commits (fsyncs) after each last chunk count too; PullThrough only tells how many run.
        while pull.fetches_running:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        spent = (_cpu() - cpu, time.thread_time() - loop_cpu, time.perf_counter() - wall)
        if codes != [0] * len(codes):
            raise SystemExit(f"bench: a client did not receive its blob intact: exit codes {codes}")
        for d in layers:
            st.blob_size(f"{PREFIX}/lib/app", digest.parse(d))  # BlobUnknownError unless stored
        return spent
    finally:
        await runner.cleanup()
        await pull.close()
        shutil.rmtree(data, ignore_errors=True)


def run(*, rounds: int, layers: int, layer_mib: int) -> dict[str, float]:
    """Medians of `mirror_relay_cpu_seconds` (the process), `mirror_relay_loop_cpu_seconds` (the event loop
    thread) and `mirror_relay_seconds` per cold relay of the image, and `mirror_relay_cpu_per_gib`."""
    tools = prereqs.ensure(python=sys.executable)
    if tools.registry_v3 is None:
        raise SystemExit("bench: Distribution v3 is not in the tool cache: `bash hack/tools.sh distribution`")

    rows: list[tuple[float, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="dockyard-relay-bench-") as tmp:
        work = Path(tmp)
        tls = tlsfiles.write(directory=work / "tls")
        upstream = servers.start_distribution(
            key="upstream", label="Distribution v3 (upstream)", binary=tools.registry_v3, tools=tools,
            workdir=work / "upstream", tls=tls, password=secrets.token_urlsafe(12),
        )  # fmt: skip
        try:
            (work / "username").write_text(servers.USER)
            (work / "password").write_text(upstream.password)
            conf = work / "mirrors.yaml"
            conf.write_text(
                f"mirrors:\n  - prefix: {PREFIX}\n    upstream: https://{upstream.address}\n"
                f"    usernameFile: {work / 'username'}\n    passwordFile: {work / 'password'}\n"
                f"    caFile: {tls.ca_file}\n"
            )
            layout = images.Layout(work / "layout")
            manifest = layout.add_image(tag="t", layer_sizes=[layer_mib << 20] * layers)
            loads.skopeo_push(tools=tools, tls=tls, target=upstream, source=layout.reference("t"),
                              dest="lib/app:t")  # fmt: skip
            digests = [layer["digest"] for layer in json.loads(manifest.path.read_bytes())["layers"]]
            port = support_procs.reserve_port().number
            for r in range(rounds):
                os.sync()  # untimed: the layout's and earlier rounds' dirty pages are no round's cost
                rows.append(asyncio.run(_relay_once(work=work, conf=conf, layers=digests, port=port)))
                cpu, loop_cpu, wall = rows[-1]
                print(f"  round {r + 1}: registry CPU {cpu:.2f} s (event loop {loop_cpu:.2f} s), "
                      f"wall {wall:.2f} s", flush=True)  # fmt: skip
        finally:
            upstream.stop()
    gib = layers * layer_mib / 1024
    found = {
        "mirror_relay_cpu_seconds": statistics.median(r[0] for r in rows),
        "mirror_relay_loop_cpu_seconds": statistics.median(r[1] for r in rows),
        "mirror_relay_seconds": statistics.median(r[2] for r in rows),
    }
    found["mirror_relay_cpu_per_gib"] = found["mirror_relay_cpu_seconds"] / gib
    return found


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    found = run(rounds=args.rounds, layers=args.layers, layer_mib=args.layer_mib)
    size = args.layers * args.layer_mib
    print(f"\ncold relay of {args.layers} x {args.layer_mib} MiB ({size} MiB), medians of {args.rounds}:")
    print(f"  registry CPU      {found['mirror_relay_cpu_seconds']:.2f} s "
          f"({found['mirror_relay_cpu_per_gib']:.2f} CPU-s per GiB)")  # fmt: skip
    print(f"  event loop thread {found['mirror_relay_loop_cpu_seconds']:.2f} s")
    print(f"  wall              {found['mirror_relay_seconds']:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
