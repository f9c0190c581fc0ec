"""What the registry reports about itself, read into status (pure), and the observe step over a fake API.

Covers:
- a `/status` document becomes status.storage (capacity, used, whole percent, writable, checked time) and
  status.maintenance (schedule, next run, last run with counts, dry run, failure or retention problem);
  malformed or partial documents yield what they can, never an exception; an unchecked volume gives nothing;
- StorageReady: ok below almostFullPercent, StorageAlmostFull from it, StorageFull above maxFillPercent or
  when the registry says full, StorageNotWritable when it cannot write (or its check is stuck);
- several pods: the worst storage and the latest gc run win;
- a gc run is new only when its finish time differs from what status shows; a suspended gc keeps the last
  run status showed; the Event text;
- the step: reads the override URL (namespace and name filled in), sets status.storage/maintenance and the
  condition (the claim's own verdict still wins while it is not ok), posts GarbageCollected once per run,
  keeps the previous status when no pod answers, lists no pods while the Deployment reports none, and reports
  a refused Pod list (Degraded Forbidden).
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from dockyard_operator import model, names, observations, reconcile, settings
from tests.operator import fakes

T0 = 1_780_000_000.0


def document(
    *, used: int = 40, total: int = 100, problem: str = "none", finished: float | None = T0, **run: Any
) -> dict[str, Any]:
    last = None
    if finished is not None:
        last = {
            "started": finished - 2,
            "duration": 2.0,
            "dryRun": False,
            "tagsDeleted": 1,
            "manifestsDeleted": 2,
            "blobsDeleted": 3,
            "bytesFreed": 4096,
            "errors": 0,
            "finished": finished,
            "schedule": "17 3 * * *",
            "retentionError": None,
            **run,
        }
    return {
        "storage": {
            "checked": True,
            "ready": problem == "none",
            "problem": problem,
            "message": "ok" if problem == "none" else f"storage {problem}",
            "checkedAt": T0 + 5,
            "totalBytes": total,
            "usedBytes": used,
            "freeBytes": total - used,
            "maxFillPercent": 95,
        },
        "gc": {"enabled": True, "schedule": "17 3 * * *", "nextRun": T0 + 86400, "lastRun": last},
    }


def verdict(doc: dict[str, Any], **storage: Any) -> tuple[bool, str] | None:
    found = observations.storage_verdict(observations.parse(doc), storage=model.Storage(**storage))
    return None if found is None else (found.ok, found.reason)


def test_a_status_document_becomes_status_storage_and_maintenance() -> None:
    reading = observations.parse(document(used=333, total=1000))
    assert reading.storage == model.StorageStatus(
        capacity_bytes=1000,
        used_bytes=333,
        used_percent=33,
        writable=True,
    )
    assert reading.maintenance is not None and reading.maintenance.schedule == "17 3 * * *"
    run = reading.maintenance.last_run
    assert run is not None
    assert (run.tags_deleted, run.manifests_deleted, run.blobs_deleted, run.bytes_freed, run.errors) == (
        1, 2, 3, 4096, 0,
    )  # fmt: skip
    assert run.time == datetime.datetime.fromtimestamp(int(T0), tz=datetime.UTC) and run.dry_run is False
    assert run.message is None


@pytest.mark.parametrize(
    "doc",
    [
        None,
        [],
        "x",
        {"storage": "full"},
        {"storage": {"checked": True, "totalBytes": "1"}},
        {"gc": {"lastRun": 3}},
    ],
)
def test_malformed_documents_yield_nothing_rather_than_an_error(doc: Any) -> None:
    reading = observations.parse(doc)
    assert reading.storage is None
    assert reading.maintenance is None or reading.maintenance.last_run is None


def test_an_unchecked_volume_and_a_registry_without_gc_report_no_figures() -> None:
    reading = observations.parse(
        {"storage": {"checked": True, "problem": "unchecked", "totalBytes": None}, "gc": {"enabled": False}}
    )
    assert reading.storage is None
    assert reading.maintenance == model.MaintenanceStatus()


def test_a_failed_run_and_a_retention_problem_are_in_the_message() -> None:
    failed = observations.parse(document(failure="OSError: boom", errors=1)).maintenance
    assert failed is not None and failed.last_run is not None
    assert failed.last_run.message == "OSError: boom" and observations.run_failed(failed.last_run)
    kept = observations.parse(document(retentionError="retention.json: bad")).maintenance
    assert kept is not None and kept.last_run is not None and kept.last_run.message is not None
    assert "last good ones were used" in kept.last_run.message and not observations.run_failed(kept.last_run)


@pytest.mark.parametrize(
    ("used", "problem", "expected"),
    [
        (84, "none", (True, "StorageOK")),
        (85, "none", (False, "StorageAlmostFull")),
        (95, "none", (False, "StorageAlmostFull")),
        (96, "none", (False, "StorageFull")),
        (50, "full", (False, "StorageFull")),
        (10, "not-writable", (False, "StorageNotWritable")),
        (10, "stuck", (False, "StorageNotWritable")),
    ],
)
def test_storage_verdict_follows_the_thresholds(used: int, problem: str, expected: tuple[bool, str]) -> None:
    assert verdict(document(used=used, problem=problem)) == expected


def test_thresholds_come_from_the_spec() -> None:
    assert verdict(document(used=60), almost_full_percent=50, max_fill_percent=70) == (
        False,
        "StorageAlmostFull",
    )
    assert verdict(document(used=71), almost_full_percent=50, max_fill_percent=70) == (False, "StorageFull")


def test_several_pods_the_worst_storage_and_the_latest_run_win() -> None:
    readings = [
        observations.parse(document(used=90, finished=T0 + 60)),
        observations.parse(document(used=10, problem="not-writable", finished=T0)),
        observations.parse(document(used=95, finished=None)),
    ]
    combined = observations.combine(readings)
    assert combined.problem == "not-writable"
    assert combined.maintenance is not None and combined.maintenance.last_run is not None
    assert combined.maintenance.last_run.time == datetime.datetime.fromtimestamp(
        int(T0 + 60), tz=datetime.UTC
    )


def test_a_run_is_new_only_when_status_does_not_show_it_yet() -> None:
    first = observations.parse(document()).maintenance
    later = observations.parse(document(finished=T0 + 3600)).maintenance
    assert observations.new_run(None, first)
    assert not observations.new_run(first, first)
    assert observations.new_run(first, later)
    assert not observations.new_run(first, observations.parse(document(finished=None)).maintenance)


def test_a_suspended_gc_keeps_the_last_run_status_showed() -> None:
    shown = observations.parse(document()).maintenance
    suspended = observations.parse({"gc": {"enabled": False}}).maintenance
    kept = observations.keep_last_run(shown, suspended)
    assert kept is not None and kept.schedule is None
    assert shown is not None and kept.last_run == shown.last_run
    assert observations.keep_last_run(shown, None) == shown
    assert observations.keep_last_run(None, suspended) == suspended


def test_event_text_says_what_went_or_would_go() -> None:
    run = model.GcRunStatus(tags_deleted=1, manifests_deleted=2, blobs_deleted=3, bytes_freed=10, errors=0)
    assert (
        observations.describe_run(run) == "gc deleted 1 tags, 2 manifests, 3 blobs; freed 10 bytes; 0 errors"
    )
    dry = run.model_copy(update={"dry_run": True})
    assert observations.describe_run(dry).startswith("gc (dry run) would delete 1 tags")


# ------------------------------------------------------------------------------------ the step


class Fetch:
    def __init__(self) -> None:
        self.documents: list[Any] = []
        self.urls: list[list[str]] = []

    async def read_all(self, urls: list[str]) -> list[Any]:
        self.urls.append(urls)
        return list(self.documents)


def make(override: str | None = "http://status.test/{namespace}/{name}") -> tuple[fakes.FakeKube, Fetch, Any]:
    api, fetch = fakes.FakeKube(), Fetch()
    reconciler = reconcile.Reconciler(
        client=api,  # type: ignore[arg-type]  # duck-typed stand-in
        config=settings.Settings(bcrypt_rounds=4, metrics_url_override=override),
        status_reader=fetch,
    )
    return api, fetch, reconciler


def status(api: fakes.FakeKube) -> dict[str, Any]:
    return dict(api.obj(names.KIND, "demo")["status"])


def storage_condition(api: fakes.FakeKube) -> dict[str, Any]:
    return next(c for c in status(api)["conditions"] if c["type"] == "StorageReady")


EMPTY_DIR = {"storage": {"emptyDir": {}}}


async def test_the_step_reads_the_override_and_reports_storage_and_the_last_run() -> None:
    api, fetch, reconciler = make()
    api.put(fakes.registry(spec=EMPTY_DIR))
    fetch.documents = [document(used=90)]
    await reconciler.reconcile(namespace="ns", name="demo")
    assert fetch.urls == [["http://status.test/ns/demo"]]
    found = status(api)
    assert found["storage"]["usedPercent"] == 90 and found["storage"]["capacityBytes"] == 100
    assert found["maintenance"]["lastRun"]["blobsDeleted"] == 3
    assert (storage_condition(api)["status"], storage_condition(api)["reason"]) == (
        "False",
        "StorageAlmostFull",
    )
    assert [e["reason"] for e in api.events].count("GarbageCollected") == 1


async def test_one_event_per_gc_run_and_none_when_nothing_new() -> None:
    api, fetch, reconciler = make()
    api.put(fakes.registry(spec=EMPTY_DIR))
    fetch.documents = [document()]
    await reconciler.reconcile(namespace="ns", name="demo")
    await reconciler.reconcile(namespace="ns", name="demo")
    fetch.documents = [document(finished=T0 + 86400, errors=2)]
    await reconciler.reconcile(namespace="ns", name="demo")
    gc_events = [e for e in api.events if e["reason"] == "GarbageCollected"]
    assert [e["type"] for e in gc_events] == ["Normal", "Warning"]
    assert "2 errors" in gc_events[1]["message"]


async def test_without_an_answer_status_keeps_what_it_showed() -> None:
    api, fetch, reconciler = make()
    api.put(fakes.registry(spec=EMPTY_DIR))
    fetch.documents = [document(used=20)]
    await reconciler.reconcile(namespace="ns", name="demo")
    shown = status(api)
    fetch.documents = []
    await reconciler.reconcile(namespace="ns", name="demo")
    assert status(api)["storage"] == shown["storage"] and status(api)["maintenance"] == shown["maintenance"]


async def test_an_unbound_claim_still_decides_storage_ready() -> None:
    api, fetch, reconciler = make()
    api.put(fakes.registry(spec={}))
    fetch.documents = [document(used=99)]
    await reconciler.reconcile(namespace="ns", name="demo")
    assert storage_condition(api)["reason"] == "ClaimPending"


async def test_full_storage_is_degraded() -> None:
    api, fetch, reconciler = make()
    api.put(fakes.registry(spec=EMPTY_DIR))
    fetch.documents = [document(used=99)]
    await reconciler.reconcile(namespace="ns", name="demo")
    degraded = next(c for c in status(api)["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "StorageFull")


def pod(name: str, *, phase: str, ip: str | None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "ns", "labels": names.selector_labels("demo")},
        "status": {"phase": phase, **({"podIP": ip} if ip else {})},
    }


async def test_pods_are_listed_only_once_the_deployment_reports_some_and_running_ones_are_read() -> None:
    api, fetch, reconciler = make(override=None)
    listed: list[str] = []
    real_list = api.list

    async def recording_list(**kwargs: Any) -> list[dict[str, Any]]:
        listed.append(kwargs["kind"])
        return await real_list(**kwargs)

    api.list = recording_list  # type: ignore[method-assign]
    api.put(fakes.registry(spec=EMPTY_DIR))
    for each in (pod("a", phase="Running", ip="10.0.0.5"), pod("b", phase="Pending", ip=None)):
        api.put(each)
    api.put(pod("c", phase="Running", ip="fd00::7"))
    await reconciler.reconcile(namespace="ns", name="demo")
    assert "Pod" not in listed and fetch.urls == []
    api.obj("Deployment", "demo")["status"] = {"replicas": 3}
    await reconciler.reconcile(namespace="ns", name="demo")
    assert fetch.urls == [["http://10.0.0.5:9102/status", "http://[fd00::7]:9102/status"]]


async def test_a_refused_pod_list_is_reported_and_status_kept() -> None:
    api, fetch, reconciler = make(override=None)
    api.put(fakes.registry(spec=EMPTY_DIR))
    await reconciler.reconcile(namespace="ns", name="demo")
    api.obj("Deployment", "demo")["status"] = {"replicas": 1}
    api.forbidden_kinds.add("Pod")
    await reconciler.reconcile(namespace="ns", name="demo")
    degraded = next(c for c in status(api)["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "Forbidden")
    assert "cannot list the registry's Pods" in degraded["message"] and fetch.urls == []
