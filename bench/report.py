"""The results: a table of medians with ratios against the references, and the JSON file to compare runs by.

Owns: the list of rows (metric, unit, which direction is better, the issue's target), medians and ratios,
formatting, and writing `bench/results/<timestamp>.json`.
Must not: measure anything.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclasses.dataclass(frozen=True)
class Row:
    metric: str
    title: str
    unit: str
    higher_is_better: bool
    ratio_target: float | None = None  # Dockyard / reference (for lower-is-better: at most this)
    absolute_target: float | None = None  # Dockyard's own value (lower-is-better rows: at most this)
    note: str = ""  # a target that is no number ("O(1)"): printed, not judged


ROWS = [
    Row("push_1g", "1 GiB push, skopeo (4 x 256 MiB)", "MB/s", True, ratio_target=1.5),
    Row("push_1g_cpu_gib", "  server CPU-s per GiB (registry+nginx)", "CPU-s", False),
    Row("push_lean", "1 GiB push, lean client, monolithic PUT", "MB/s", True),
    Row("push_lean_cpu_gib", "  server CPU-s per GiB (registry+nginx)", "CPU-s", False),
    Row("push_chunked", "1 GiB push, lean client, 64 MiB PATCHes", "MB/s", True),
    Row("push_chunked_cpu_gib", "  server CPU-s per GiB (registry+nginx)", "CPU-s", False),
    Row("pull_1g", "1 GiB pull, skopeo into a fresh dir", "MB/s", True, ratio_target=1.2),
    Row("small_push", "50 small images (3 x 64 KiB), skopeo", "images/s", True, ratio_target=2.0),
    Row("small_lean", "  the same, lean client (one connection)", "images/s", True),
    Row("skopeo_dir_ms", "  skopeo alone per image, into dir:", "ms", False),
    Row("manifest_rps", "manifest GETs, 64 clients, auth", "req/s", True, ratio_target=2.0),
    Row("manifest_p50", "  p50 latency", "ms", False),
    Row("manifest_p99", "  p99 latency", "ms", False, ratio_target=0.5),
    Row("blob_mbps", "16 concurrent GETs of a 64 MiB blob", "MB/s", True, ratio_target=1.6),
    Row("blob_of_ceiling", "  share of the static-file ceiling", "%", True, absolute_target=85.0),
    Row("push_peak_rss", "registry peak RSS during 1 GiB push", "MB", False, absolute_target=150.0),
    Row("auth_logins_ok", "6 first logins, 200-conn password flood", "logins", True, absolute_target=6.0),
    Row("auth_login_max", "  max login latency", "s", False, absolute_target=2.0),
    Row("auth_login_p50", "  p50 login latency", "s", False),
    Row("auth_flood_rps", "  flood requests answered", "req/s", True),
    Row("auth_flood_429_pct", "  of them 429 (over its budget)", "%", True),
    Row("auth_flood_401_pct", "  of them 401 (bcrypt checked)", "%", False),
]

# Issue 12's targets for the gc bench, judged at its own size only (10,000 manifests, 50,000 blobs).
GC_TARGET_MANIFESTS = 10_000


def maintenance_rows(gc_manifests: int | None) -> list[Row]:
    """Rows of workloads 9 (metrics on/off, paired per round) and 10 (gc over a store of `gc_manifests`)."""
    rows = [
        Row("metrics_manifest_share", "metrics on/off: auth manifest GETs", "%", True, absolute_target=95.0),
        Row("metrics_blob_share", "metrics on/off: blob GETs", "%", True, absolute_target=95.0),
    ]
    if gc_manifests is None:
        return rows
    judged = gc_manifests == GC_TARGET_MANIFESTS
    return [
        *rows,
        Row("gc_mark_seconds", f"gc over {gc_manifests} manifests, nothing to delete", "s", False,
            absolute_target=60.0 if judged else None),
        Row("gc_delete_seconds", "  gc --delete-untagged (half of them)", "s", False,
            absolute_target=60.0 if judged else None),
        Row("gc_delete_peak_mb", "  its peak RSS", "MB", False, absolute_target=200.0 if judged else None),
    ]  # fmt: skip


# Issue 13's targets: a pull through a pull-through mirror against the same pull from its upstream.
MIRROR_ROWS = [
    Row("mirror_cold_ratio", "mirror: cold pull / upstream pull", "x", False, absolute_target=1.2),
    Row("mirror_warm_ratio", "mirror: warm pull / upstream pull", "x", False, absolute_target=1.0),
    Row("mirror_upstream_seconds", "  the upstream pull (256 MiB)", "s", False),
]


def s3_rows(image_mib: int) -> list[Row]:
    """Workload 12 (issue 14): Dockyard and Distribution v3 on one gofakes3 server. Ratios are paired
    within a run; RSS is judged at 1 GiB only; pull without redirects and small pushes have no target."""
    rss_target = 150.0 if image_mib == 1024 else None
    return [
        Row("s3_push_ratio", f"S3: {image_mib} MiB push, Dockyard / Dist. v3", "x", True,
            absolute_target=1.3),
        Row("s3_pull_ratio", "S3: pull, redirects, Dockyard / Dist. v3", "x", True, absolute_target=1.5),
        Row("s3_pull_stream_ratio", "S3: pull, no redirects, Dockyard / Dist. v3", "x", True),
        Row("s3_small_ratio", "S3: small pushes, Dockyard / Dist. v3", "x", True),
        Row("s3_dockyard_rss", "S3: Dockyard peak RSS during the push", "MB", False,
            absolute_target=rss_target),
        Row("s3_dist3_rss", "  Distribution v3 peak RSS during the push", "MB", False),
        Row("s3_dockyard_push", "  Dockyard push", "MB/s", True),
        Row("s3_dist3_push", "  Distribution v3 push", "MB/s", True),
        Row("s3_dockyard_push_cpu", "  Dockyard push, CPU-s per GiB (registry+nginx)", "CPU-s", False),
        Row("s3_dist3_push_cpu", "  Distribution v3 push, CPU-s per GiB (registry+nginx)", "CPU-s", False),
        Row("s3_dockyard_push_s3_cpu", "  the S3 server's CPU-s per GiB, Dockyard's push", "CPU-s", False),
        Row("s3_dist3_push_s3_cpu", "  the S3 server's CPU-s per GiB, Dist. v3's push", "CPU-s", False),
        Row("s3_dockyard_pull", "  Dockyard pull, redirects", "MB/s", True),
        Row("s3_dist3_pull", "  Distribution v3 pull, redirects", "MB/s", True),
        Row("s3_dockyard_pull_stream", "  Dockyard pull, no redirects", "MB/s", True),
        Row("s3_dist3_pull_stream", "  Distribution v3 pull, no redirects", "MB/s", True),
        Row("s3_dockyard_small", "  Dockyard small pushes (3 x 64 KiB)", "images/s", True),
        Row("s3_dist3_small", "  Distribution v3 small pushes", "images/s", True),
    ]  # fmt: skip


# Issue 16's target: authenticated manifest GETs with a Bearer registry token within 10% of Basic (warm).
TOKEN_ROWS = [
    Row("token_gets_share", "Bearer token / Basic: auth manifest GETs", "%", True, absolute_target=90.0),
    Row("token_gets_bearer", "  manifest GETs with a Bearer token", "req/s", True),
    Row("token_gets_basic", "  manifest GETs with Basic (warm cache)", "req/s", True),
]


# The operator's targets by batch size: issue 6 asked for 100 objects, issue 11 for 1,000.
OPERATOR_TARGETS = {100: (30.0, 150.0), 1000: (120.0, 200.0)}


def operator_rows(objects: int) -> list[Row]:
    """Rows of workload 7 for a batch of `objects`; convergence and RSS are judged at 100 and 1,000 only."""
    converge, rss = OPERATOR_TARGETS.get(objects, (None, None))
    return [
        Row("operator_1", "operator: 1 object converged", "s", False, absolute_target=2.0),
        Row("operator_many", f"operator: {objects} objects converged", "s", False, absolute_target=converge),
        Row("operator_batch_writes", "  batch: API writes/object", "", False),
        Row("operator_batch_reads", "  batch: API reads (GET, LIST)/object", "", False),
        Row("operator_batch_cpu", "  batch: operator CPU-s/object", "CPU-s", False),
        Row("operator_batch_apiserver_cpu", "  batch: kube-apiserver CPU-s/object", "CPU-s", False),
        Row("operator_rss", "operator peak RSS", "MB", False, absolute_target=rss),
        Row("operator_resync_writes", "operator resync: API writes/object", "", False, absolute_target=1.0),
        Row("operator_resync_reads", "  API reads (GET, LIST)/object", "", False, note="O(1)"),
        Row("operator_resync_listed", "  objects listed/object (at most)", "", False, note="O(1)"),
    ]


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _verdict(row: Row, mine: float | None, ratio: float | None) -> str:
    checks: list[bool] = []
    if row.ratio_target is not None and ratio is not None:
        checks.append(ratio >= row.ratio_target if row.higher_is_better else ratio <= row.ratio_target)
    if row.absolute_target is not None and mine is not None:
        checks.append(mine >= row.absolute_target if row.higher_is_better else mine <= row.absolute_target)
    if not checks:
        return ""
    return "met" if all(checks) else "MISSED"


def _target_text(row: Row) -> str:
    parts = []
    if row.ratio_target is not None:
        parts.append(f"{'>=' if row.higher_is_better else '<='} {row.ratio_target}x")
    if row.absolute_target is not None:
        unit = f" {row.unit}" if row.unit else ""
        parts.append(f"{'>=' if row.higher_is_better else '<='} {row.absolute_target:g}{unit}")
    if row.note:
        parts.append(row.note)
    return ", ".join(parts)


def table(*, samples: Mapping[str, Mapping[str, Sequence[float]]], labels: Mapping[str, str],
          references: Sequence[str]) -> str:  # fmt: skip
    """Medians per target, the ratio Dockyard / each reference, the target and whether it is met
    (judged against the first reference, Distribution 2.8.2). The operator's rows are titled by the batch
    size recorded as the `operator_objects` sample."""
    objects = samples.get("dockyard", {}).get("operator_objects")
    gc_manifests = samples.get("dockyard", {}).get("gc_manifests")
    rows = [
        *ROWS,
        *maintenance_rows(int(gc_manifests[0]) if gc_manifests else None),
        *(MIRROR_ROWS if "mirror_cold_ratio" in samples.get("dockyard", {}) else []),
        *(s3_rows(int(s3_mib[0])) if (s3_mib := samples.get("dockyard", {}).get("s3_image_mib")) else []),
        *TOKEN_ROWS,
        *(operator_rows(int(objects[0])) if objects else []),
    ]
    header = ["workload", "unit", labels["dockyard"]]
    for ref in references:
        header += [labels[ref], "ratio"]
    header += ["target", "verdict", "runs"]
    lines = [header]
    samples = _with_ceiling_share(samples)
    for row in rows:
        mine = median(samples.get("dockyard", {}).get(row.metric, []))
        if mine is None and not any(samples.get(r, {}).get(row.metric) for r in references):
            continue
        cells = [row.title, row.unit, _fmt(mine)]
        first_ratio = None
        for i, ref in enumerate(references):
            theirs = median(samples.get(ref, {}).get(row.metric, []))
            ratio = mine / theirs if mine is not None and theirs else None
            if i == 0:
                first_ratio = ratio
            cells += [_fmt(theirs), f"{ratio:.2f}x" if ratio is not None else "-"]
        runs = len(samples.get("dockyard", {}).get(row.metric, []))
        cells += [_target_text(row), _verdict(row, mine, first_ratio), str(runs)]
        lines.append(cells)
    return _render(lines)


def _with_ceiling_share(
    samples: Mapping[str, Mapping[str, Sequence[float]]],
) -> dict[str, dict[str, Sequence[float]]]:
    """Add each target's blob GET median as a share of the static file's median (one value, not per
    run: the two loops of one run are seconds apart and the machine's load drifts in between)."""
    out = {target: dict(metrics) for target, metrics in samples.items()}
    ceiling = median(samples.get("static", {}).get("blob_mbps", []))
    if ceiling:
        for target, metrics in out.items():
            mbps = median(metrics.get("blob_mbps", []))
            if target != "static" and mbps is not None:
                metrics["blob_of_ceiling"] = [100 * mbps / ceiling]
    return out


def cpu_table(
    *, cpu: Mapping[str, Mapping[str, Mapping[str, Sequence[float]]]], labels: Mapping[str, str]
) -> str:
    """Median CPU seconds per workload run, per process: the registry, nginx (master + workers), and the
    client that drove the workload (skopeo or wrk)."""
    workloads = sorted({w for per in cpu.values() for w in per}, key=_workload_order)
    lines = [["CPU seconds, median per run", *workloads]]
    for target, per in cpu.items():
        for proc in _PROCS:
            if not any(proc in per.get(w, {}) for w in workloads):
                continue
            cells = [f"{labels[target]}: {proc}"]
            cells += [_fmt(median(per.get(w, {}).get(proc, []))) for w in workloads]
            lines.append(cells)
    return _render(lines, left=1)


_PROCS = ("registry", "nginx", "client")
_ORDER = [
    "push_1g",
    "push_lean",
    "push_chunked",
    "pull_1g",
    "small_push",
    "small_lean",
    "manifest_get",
    "blob_get",
    "auth_flood",
]


def _workload_order(name: str) -> int:
    return _ORDER.index(name) if name in _ORDER else len(_ORDER)


def _render(lines: list[list[str]], *, left: int = 2) -> str:
    """Columns padded to their widest cell; the first `left` columns are text (left-aligned)."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(cell.ljust(w) if i < left else cell.rjust(w) for i, (cell, w) in
                             enumerate(zip(line, widths, strict=True))))  # fmt: skip
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


# Issue 15's targets, judged against Distribution v3 (2.8.2 when v3 did not run): (title, metric, ratio,
# higher is better, a multiple of the sha256 floor the value must stay under).
PUSH_TARGETS = [
    ("server CPU per GiB, lean push <= 0.6x ref", "push_lean_cpu_gib", 0.6, False, 2.0),
    ("1 GiB push, lean client >= 1.5x ref", "push_lean", 1.5, True, None),
    ("1 GiB push, skopeo >= 1.2x ref", "push_1g", 1.2, True, None),
    ("small pushes, lean client >= 2x ref", "small_lean", 2.0, True, None),
]
PUSH_WORKLOADS = [("push_1g", "skopeo"), ("push_lean", "lean, monolithic PUT"),
                  ("push_chunked", "lean, 64 MiB PATCHes")]  # fmt: skip


def push_table(
    *, samples: Mapping[str, Mapping[str, Sequence[float]]], labels: Mapping[str, str],
    references: Sequence[str], implementation: str,
) -> str:  # fmt: skip
    """Issue 15: MB/s and server CPU-seconds per GiB of every push workload per target, the sha256
    floor beside them, and the issue's targets with their verdicts, all from this run's medians."""
    floor = median(samples.get("dockyard", {}).get("sha256_floor", []))
    others = [t for t in samples if t not in ("dockyard", "static", *references)]
    targets = ["dockyard", *others, *references]
    lines = [["push workload", "unit", *(labels[t] for t in targets)]]
    for metric, title in PUSH_WORKLOADS:
        for suffix, unit in (("", "MB/s"), ("_cpu_gib", "CPU-s/GiB")):
            values = [median(samples.get(t, {}).get(metric + suffix, [])) for t in targets]
            if any(v is not None for v in values):
                name = title if not suffix else "  server (registry + nginx)"
                lines.append([name, unit, *(_fmt(v) for v in values)])
    lines.append(["sha256 floor (one pass, this process)", "CPU-s/GiB", _fmt(floor),
                  *("" for _ in targets[1:])])  # fmt: skip
    out = [_render(lines), f"sha256: {implementation}", ""]
    ref = "dist3" if "dist3" in references else (references[0] if references else None)
    verdicts = [["issue 15 target", f"Dockyard / {labels[ref] if ref else '-'}", "verdict"]]
    for title, metric, ratio_target, higher, floor_multiple in PUSH_TARGETS:
        mine = median(samples.get("dockyard", {}).get(metric, []))
        theirs = median(samples.get(ref, {}).get(metric, [])) if ref else None
        if mine is None or not theirs:
            verdicts.append([title, "-", "not measured"])
            continue
        ratio = mine / theirs
        ok = ratio >= ratio_target if higher else ratio <= ratio_target
        text = f"{ratio:.2f}x"
        if floor_multiple is not None and floor:
            text += f", {mine / floor:.2f}x floor (<= {floor_multiple:g}x)"
            ok = ok and mine <= floor_multiple * floor
        verdicts.append([title, text, "met" if ok else "MISSED"])
    verdicts.append(["no regression elsewhere", "compare the table above with the last recorded run", ""])
    out.append(_render(verdicts, left=2))
    return "\n".join(out)


def write_json(document: Mapping[str, Any]) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"{stamp}.json"
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return path
