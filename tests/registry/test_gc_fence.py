"""The gc fence (fence.py): gc in one process, pushes in another, sharing only storage.

Two `Store`s over one driver stand for two replicas on one bucket: each has its own `GcLock` and its own
cached view of the gc runs, so only the fence keeps them apart. Every race is forced at an exact point
with a driver wrapper that runs the other side when one side writes or deletes a given path (no sleeps
decide an outcome), over the memory and filesystem drivers:
- gc runs whole between a manifest push's check of its blobs and its claim on them: the push is refused
  (MANIFEST_BLOB_UNKNOWN), nothing of it is stored, fsck is clean;
- gc's re-check comes before the push's claim and its deletion after: the push waits on the tombstone,
  then is refused the same way;
- a push whose claims land after gc wrote its marker but before its re-check keeps its blobs;
- a tag moved while retention deletes it is written again (never lost);
- a dead run's marker and tombstones: the next run removes them, and a push waits at most the item
  lease on a tombstone left behind;
- no gc running: a replica lists the runs at most once per cache period.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from dockyard_registry import digest, fence, fsck, gc, paths, retention, store
from dockyard_registry.storage import base
from tests.registry.conftest import OCI_MANIFEST, make_image, sha256
from tests.registry.test_gc_fsck import age, push

HOUR = 3600.0


class Hooked:
    """A driver that runs `before[path]` once, before the first put or delete of `path`, and counts lists."""

    def __init__(self, inner: base.Driver) -> None:
        self.inner = inner
        self.before: dict[str, Callable[[], None]] = {}
        self.lists: list[str] = []

    def _fire(self, path: str) -> None:
        hook = self.before.pop(path, None)
        if hook is not None:
            hook()

    def put(self, path: str, data: bytes, /, **kw: Any) -> None:
        self._fire(path)
        self.inner.put(path, data, **kw)

    def delete(self, path: str, /, **kw: Any) -> None:
        self._fire(path)
        self.inner.delete(path, **kw)

    def list(self, path: str, /) -> list[str]:
        self.lists.append(path)
        return self.inner.list(path)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class FakeClock:
    """A monotonic clock both replicas share; sleeping moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.001)


def replica(driver: Any, *, cache: float = 1.0, clock: FakeClock | None = None) -> store.Store:
    if clock is None:
        return store.Store(driver, gc_fence=fence.GcFence(driver, cache=cache))
    return store.Store(driver, gc_fence=fence.GcFence(driver, cache=cache, clock=clock, sleep=clock.sleep))


async def old_unreferenced_image(st: store.Store) -> tuple[bytes, digest.Digest, digest.Digest]:
    """An image's blobs pushed into `r` two hours ago, no manifest: (manifest bytes, config, layer)."""
    image = make_image("fenced")
    config, layer = await push(st, "r", image.config), await push(st, "r", image.layer)
    for blob in (config, layer):
        age(getattr(st.driver, "inner", st.driver), paths.blob_data(blob), 2 * HOUR)
    return image.manifest, config, layer


def assert_clean(st: store.Store) -> None:
    checked = fsck.check(st)
    assert checked.corruption == [] and checked.dangling == [], checked


async def test_gc_run_between_a_pushs_check_and_its_claim_makes_the_push_refused(driver: base.Driver) -> None:
    clock = FakeClock()
    hooked = Hooked(driver)
    pusher, collector = replica(hooked, clock=clock), replica(driver, clock=clock)
    manifest, config, layer = await old_unreferenced_image(pusher)
    pusher.fence.view()  # the pusher has a fresh "no gc" view cached
    reports: list[gc.Report] = []

    def whole_run() -> None:
        if not reports:
            reports.append(gc.collect(collector, grace=HOUR, dry_run=False))

    # The push has checked that its blobs are linked; before its first claim, a whole gc run goes by.
    for blob in (config, layer):
        hooked.before[paths.blob_pushed(blob)] = whole_run

    with pytest.raises(store.ManifestBlobUnknownError):
        pusher.put_manifest("r", "v1", data=manifest, content_type=OCI_MANIFEST)

    assert sorted(reports[0].blobs) == sorted([str(config), str(layer)])  # the race really happened
    with pytest.raises(store.ManifestUnknownError):
        pusher.get_manifest("r", "v1")
    assert list(pusher.maintenance.revisions("r")) == []
    assert_clean(pusher)
    assert driver.list(paths.GC_RUNS) == []  # the run removed its marker


