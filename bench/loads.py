"""The client side of the workloads: skopeo copies and wrk request loops, each timed and bounded.

skopeo is the real client the issue names for pushes and pulls (TLS verified against the run's CA,
credentials on its command line, which is fine for a throwaway benchmark user). wrk (C, epoll, one thread
per core) drives the request loops, so the load generator costs far less CPU than the servers it measures;
its Lua `done` hook prints exact totals and latency percentiles as JSON.

Owns: running these clients and turning their output into numbers.
Must not: talk to anything but 127.0.0.1, or run without a time bound.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import prereqs, servers, tlsfiles

SKOPEO_TIMEOUT = 600.0
_MARK = "BENCHJSON "
_WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCHJSON {\"requests\":%d,\"bytes\":%d,\"duration_us\":%d,\"connect\":%d,\"read\":%d," ..
    "\"write\":%d,\"status\":%d,\"timeout\":%d,\"p50_us\":%d,\"p99_us\":%d}\n",
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


class LoadError(RuntimeError):
    """A client failed: the workload's numbers would be meaningless."""


def client_cpu_seconds() -> float:
    """User + system CPU of every client process this process has run and reaped so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(argv: list[str], *, timeout: float) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        shown = " ".join(a if not a.startswith(servers.USER + ":") else "<creds>" for a in argv)
        raise LoadError(f"{shown} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return elapsed


def skopeo_push(
    *, tools: prereqs.Tools, tls: tlsfiles.ServerTLS, target: servers.Target, source: str, dest: str
) -> float:
    """Seconds for `skopeo copy <source> docker://<target>/<dest>`."""
    return _run(
        [tools.skopeo, "copy", "--quiet", "--dest-cert-dir", str(tls.cert_dir), "--dest-creds", target.creds,
         source, f"docker://{target.address}/{dest}"],
        timeout=SKOPEO_TIMEOUT,
    )  # fmt: skip


def skopeo_pull(
    *, tools: prereqs.Tools, tls: tlsfiles.ServerTLS, target: servers.Target, ref: str, into: Path
) -> float:
    """Seconds for `skopeo copy docker://<target>/<ref> dir:<into>` into a fresh directory (removed after)."""
    shutil.rmtree(into, ignore_errors=True)
    try:
        return _run(
            [tools.skopeo, "copy", "--quiet", "--src-cert-dir", str(tls.cert_dir),
             "--src-creds", target.creds, f"docker://{target.address}/{ref}", f"dir:{into}"],
            timeout=SKOPEO_TIMEOUT,
        )  # fmt: skip
    finally:
        shutil.rmtree(into, ignore_errors=True)


def lean_push(
    *, tls: tlsfiles.ServerTLS, target: servers.Target, layout: Path, tags: list[str], repo: str,
    style: str, chunk_mib: int = 64,
) -> float:  # fmt: skip
    """Seconds for `python -m bench.uploader` (issue 15's lean client) pushing `tags` of `layout` to `repo`,
    process start included; the credentials go through its environment, not its command line."""
    argv = [sys.executable, "-m", "bench.uploader", "--address", target.address, "--ca", str(tls.ca_file),
            "--layout", str(layout), "--repo", repo, "--tags", ",".join(tags), "--style", style,
            "--chunk-mib", str(chunk_mib)]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=SKOPEO_TIMEOUT, check=False,
                          cwd=prereqs.ROOT, env={**os.environ, "BENCH_CREDS": target.creds})  # fmt: skip
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise LoadError(f"bench.uploader to {target.key} exited {done.returncode}: {done.stderr[-2000:]}")
    return elapsed


def skopeo_to_dir(*, tools: prereqs.Tools, source: str, into: Path) -> float:
    """Seconds for `skopeo copy <source> dir:<into>` with no registry involved (removed after)."""
    shutil.rmtree(into, ignore_errors=True)
    try:
        return _run([tools.skopeo, "copy", "--quiet", source, f"dir:{into}"], timeout=SKOPEO_TIMEOUT)
    finally:
        shutil.rmtree(into, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class WrkResult:
    requests: int
    bytes: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6


def wrk(
    *,
    tools: prereqs.Tools,
    url: str,
    connections: int,
    seconds: int,
    headers: dict[str, str],
    script_dir: Path,
    request_timeout: int = 30,
) -> WrkResult:
    """`wrk` with two threads (one per core) for `seconds`; any error or non-2xx/3xx answer is fatal."""
    script = script_dir / "done.lua"
    script.write_text(_WRK_DONE)
    argv = [tools.wrk, "-t", str(min(2, connections)), "-c", str(connections), "-d", f"{seconds}s",
            "--timeout", f"{request_timeout}s", "-s", str(script)]  # fmt: skip
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(url)
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + request_timeout + 30, check=False
    )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(_MARK)), None)
    if done.returncode != 0 or line is None:
        raise LoadError(f"wrk {url} exited {done.returncode}: {done.stderr.strip()} {done.stdout[-1000:]}")
    raw = json.loads(line.removeprefix(_MARK))
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    if errors:
        raise LoadError(f"wrk {url}: {errors} failed requests ({raw}); the server is not answering correctly")
    return WrkResult(
        requests=raw["requests"],
        bytes=raw["bytes"],
        seconds=raw["duration_us"] / 1e6,
        errors=errors,
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
    )
