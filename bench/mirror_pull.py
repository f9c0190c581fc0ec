"""`python -m bench.mirror_pull`: pulls through a Dockyard pull-through mirror against the upstream itself.

Issue 13's targets: a cold pull through the mirror (every blob fetched from the upstream while it is
streamed to the client and stored) takes at most 1.2 times the same pull from the upstream directly; a
warm pull (everything cached) is faster than the upstream.

Setup (untimed): the upstream is CNCF Distribution v3 (the Go tool cache) behind nginx with TLS and Basic
auth, as `make bench` runs it; Dockyard runs behind the operator's own nginx.conf with `serve --mirrors`
naming that upstream (its credentials in files, its CA). Each run pushes a fresh image (new random,
incompressible layers, so nothing is cached anywhere) to the upstream with skopeo, then times three skopeo
pulls into a fresh `dir:`: through the mirror (cold), through the mirror again (warm), and from the
upstream directly. skopeo verifies every digest on all three. The table shows per-run medians.

Before each timed pull the machine's dirty pages are flushed (`sync`, untimed, as `make bench` does
between targets): the layout and the push before the cold pull leave about 512 MiB unwritten
(Distribution does not fsync), and no pull should pay for that writeback. What a pull writes itself
(Dockyard's fsyncs of what it caches) stays in its time.

Each pull's CPU seconds are read from /proc before and after it: Dockyard's registry and its nginx
(master + workers), the upstream's nginx and Distribution, skopeo (getrusage of reaped children), and the
whole machine's busy time (/proc/stat), whose rest ("other") is the kernel's own threads (page
writeback, softirqs) and anything else running; the second table shows the medians.

Owns: the two servers, the images and the table. Must not: leave a process or the temp dir behind.
"""

from __future__ import annotations

import argparse
import collections
import os
import secrets
import statistics
import sys
import tempfile
from pathlib import Path

from bench import images, loads, prereqs, servers, tlsfiles

PREFIX = "up"
PULLS = ("upstream", "cold", "warm")
# CPU columns, in the order the bytes of a cold pull pass them; "other" is the machine's rest.
CPU_COLUMNS = ("upstream Distribution", "upstream nginx", "Dockyard registry", "Dockyard nginx", "skopeo")
_TICKS = os.sysconf("SC_CLK_TCK")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.mirror_pull", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="images pulled, each cold then warm (default 3)")
    p.add_argument("--layers", type=int, default=4, help="layers per image (default 4)")
    p.add_argument("--layer-mib", type=int, default=64, help="MiB per layer (default 64)")
    return p


def _mirrors_file(work: Path, *, upstream: servers.Target, tls: tlsfiles.ServerTLS) -> Path:
    (work / "username").write_text(servers.USER)
    (work / "password").write_text(upstream.password)
    (work / "password").chmod(0o600)
    path = work / "mirrors.yaml"
    path.write_text(
        f"""\
mirrors:
  - prefix: {PREFIX}
    upstream: https://{upstream.address}
    usernameFile: {work / "username"}
    passwordFile: {work / "password"}
    caFile: {tls.ca_file}
"""
    )
    return path


def _machine_busy_seconds() -> float:
    """CPU seconds every CPU of the machine spent not idle (nor waiting for I/O) since boot."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    return (sum(fields[:8]) - fields[3] - fields[4]) / _TICKS


def _cpu_now(*, upstream: servers.Target, dockyard: servers.Target) -> dict[str, float]:
    assert upstream.registry is not None and dockyard.registry is not None
    return {
        "upstream Distribution": upstream.registry.cpu_seconds(),
        "upstream nginx": upstream.nginx.cpu_seconds(),
        "Dockyard registry": dockyard.registry.cpu_seconds(),
        "Dockyard nginx": dockyard.nginx.cpu_seconds(),
        "skopeo": loads.client_cpu_seconds(),
        "machine": _machine_busy_seconds(),
    }


def _cpu_spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    spent = {k: after[k] - before[k] for k in before}
    spent["other"] = spent.pop("machine") - sum(spent.values())
    return spent


def cpu_table(found: dict[str, float]) -> str:
    """The median CPU seconds of each pull per process, from `run`'s `mirror_<pull>_cpu_<column>`."""
    columns = [*CPU_COLUMNS, "other"]
    heads = ["upstream Dist.", "upstream nginx", "registry", "Dockyard nginx", "skopeo", "other"]
    lines = [f"{'CPU seconds per pull, median':30}" + "".join(f"{h:>15}" for h in heads) + f"{'total':>9}"]
    for pull in PULLS:
        cells = [found[f"mirror_{pull}_cpu_{_key(c)}"] for c in columns]
        lines.append(f"{pull:30}" + "".join(f"{c:15.2f}" for c in cells) + f"{sum(cells):9.2f}")
    return "\n".join(lines)


