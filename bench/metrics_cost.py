"""`python -m bench.metrics_cost`: what Prometheus metrics cost the registry, measured side by side.

Issue 12's target: metrics cost < 5% of authenticated manifest GET throughput and of blob GET throughput.

Two `dockyard-registry serve --no-tls` processes over two data directories with the same user (bcrypt,
`user add`) and the same image (a small config, one `--blob-mib` layer): one with `--metrics-listen`,
one without. Each round runs, for each of the two in an order that alternates from round to round,
authenticated manifest GETs and then authenticated blob GETs for `--seconds` each, with wrk (`-t2`,
`--connections`) when it is installed; otherwise with an aiohttp client loop in this process, which is
client-bound on a small machine and only good for a smoke run. Prints every sample, the medians and the
on/off ratio; the metrics endpoint is scraped at the end to show the requests were counted.

Owns: both servers, the loads and the table. Must not: leave a process or the temp dir behind.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
from tests.support import procs as support_procs

MiB = 1024 * 1024
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
USER, PASSWORD = "bench", "bench-password-not-secret"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.metrics_cost", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds per load and target (default 10)")
    p.add_argument("--blob-mib", type=int, default=64, help="size of the blob GET in MiB (default 64)")
    p.add_argument("--connections", type=int, default=64, help="connections for manifest GETs (default 64)")
    return p


class Server:
    def __init__(self, workdir: Path, name: str, *, metrics: bool, extra_args: tuple[str, ...] = ()) -> None:
        self.name = name
        self.data = workdir / name
        exe = str(Path(sys.executable).parent / "dockyard-registry")
        subprocess.run(
            [exe, "user", "add", USER, "--data-dir", str(self.data), "--access", "admin", "--password-stdin"],
            input=PASSWORD + "\n",
            text=True,
            check=True,
            capture_output=True,
        )
        # Reserved, not picked free: the ports stay ours until the server binds them (`tests.support.procs`).
        ports = [support_procs.reserve_port() for _ in range(2 if metrics else 1)]
        self.port = ports[0].number
        self.metrics_port = ports[1].number if metrics else None
        argv = [exe, "serve", "--data-dir", str(self.data), "--listen", f"127.0.0.1:{self.port}", "--no-tls"]
        if self.metrics_port is not None:
            argv += ["--metrics-listen", f"127.0.0.1:{self.metrics_port}"]
        argv += extra_args
        self.proc = support_procs.Process(name=name, argv=argv, log=workdir / f"{name}.log", ports=ports)
        self.base = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.stop(grace=30)


AUTH = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}


async def prepare(server: Server, *, blob: bytes) -> tuple[str, str]:
    """Wait for the server, push the image; returns (manifest URL, blob URL)."""
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    async with aiohttp.ClientSession(headers=AUTH) as http:
        deadline = time.monotonic() + 60
        while True:
            try:
                async with http.get(f"{server.base}/v2/") as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientConnectionError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{server.name} did not start")
            await asyncio.sleep(0.1)
        descriptors = []
        for data in (config, blob):
            d = "sha256:" + hashlib.sha256(data).hexdigest()
            async with http.post(f"{server.base}/v2/bench/blobs/uploads/?digest={d}", data=data) as resp:
                assert resp.status == 201, await resp.text()
            descriptors.append({"mediaType": "application/octet-stream", "digest": d, "size": len(data)})
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": descriptors[0],
                "layers": descriptors[1:],
            }
        ).encode()
        headers = {"Content-Type": OCI_MANIFEST}
        async with http.put(f"{server.base}/v2/bench/manifests/v1", data=manifest, headers=headers) as resp:
            assert resp.status == 201, await resp.text()
    return f"{server.base}/v2/bench/manifests/v1", f"{server.base}/v2/bench/blobs/{descriptors[1]['digest']}"


def _wrk(wrk: str, url: str, *, seconds: float, connections: int, authorization: str) -> tuple[float, float]:
    """(requests/s, MB/s) from wrk's summary."""
    argv = [wrk, "-t", "2", "-c", str(connections), "-d", f"{max(1, round(seconds))}s"]
    argv += ["-H", f"Authorization: {authorization}", "-H", f"Accept: {OCI_MANIFEST}", url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"Transfer/sec:\s+([\d.]+)([KMG]?B)", out)
    scale = {"B": 1 / MiB, "KB": 1 / 1024, "MB": 1.0, "GB": 1024.0}
    return rps, float(m.group(1)) * scale[m.group(2)] if m else 0.0


