"""What the registry says about itself: its `/status` document turned into status fields and a verdict.

The registry serves `/status` on its metrics listener (`dockyard_registry.metrics`): the last storage check
(capacity, use, whether it is writable and below `--storage-max-fill`) and the online gc (schedule, next run,
last run as recorded in its status file). This module reads such documents (one per pod) into
`status.storage` and `status.maintenance`, decides StorageReady from them against the spec's thresholds, and
tells a gc run not yet reported (one Event per run) from one already in status. The time of the registry's
last storage check is left out on purpose: it changes every few seconds and would make every pass write
status. With pull-through mirrors the document also has `mirrors` (per prefix: upstream, reachable, last
error with its reason and time, last answered request, and `caError`: why a changed CA bundle is not in
use), read here and merged across pods; `mirror_status` turns them into `status.mirrors` and
`MirrorsReady`. The last answered request's time is kept in whole seconds: it moves with use, at most one
status write per pass.

Owns: the document's field names (the registry/operator contract), the thresholds' meaning, the messages.
Must not: fetch anything, read the clock, or know about Kubernetes objects; a document that is not what the
registry writes yields nothing rather than an exception (a half-upgraded pod must not fail a pass).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from dockyard_operator import model, policies
from dockyard_operator.conditions import Reason

_NOT_WRITABLE = ("not-writable", "stuck")


@dataclasses.dataclass(frozen=True)
class Reading:
    """One pod's `/status`, parsed."""

    storage: model.StorageStatus | None = None
    problem: str | None = None
    """The registry's storage problem (`none`, `unchecked`, `not-writable`, `full`, `stuck`)."""
    message: str = ""
    maintenance: model.MaintenanceStatus | None = None
    identities: tuple[model.IdentityIssuerStatus, ...] | None = None
    """Token issuers as the registry reports them; None from a registry that reports none."""
    mirrors: tuple[model.MirrorStatus, ...] | None = None
    """Per mirror prefix, the upstream's state; None when the document has no `mirrors`."""


def _identities(doc: Any) -> tuple[model.IdentityIssuerStatus, ...] | None:
    if not isinstance(doc, list):
        return None
    out = []
    for entry in doc:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            continue
        reachable = entry.get("reachable")
        out.append(
            model.IdentityIssuerStatus(
                name=entry["name"],
                kind=_text(entry.get("kind")),
                issuer=_text(entry.get("issuer")),
                reachable=reachable if isinstance(reachable, bool) else None,
                keys=_count(entry.get("keys")),
                error=(_text(entry.get("error")) or "")[:500] or None,
            )
        )
    return tuple(out)