async def test_a_push_claiming_after_gcs_recheck_waits_for_the_tombstone_then_is_refused(
    driver: base.Driver,
) -> None:
    hooked = Hooked(driver)
    pusher, collector = replica(driver, cache=0.2), replica(hooked, cache=0.2)
    manifest, config, layer = await old_unreferenced_image(pusher)
    waiting = threading.Event()
    pusher.fence.on_wait = lambda _tombstone: waiting.set()
    outcome: list[BaseException | store.PutManifestResult] = []
    hooked_first: list[digest.Digest] = []
    threads: list[threading.Thread] = []

    def push_manifest() -> None:
        try:
            outcome.append(pusher.put_manifest("r", "v1", data=manifest, content_type=OCI_MANIFEST))
        except BaseException as exc:
            outcome.append(exc)

    def push_now_then_delete(blob: digest.Digest) -> None:
        if threads:
            return
        # gc re-checked the blob (old, unclaimed) and holds its tombstone; the push claims it now.
        hooked_first.append(blob)
        thread = threading.Thread(target=push_manifest)
        thread.start()
        threads.append(thread)
        assert waiting.wait(timeout=60), "the push never saw gc's tombstone"

    for blob in (config, layer):
        hooked.before[paths.layer_link("r", blob)] = lambda blob=blob: push_now_then_delete(blob)  # type: ignore[misc]
    report = gc.collect(collector, grace=HOUR, dry_run=False)
    threads[0].join(timeout=120)

    # gc deleted the blob it had re-checked; the other one, claimed by then, it kept.
    assert report.blobs == [str(hooked_first[0])]
    assert len(outcome) == 1 and isinstance(outcome[0], store.ManifestBlobUnknownError), outcome
    with pytest.raises(store.ManifestUnknownError):
        pusher.get_manifest("r", "v1")
    assert_clean(pusher)


async def test_a_push_whose_claims_land_before_gcs_recheck_keeps_its_blobs(driver: base.Driver) -> None:
    hooked = Hooked(driver)
    pusher, collector = replica(driver, cache=0.2), replica(hooked, cache=0.2)
    manifest, config, layer = await old_unreferenced_image(pusher)
    orphan = await push(pusher, "r", b"really unreferenced")
    age(driver, paths.blob_data(orphan), 2 * HOUR)
    pushed: list[store.PutManifestResult] = []
    run_started = threading.Event()
    original_begin = collector.fence.begin

    def begin() -> fence.Run:
        # gc has announced its run; the push (its view of the runs possibly cached empty) goes through.
        run = original_begin()
        run_started.set()
        pushed.append(pusher.put_manifest("r", "v1", data=manifest, content_type=OCI_MANIFEST))
        return run

    collector.fence.begin = begin  # type: ignore[method-assign]
    report = gc.collect(collector, grace=HOUR, dry_run=False)

    assert run_started.is_set() and pushed[0].digest == digest.parse(sha256(manifest))
    assert report.blobs == [str(orphan)]
    assert pusher.get_manifest("r", "v1").data == manifest
    for blob in (config, layer):
        assert pusher.blob_size("r", blob) > 0
    assert_clean(pusher)


async def test_a_tag_moved_while_retention_deletes_it_is_written_again(driver: base.Driver) -> None:
    hooked = Hooked(driver)
    pusher, collector = replica(driver, cache=0.2), replica(hooked, cache=0.2)
    old, new = make_image("old"), make_image("new")
    for image in (old, new):
        await push(pusher, "r", image.config)
        await push(pusher, "r", image.layer)
    pusher.put_manifest("r", "v1", data=old.manifest, content_type=OCI_MANIFEST)
    age(driver, paths.tag_link("r", "v1"), 2 * HOUR)
    policy = retention.parse('{"rules": [{"repositories": ["r"], "keepLast": 0}]}')
    waiting = threading.Event()
    pusher.fence.on_wait = lambda _tombstone: waiting.set()
    threads: list[threading.Thread] = []

    def move_tag_now() -> None:
        # gc re-checked the tag (old, unchanged) and is about to delete it: the tag moves now.
        thread = threading.Thread(
            target=pusher.put_manifest,
            args=("r", "v1"),
            kwargs={"data": new.manifest, "content_type": OCI_MANIFEST},
        )
        thread.start()
        threads.append(thread)
        assert waiting.wait(timeout=60), "the push never saw gc's tombstone"

    hooked.before[paths.tag_link("r", "v1")] = move_tag_now
    report = gc.collect(collector, grace=HOUR, dry_run=False, policy=policy)
    threads[0].join(timeout=120)

    assert report.tags == ["r:v1"]  # gc did delete the tag it saw
    assert pusher.get_manifest("r", "v1").data == new.manifest  # and the push wrote it again
    assert_clean(pusher)