async def _python_load(
    url: str, *, seconds: float, connections: int, authorization: str
) -> tuple[float, float]:
    """A closed-loop aiohttp client (smoke only: client-bound on a small machine)."""
    done = 0
    received = 0
    until = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    headers = {"Authorization": authorization, "Accept": OCI_MANIFEST}
    async with aiohttp.ClientSession(headers=headers, connector=connector) as http:

        async def worker() -> None:
            nonlocal done, received
            while time.monotonic() < until:
                async with http.get(url) as resp:
                    if resp.status != 200:
                        raise SystemExit(f"GET {url}: {resp.status}")
                    async for chunk in resp.content.iter_chunked(1 << 20):
                        received += len(chunk)
                done += 1

        began = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.monotonic() - began
    return done / elapsed, received / MiB / elapsed


def load(
    url: str, *, seconds: float, connections: int, authorization: str = AUTH["Authorization"]
) -> tuple[float, float]:
    """(requests/s, MB/s) of authenticated GETs of `url`: wrk when installed, else a Python client."""
    wrk = shutil.which("wrk")
    if wrk is not None:
        return _wrk(wrk, url, seconds=seconds, connections=connections, authorization=authorization)
    return asyncio.run(
        _python_load(url, seconds=seconds, connections=connections, authorization=authorization)
    )


WORKLOADS = (("manifest GET", "req/s", "manifest"), ("blob GET", "MB/s", "blob"))


def run(*, rounds: int, seconds: float, blob_mib: int, connections: int) -> dict[str, list[float]]:
    """Measure both servers side by side; per round and workload the on/off throughput share in percent
    (`metrics_manifest_share`, `metrics_blob_share`, paired within a round so that the machine's drifting
    load cancels out) and the raw figures (`metrics_<on|off>_<manifest|blob>`)."""
    if shutil.which("wrk") is None:
        print("wrk not installed: using a Python client (smoke only; `make bench` installs wrk)", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="dockyard-metrics-bench-"))
    servers = [Server(workdir, "metrics-on", metrics=True), Server(workdir, "metrics-off", metrics=False)]
    out: dict[str, list[float]] = {}
    try:
        blob = os.urandom(blob_mib * MiB)
        urls = {s.name: asyncio.run(prepare(s, blob=blob)) for s in servers}
        for r in range(rounds):
            order = servers if r % 2 == 0 else servers[::-1]
            for (workload, _, key), index, conns, column in zip(
                WORKLOADS, (0, 1), (connections, min(16, connections)), (0, 1), strict=True
            ):
                got: dict[str, float] = {}
                for s in order:
                    value = load(urls[s.name][index], seconds=seconds, connections=conns)[column]
                    got[s.name] = value
                    out.setdefault(f"metrics_{s.name.split('-')[1]}_{key}", []).append(value)
                    print(f"  round {r + 1} {workload:12} {s.name:11} {value:10.1f}", flush=True)
                if got["metrics-off"] > 0:
                    out.setdefault(f"metrics_{key}_share", []).append(
                        100 * got["metrics-on"] / got["metrics-off"]
                    )
        assert servers[0].metrics_port is not None
        with urllib.request.urlopen(
            f"http://127.0.0.1:{servers[0].metrics_port}/metrics", timeout=10
        ) as resp:
            counted = sum(
                float(line.rsplit(" ", 1)[1])
                for line in resp.read().decode().splitlines()
                if line.startswith("dockyard_registry_http_requests_total{")
            )
        print(f"(metrics-on counted {counted:.0f} requests)")
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    found = run(
        rounds=args.rounds, seconds=args.seconds, blob_mib=args.blob_mib, connections=args.connections
    )
    print(f"\n{'workload':14} {'unit':6} {'metrics on':>11} {'metrics off':>12} {'on/off':>7}")
    for workload, unit, key in WORKLOADS:
        on = statistics.median(found[f"metrics_on_{key}"])
        off = statistics.median(found[f"metrics_off_{key}"])
        share = statistics.median(found.get(f"metrics_{key}_share", [0.0]))
        print(
            f"{workload:14} {unit:6} {on:11.1f} {off:12.1f} {on / off:7.3f} (per-round median {share:.1f}%)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
