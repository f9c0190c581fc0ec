"""gc's third phase: sweeping blobs nothing marked, stale upload sessions and interrupted writes (gc.py).

Owns: the deletions of that phase, each re-checked just before it is made, under the store's `GcLock`
and a tombstone of the run (fence.py), and `Report`, what a run deleted. Must not: decide what is marked
(gc.py does), or delete anything younger than the cutoff it is given.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any

from dockyard_registry import digest, fence, paths, store


@dataclasses.dataclass
class Report:
    """What one run deleted (or, dry, would delete). `errors` are deletions that failed; the run goes on."""

    blobs: list[str] = dataclasses.field(default_factory=list)
    uploads: list[str] = dataclasses.field(default_factory=list)
    leftovers: list[str] = dataclasses.field(default_factory=list)
    tags: list[str] = dataclasses.field(default_factory=list)  # `repo:tag`
    manifests: list[str] = dataclasses.field(default_factory=list)  # `repo@digest`
    errors: list[str] = dataclasses.field(default_factory=list)
    bytes: int = 0
    kept: int = 0  # blobs kept
    dry_run: bool = False
    started: float = 0.0  # wall clock (the run's clock)
    duration: float = 0.0  # seconds
    stopped: bool = False  # ended early (shutdown); the next run finishes the job
    deferred_to: str | None = None  # another replica's run was live and does the work (defer=True)

    def summary(self) -> dict[str, Any]:
        """Counts only: what a status file, a log line or an operator's status shows."""
        return {
            "started": self.started,
            "duration": round(self.duration, 3),
            "dryRun": self.dry_run,
            "tagsDeleted": len(self.tags),
            "manifestsDeleted": len(self.manifests),
            "blobsDeleted": len(self.blobs),
            "uploadsDeleted": len(self.uploads),
            "leftoversDeleted": len(self.leftovers),
            "bytesFreed": self.bytes,
            "blobsKept": self.kept,
            "errors": len(self.errors),
            "stopped": self.stopped,
            "deferredTo": self.deferred_to,
        }

    def as_json(self) -> dict[str, Any]:
        """The summary and every item, for `gc --json`."""
        return {
            **self.summary(),
            "items": {
                "tags": self.tags,
                "manifests": self.manifests,
                "blobs": self.blobs,
                "uploads": self.uploads,
                "leftovers": self.leftovers,
            },
            "errorMessages": self.errors,
        }


def stored_blobs(st: store.Store) -> Iterator[digest.Digest]:
    """Every blob in the content store, whatever links to it."""
    return st.maintenance.blobs()


def layer_links(st: store.Store) -> dict[digest.Digest, list[str]]:
    """For every linked blob, the repositories that link it."""
    links: dict[digest.Digest, list[str]] = {}
    for repo in st.catalog():
        for blob in st.maintenance.layer_links(repo):
            links.setdefault(blob, []).append(repo)
    return links


def blobs(
    st: store.Store,
    report: Report,
    run: fence.Run | None,
    *,
    marked: set[digest.Digest],
    cutoff: float,
    should_stop: Callable[[], bool],
) -> None:
    links = layer_links(st)
    kept = st.maintenance
    for blob in stored_blobs(st):
        if should_stop():
            report.stopped = True
            return
        if blob in marked:
            report.kept += 1
            continue
        mtime = kept.blob_time(blob)
        if mtime is None:
            # Left by a write interrupted before its rename (crash): remove once it is old enough.
            leftover = kept.blob_dir_time(blob)
            if leftover is not None and leftover <= cutoff and run is not None:
                _delete_leftover_blob(st, report, run, blob=blob, cutoff=cutoff)
            continue
        if mtime > cutoff:
            report.kept += 1
            continue
        size = kept.blob_size(blob) or 0
        if run is None:
            report.blobs.append(str(blob))
            report.bytes += size
            continue
        run.heartbeat()
        try:
            with st.gc_lock.exclusive(), run.deleting(paths.blob_dir(blob)) as in_time:
                # Re-check just before deleting: a push or mount during this run refreshes the mtime.
                again = kept.blob_time(blob)
                if again is None or again > cutoff or not in_time():
                    report.kept += again is not None
                    continue
                for repo in links.pop(blob, []):
                    kept.remove_layer_link(repo, blob)
                kept.remove_blob(blob)
        except OSError as exc:
            report.errors.append(f"blob {blob}: {exc}")
            continue
        report.blobs.append(str(blob))
        report.bytes += size
    if run is None:
        return
    for blob, repos in links.items():
        if blob in marked:
            continue
        with st.gc_lock.exclusive(), run.deleting(paths.blob_dir(blob)) as in_time:
            if kept.blob_size(blob) is not None or not in_time():
                continue  # committed meanwhile: its link is the new push's
            for repo in repos:
                _delete(
                    report,
                    f"layer link {repo}@{blob}",
                    functools.partial(kept.remove_layer_link, repo, blob),
                )


def _delete_leftover_blob(
    st: store.Store, report: Report, run: fence.Run, *, blob: digest.Digest, cutoff: float
) -> None:
    """A blob directory without data (an interrupted write; on S3 a claim whose data went): remove it
    unless data arrived or it changed meanwhile."""
    kept = st.maintenance
    try:
        with st.gc_lock.exclusive(), run.deleting(paths.blob_dir(blob)) as in_time:
            again = kept.blob_dir_time(blob)
            if kept.blob_size(blob) is not None or again is None or again > cutoff or not in_time():
                return
            _delete(report, f"blob {blob}", functools.partial(kept.remove_blob, blob))
    except OSError as exc:
        report.errors.append(f"blob {blob}: {exc}")


def uploads_and_leftovers(
    st: store.Store, report: Report, *, cutoff: float, upload_cutoff: float, dry_run: bool
) -> None:
    kept = st.maintenance
    for upload_id in kept.upload_ids():
        last = st.upload_last_active(upload_id)
        if last is None or last > upload_cutoff:
            continue
        if dry_run or _delete(
            report, paths.upload_dir(upload_id), functools.partial(kept.remove_upload, upload_id)
        ):
            report.uploads.append(upload_id)
    # After the blobs: a removed temp file refreshes its directory's mtime, which the blob pass reads.
    for temp, written, size in kept.leftovers():
        if written is None or written > cutoff:
            continue  # gone meanwhile, or a write still in flight
        if dry_run or _delete(report, temp, functools.partial(kept.remove_leftover, temp)):
            report.leftovers.append(temp)
            report.bytes += size


def _delete(report: Report, what: str, remove: Callable[[], None]) -> bool:
    """Remove one thing; a failure (permissions, I/O) is reported and the run goes on."""
    try:
        remove()
    except OSError as exc:
        report.errors.append(f"{what}: {exc}")
        return False
    return True