def _key(column: str) -> str:
    return column.lower().replace("upstream distribution", "upstream registry").replace(" ", "_")


def run(*, runs: int, layers: int, layer_mib: int) -> dict[str, float]:
    """Median seconds of each pull, the two ratios to the upstream's, and the median CPU seconds of each
    pull per process (`mirror_cold_cpu_dockyard_registry`, ...)."""
    tools = prereqs.ensure(python=sys.executable)
    if tools.registry_v3 is None:
        raise SystemExit(
            "bench: Distribution v3 is not in the tool cache: run `bash hack/tools.sh distribution`"
        )
    timings: dict[str, list[float]] = {pull: [] for pull in PULLS}
    cpu: dict[str, list[dict[str, float]]] = collections.defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="dockyard-mirror-bench-") as tmp:
        work = Path(tmp)
        tls = tlsfiles.write(directory=work / "tls")
        upstream = servers.start_distribution(
            key="upstream", label="Distribution v3 (upstream)", binary=tools.registry_v3, tools=tools,
            workdir=work / "upstream", tls=tls, password=secrets.token_urlsafe(12),
        )  # fmt: skip
        try:
            mirror_conf = _mirrors_file(work, upstream=upstream, tls=tls)
            dockyard = servers.start_dockyard(
                tools=tools, workdir=work / "dockyard", tls=tls, password=secrets.token_urlsafe(12),
                extra_args=["--mirrors", str(mirror_conf)],
            )  # fmt: skip
            try:
                layout = images.Layout(work / "layout")
                into = work / "pulled"
                for r in range(runs):
                    tag = f"r{r}"
                    layout.add_image(tag=tag, layer_sizes=[layer_mib * 1024 * 1024] * layers)
                    loads.skopeo_push(tools=tools, tls=tls, target=upstream, source=layout.reference(tag),
                                      dest=f"lib/app:{tag}")  # fmt: skip
                    ref = f"{PREFIX}/lib/app:{tag}"

                    def pull(kind: str, target: servers.Target, reference: str) -> None:
                        os.sync()  # untimed: earlier writes' writeback is no pull's cost
                        before = _cpu_now(upstream=upstream, dockyard=dockyard)
                        timings[kind].append(
                            loads.skopeo_pull(tools=tools, tls=tls, target=target, ref=reference, into=into)
                        )
                        cpu[kind].append(_cpu_spent(before, _cpu_now(upstream=upstream, dockyard=dockyard)))

                    pull("cold", dockyard, ref)
                    pull("warm", dockyard, ref)
                    pull("upstream", upstream, f"lib/app:{tag}")
                    print(
                        f"  run {r + 1}: upstream {timings['upstream'][-1]:.2f} s, "
                        f"cold {timings['cold'][-1]:.2f} s, warm {timings['warm'][-1]:.2f} s",
                        flush=True,
                    )
                    for kind in PULLS:
                        spent = cpu[kind][-1]
                        shown = ", ".join(f"{c} {spent[c]:.2f}" for c in (*CPU_COLUMNS, "other"))
                        print(f"    CPU-s {kind}: {shown}", flush=True)
            finally:
                dockyard.stop()
        finally:
            upstream.stop()
    found = {f"mirror_{k}_seconds": statistics.median(v) for k, v in timings.items()}
    found["mirror_cold_ratio"] = found["mirror_cold_seconds"] / found["mirror_upstream_seconds"]
    found["mirror_warm_ratio"] = found["mirror_warm_seconds"] / found["mirror_upstream_seconds"]
    for kind in PULLS:
        for column in (*CPU_COLUMNS, "other"):
            found[f"mirror_{kind}_cpu_{_key(column)}"] = statistics.median(s[column] for s in cpu[kind])
    return found


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    size = args.layers * args.layer_mib
    found = run(runs=args.runs, layers=args.layers, layer_mib=args.layer_mib)
    print(f"\n{'pull of a ' + str(size) + ' MiB image':34} {'seconds':>8} {'x upstream':>11}  target")
    print(f"{'from the upstream directly':34} {found['mirror_upstream_seconds']:8.2f} {1.0:11.2f}")
    print(f"{'through the mirror, cold':34} {found['mirror_cold_seconds']:8.2f} "
          f"{found['mirror_cold_ratio']:11.2f}  ≤ 1.20")  # fmt: skip
    print(f"{'through the mirror, warm':34} {found['mirror_warm_seconds']:8.2f} "
          f"{found['mirror_warm_ratio']:11.2f}  < 1.00")  # fmt: skip
    print()
    print(cpu_table(found))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