def unreachable_issuers(reading: Reading) -> list[model.IdentityIssuerStatus]:
    """Issuers no pod could read (each pod tries them itself; one that reaches an issuer is enough)."""
    return [i for i in reading.identities or () if i.reachable is False]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _count(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _time(value: Any) -> datetime.datetime | None:
    seconds = _number(value)
    if seconds is None or seconds <= 0:
        return None
    return datetime.datetime.fromtimestamp(int(seconds), tz=datetime.UTC)


def _storage(doc: Mapping[str, Any]) -> tuple[model.StorageStatus | None, str | None, str]:
    if not doc.get("checked"):
        return None, None, ""
    problem, message = _text(doc.get("problem")), _text(doc.get("message")) or ""
    total, used = _count(doc.get("totalBytes")), _count(doc.get("usedBytes"))
    if problem == "unchecked" or total is None or used is None:
        return None, problem, message
    percent = used * 100 // total if total > 0 else None
    status = model.StorageStatus(
        capacity_bytes=total,
        used_bytes=used,
        used_percent=percent,
        writable=doc.get("ready") is True,
    )
    return status, problem, message


def _last_run(doc: Any) -> model.GcRunStatus | None:
    if not isinstance(doc, Mapping):
        return None
    failure, retention_error = _text(doc.get("failure")), _text(doc.get("retentionError"))
    message = failure or (
        f"retention rules unusable, the last good ones were used: {retention_error}"
        if retention_error
        else None
    )
    finished = _time(doc.get("finished"))
    if finished is None:
        return None
    return model.GcRunStatus(
        time=finished,
        started=_time(doc.get("started")),
        dry_run=doc.get("dryRun") is True,
        tags_deleted=_count(doc.get("tagsDeleted")),
        manifests_deleted=_count(doc.get("manifestsDeleted")),
        blobs_deleted=_count(doc.get("blobsDeleted")),
        bytes_freed=_count(doc.get("bytesFreed")),
        errors=_count(doc.get("errors")),
        message=message[:1024] if message else None,
    )


def _maintenance(doc: Any) -> model.MaintenanceStatus | None:
    if not isinstance(doc, Mapping):
        return None
    if not doc.get("enabled"):
        return model.MaintenanceStatus(last_run=_last_run(doc.get("lastRun")))
    return model.MaintenanceStatus(
        schedule=_text(doc.get("schedule")),
        next_run=_time(doc.get("nextRun")),
        last_run=_last_run(doc.get("lastRun")),
    )


def parse(document: Any) -> Reading:
    """One pod's `/status` document; fields that are missing or malformed are left out."""
    if not isinstance(document, Mapping):
        return Reading()
    storage_doc = document.get("storage")
    storage, problem, message = (
        _storage(storage_doc) if isinstance(storage_doc, Mapping) else (None, None, "")
    )
    return Reading(
        storage=storage,
        problem=problem,
        message=message,
        maintenance=_maintenance(document.get("gc")),
        identities=_identities(document.get("identities")),
        mirrors=_mirrors(document.get("mirrors")),
    )


def _mirrors(doc: Any) -> tuple[model.MirrorStatus, ...] | None:
    if not isinstance(doc, list):
        return None
    found: list[model.MirrorStatus] = []
    for entry in doc:
        prefix = _text(entry.get("prefix")) if isinstance(entry, Mapping) else None
        if not isinstance(entry, Mapping) or not prefix:
            continue
        reachable = entry.get("reachable")
        error, ca_error = _text(entry.get("lastError")), _text(entry.get("caError"))
        found.append(
            model.MirrorStatus(
                prefix=prefix,
                upstream=_text(entry.get("upstream")),
                reachable=reachable if isinstance(reachable, bool) else None,
                last_error=error[:1024] if error else None,
                last_error_reason=_text(entry.get("lastErrorReason")),
                last_error_time=_time(entry.get("lastErrorAt")),
                last_success_time=_time(entry.get("lastSuccessAt")),
                ca_error=ca_error[:1024] if ca_error else None,
            )
        )
    return tuple(found)


_EPOCH = datetime.datetime.min.replace(tzinfo=datetime.UTC)


def ca_error_only(status: model.MirrorStatus) -> bool:
    """Whether the last error is the registry's note that the changed CA bundle cannot be loaded (it
    keeps the previous one and goes on to ask the upstream): not an answer from the upstream."""
    return status.ca_error is not None and status.last_error == status.ca_error


def failing(status: model.MirrorStatus) -> bool:
    """Whether the upstream's last word was a failure (an error newer than the last answered request;
    the CA bundle note is not the upstream's word)."""
    if status.last_error_time is None or ca_error_only(status):
        return status.reachable is False
    return status.last_error_time >= (status.last_success_time or _EPOCH)


def _merge_mirror(a: model.MirrorStatus, b: model.MirrorStatus) -> model.MirrorStatus:
    """Two pods' view of one mirror: the latest success and the latest error; reachable from the newer;
    a CA bundle error if either pod reports one (they mount the same Secret: one may not have noticed
    the change yet, and the fix is the same)."""
    error = max((a, b), key=lambda m: m.last_error_time or _EPOCH)
    success = max(a.last_success_time or _EPOCH, b.last_success_time or _EPOCH)
    merged = error.model_copy(
        update={
            "last_success_time": success if success != _EPOCH else None,
            "upstream": a.upstream,
            "ca_error": error.ca_error or a.ca_error or b.ca_error,
        }
    )
    if merged.last_error_time is not None:
        return merged.model_copy(update={"reachable": not failing(merged)})
    known = [m.reachable for m in (a, b) if m.reachable is not None]
    return merged.model_copy(update={"reachable": all(known) if known else None})


def _severity(reading: Reading) -> tuple[int, int]:
    rank = {"not-writable": 3, "stuck": 3, "full": 2}.get(reading.problem or "", 1 if reading.storage else 0)
    return rank, (reading.storage.used_percent or 0) if reading.storage else 0


def combine(readings: Sequence[Reading]) -> Reading:
    """Several pods' readings as one: the storage of the pod in the worst state (they share the volume, or
    the worst one is what to warn about) and the most recent gc run any of them reports."""
    if not readings:
        return Reading()
    worst = max(readings, key=_severity)
    runs = [r.maintenance for r in readings if r.maintenance is not None]
    latest = max(
        runs,
        key=lambda m: (
            m.last_run.time
            if m.last_run and m.last_run.time
            else datetime.datetime.min.replace(tzinfo=datetime.UTC)
        ),
        default=None,
    )
    by_prefix: dict[str, model.MirrorStatus] = {}
    for reading in readings:
        for status in reading.mirrors or ():
            old = by_prefix.get(status.prefix)
            by_prefix[status.prefix] = status if old is None else _merge_mirror(old, status)
    mirrors = (
        tuple(by_prefix[p] for p in sorted(by_prefix))
        if any(r.mirrors is not None for r in readings)
        else None
    )
    return dataclasses.replace(
        worst, maintenance=latest, identities=_best_identities(readings), mirrors=mirrors
    )


def _best_identities(readings: Sequence[Reading]) -> tuple[model.IdentityIssuerStatus, ...] | None:
    """Per issuer, the pod's report that reached it, if any did."""
    reported = [r.identities for r in readings if r.identities is not None]
    if not reported:
        return None
    best: dict[str, model.IdentityIssuerStatus] = {}
    for issuers in reported:
        for issuer in issuers:
            if issuer.name not in best or (issuer.reachable and not best[issuer.name].reachable):
                best[issuer.name] = issuer
    return tuple(best[name] for name in sorted(best))


def storage_verdict(reading: Reading, *, storage: model.Storage) -> policies.Verdict | None:
    """StorageReady from the registry's own check, against spec.storage's thresholds; None without one."""
    if reading.problem in _NOT_WRITABLE:
        return policies.Verdict(
            False, Reason.STORAGE_NOT_WRITABLE, f"the registry cannot write its storage: {reading.message}"
        )
    status = reading.storage
    percent = status.used_percent if status is not None else None
    if reading.problem == "full" or (percent is not None and percent > storage.max_fill_percent):
        shown = f"{percent}%" if percent is not None else "completely"
        return policies.Verdict(
            False,
            Reason.STORAGE_FULL,
            f"the data volume is {shown} full (maxFillPercent {storage.max_fill_percent}): pushes are "
            "refused and the pods are not ready; delete images, let gc run, or grow the volume",
        )
    if percent is None:
        return None
    if percent >= storage.almost_full_percent:
        return policies.Verdict(
            False,
            Reason.STORAGE_ALMOST_FULL,
            f"the data volume is {percent}% full (almostFullPercent {storage.almost_full_percent}); "
            f"pushes are refused from {storage.max_fill_percent}%",
        )
    return policies.Verdict(True, Reason.STORAGE_OK, f"the data volume is {percent}% full")


def new_run(previous: model.MaintenanceStatus | None, current: model.MaintenanceStatus | None) -> bool:
    """Whether `current` reports a gc run that `previous` (what status already shows) does not."""
    run = current.last_run if current is not None else None
    if run is None or run.time is None:
        return False
    before = previous.last_run if previous is not None else None
    return before is None or before.time != run.time


def keep_last_run(
    previous: model.MaintenanceStatus | None, current: model.MaintenanceStatus | None
) -> model.MaintenanceStatus | None:
    """`current`, keeping the last run status showed when the registry reports none (gc suspended, or a
    registry whose status file is gone): a run that happened stays reported."""
    if current is None:
        return previous
    if current.last_run is None and previous is not None and previous.last_run is not None:
        return current.model_copy(update={"last_run": previous.last_run})
    return current


def run_failed(run: model.GcRunStatus) -> bool:
    return bool(run.errors) or (run.message is not None and not run.message.startswith("retention"))


def describe_run(run: model.GcRunStatus) -> str:
    """One line for the GarbageCollected Event."""
    verb = "would delete" if run.dry_run else "deleted"
    counts = ", ".join(
        f"{number or 0} {kind}"
        for number, kind in (
            (run.tags_deleted, "tags"),
            (run.manifests_deleted, "manifests"),
            (run.blobs_deleted, "blobs"),
        )
    )
    freed = "would free" if run.dry_run else "freed"
    text = f"gc{' (dry run)' if run.dry_run else ''} {verb} {counts}; {freed} {run.bytes_freed or 0} bytes"
    text += f"; {run.errors or 0} errors"
    return f"{text}: {run.message}" if run.message else text
