"""Online gc inside a running registry (`serve --gc-schedule`), and the record of its last run.

Owns: running `gc.collect` on a schedule in a worker thread while the registry serves, re-reading the
retention file before each run, and publishing what the last run did: a JSON status file
(`DATA/status/gc.json`, written atomically), a log line, and the in-memory `last`/`totals` that the
metrics listener exposes. Must not: stop or slow the registry: there is no read-only window and no
downtime; what makes that safe is gc's re-check of every deletion under the store's `GcLock` (gc.py)
and, against other processes on the same storage, the gc fence (fence.py). Replicas on one schedule
collect once: a run defers to another replica's live run that started first, and records nothing.

A run never overlaps the next: the next start is computed from the schedule after a run ends. A
retention file that became unreadable or invalid keeps the last good policy for that run (the status
says so in `retentionError`); one that is invalid at start-up is a usage error. A run that fails as a
whole (an unexpected exception) is logged with its traceback and recorded in `failure`; the schedule
goes on. A shutdown while a run is in its worker thread lets the thread finish its current deletion
and stop at the next check (gc is safe to stop anywhere: the next run finishes the job).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dockyard_registry import gc, retention, schedule, store

log = logging.getLogger(__name__)
STATUS_FILE = Path("status") / "gc.json"  # under the data directory
_ERRORS_KEPT = 20  # error messages a status keeps (the count is complete)


@dataclasses.dataclass(frozen=True)
class GcSettings:
    """What `serve --gc-*` asks for."""

    schedule: schedule.Schedule
    grace: float = gc.DEFAULT_GRACE
    delete_untagged: bool = False
    retention_file: Path | None = None
    dry_run: bool = False
    upload_expiry: float | None = None  # None: the grace period, as for `gc`


class GcRunner:
    """Runs gc on a schedule over one store and remembers the last run."""

    def __init__(
        self,
        st: store.Store,
        settings: GcSettings,
        *,
        status_file: Path | None,
        policy: retention.Policy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = st
        self.settings = settings
        self.status_file = status_file
        self._policy = policy  # the last good one
        self._clock = clock
        self._stop = threading.Event()
        self.last: dict[str, Any] | None = _read_status(status_file)
        self.last_deferred_to: str | None = None  # the other replica's run the last skipped run left it to
        self.next_run: float | None = None
        # Since start-up, for the metrics listener's counters.
        self.totals: dict[str, int] = {
            "runs": 0,
            "deferred": 0,  # runs skipped because another replica's run was collecting
            "failures": 0,
            "errors": 0,
            "bytesFreed": 0,
            "tagsDeleted": 0,
            "manifestsDeleted": 0,
            "blobsDeleted": 0,
        }

    def _load_policy(self) -> str | None:
        """Re-read the retention file; on failure keep the last good policy and say why."""
        path = self.settings.retention_file
        if path is None:
            return None
        try:
            self._policy = retention.parse(path.read_text())
        except (OSError, UnicodeDecodeError, retention.RetentionError) as exc:
            log.warning("gc: retention file %s unusable, keeping the last good rules: %s", path, exc)
            return f"{path}: {exc}"
        return None

    def run_once(self) -> dict[str, Any]:
        """One run, blocking (call it in a worker thread); returns and publishes its status."""
        retention_error = self._load_policy()
        began = self._clock()
        status: dict[str, Any]
        try:
            report = gc.collect(
                self.store,
                grace=self.settings.grace,
                dry_run=self.settings.dry_run,
                upload_expiry=self.settings.upload_expiry,
                delete_untagged=self.settings.delete_untagged,
                policy=self._policy,
                should_stop=self._stop.is_set,
                defer=True,
            )
        except Exception as exc:
            # Logged here and kept in the status: nothing awaits the schedule's task, so raising would
            # end every later run silently for the process's lifetime.
            log.exception("gc: run failed")
            status = {"started": began, "failure": f"{type(exc).__name__}: {exc}", "errors": 1}
            self.totals["failures"] += 1
        else:
            if report.deferred_to is not None:
                # Another replica on the same storage is collecting: its status reports the run.
                log.info(
                    "gc: run %s of another replica is live and collects; this one skipped", report.deferred_to
                )
                self.totals["deferred"] += 1
                self.last_deferred_to = report.deferred_to
                return self.last or {}
            status = {**report.summary(), "errorMessages": report.errors[:_ERRORS_KEPT]}
            if not report.dry_run:
                self.totals["bytesFreed"] += report.bytes
                self.totals["tagsDeleted"] += len(report.tags)
                self.totals["manifestsDeleted"] += len(report.manifests)
                self.totals["blobsDeleted"] += len(report.blobs)
            self.totals["errors"] += len(report.errors)
            log.info(
                "gc%s: %s %d tags, %d manifests, %d blobs, %d uploads (%d bytes) in %.1fs; %d errors",
                " (dry run)" if report.dry_run else "",
                "would delete" if report.dry_run else "deleted",
                len(report.tags),
                len(report.manifests),
                len(report.blobs),
                len(report.uploads),
                report.bytes,
                report.duration,
                len(report.errors),
            )
        self.totals["runs"] += 1
        status.update(
            finished=self._clock(),
            schedule=self.settings.schedule.text,
            retentionError=retention_error,
        )
        self.last = status
        self._write(status)
        return status

    def _write(self, status: dict[str, Any]) -> None:
        if self.status_file is None:
            return
        try:
            self.status_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.status_file.with_name(f".{self.status_file.name}.tmp")
            tmp.write_text(json.dumps(status, indent=2) + "\n")
            os.replace(tmp, self.status_file)
        except OSError as exc:  # a full disk must not end the schedule; the log and metrics still tell
            log.warning("gc: cannot write %s: %s", self.status_file, exc)

    async def run_forever(self) -> None:
        """Sleep until each scheduled time, run, repeat; until cancelled."""
        try:
            while True:
                self.next_run = self.settings.schedule.next_after(self._clock())
                await asyncio.sleep(max(0.0, self.next_run - self._clock()))
                await asyncio.to_thread(self.run_once)
        finally:
            self._stop.set()  # a run still in its thread stops at its next deletion


def _read_status(path: Path | None) -> dict[str, Any] | None:
    """The previous process's last run, so a restart does not forget it."""
    if path is None:
        return None
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None