async def test_a_dead_runs_marker_and_tombstones_hold_nothing_for_long(driver: base.Driver) -> None:
    clock = FakeClock()
    pusher = replica(driver, clock=clock)
    manifest, config, _layer = await old_unreferenced_image(pusher)
    # A run that died mid-item two hours ago: its marker and a tombstone on the config blob are left.
    dead = "0" * 32
    driver.put(paths.gc_lease(dead), b"{}")
    driver.put(paths.gc_tombstone(dead, paths.blob_dir(config)), b"")
    age(driver, paths.gc_lease(dead), 2 * HOUR)
    clock.sleep(2 * pusher.fence.cache)  # the pusher's cached view of the runs is too old to trust now
    before = clock.now

    pushed = pusher.put_manifest("r", "v1", data=manifest, content_type=OCI_MANIFEST)

    assert clock.now - before >= pusher.fence.item_lease  # it waited out the tombstone, then went on
    assert pusher.get_manifest("r", "v1").data == manifest and pushed.subject is None
    collector = replica(driver, clock=clock)
    gc.collect(collector, grace=HOUR, dry_run=False)
    assert driver.list(paths.GC_RUNS) == []  # the next run removed the dead one's marker and tombstones
    assert_clean(pusher)


async def test_without_gc_a_replica_lists_the_runs_once_per_cache_period(driver: base.Driver) -> None:
    clock = FakeClock()
    hooked = Hooked(driver)
    pusher = replica(hooked, clock=clock, cache=5.0)
    for seed in ("a", "b", "c"):
        image = make_image(seed)
        await push(pusher, "r", image.config)
        await push(pusher, "r", image.layer)
        pusher.put_manifest("r", seed, data=image.manifest, content_type=OCI_MANIFEST)
    assert hooked.lists.count(paths.GC_RUNS) == 1
    clock.sleep(6.0)
    pusher.put_manifest("r", "again", data=make_image("a").manifest, content_type=OCI_MANIFEST)
    assert hooked.lists.count(paths.GC_RUNS) == 2


async def test_a_replica_on_the_same_schedule_defers_to_the_run_started_first(driver: base.Driver) -> None:
    first, second = replica(driver, cache=0.0), replica(driver, cache=0.0)
    orphan = await push(first, "r", b"nobody references me")
    age(driver, paths.blob_data(orphan), 2 * HOUR)
    live = first.fence.begin()  # the first replica's run is in progress

    deferred = gc.collect(second, grace=HOUR, dry_run=False, defer=True)

    assert deferred.deferred_to is not None and deferred.deferred_to.startswith(live.id)
    assert deferred.blobs == [] and second.maintenance.blob_size(orphan) is not None
    assert driver.list(paths.GC_RUNS) == [live.id]  # the deferring run left no marker behind
    live.end()
    done = gc.collect(second, grace=HOUR, dry_run=False, defer=True)
    assert done.deferred_to is None and done.blobs == [str(orphan)]


async def test_of_two_replicas_starting_runs_together_only_the_one_started_first_collects(
    driver: base.Driver,
) -> None:
    """The race of one schedule on two replicas: the run started first writes its marker only after the
    other run's first look found nothing. The other run looks again once the ready delay passed, and
    defers; without that second look both would collect."""
    first = replica(driver, cache=1.0)
    orphan = await push(first, "r", b"nobody references me")
    age(driver, paths.blob_data(orphan), 2 * HOUR)
    earlier = fence.Run(first.fence, "0" * 32)  # started now: before the run below

    class MarkerLate(FakeClock):
        def sleep(self, seconds: float) -> None:
            if earlier.id not in driver.list(paths.GC_RUNS):
                earlier.write_lease()  # lands after the second replica's first look
            super().sleep(seconds)

    second = replica(driver, cache=1.0, clock=MarkerLate())
    report = gc.collect(second, grace=HOUR, dry_run=False, defer=True)

    assert report.deferred_to is not None and report.deferred_to.startswith(earlier.id), report
    assert report.blobs == [] and second.maintenance.blob_size(orphan) is not None
    assert driver.list(paths.GC_RUNS) == [earlier.id]
    earlier.end()
