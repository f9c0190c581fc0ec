"""Retention and untagged deletion in gc, over both drivers and through the CLI.

Covers the retention file: the grammar (YAML and JSON, every rule key, errors that name the rule), and
the decision (keepLast over the tags matching `tags`, keepWithin, rules OR-ed, uncovered repositories
keep every tag). Covers gc: retired tags go but never one younger than the grace period; with
--delete-untagged, untagged manifests older than the grace period go with their blobs, while tagged
manifests, an index's children, referrers of kept manifests and young manifests stay; referrers whose
subject is gone go; a dry run reports exactly what the real run then deletes and changes nothing; an
index pushed while gc decides (between its scan and its deletions) keeps the manifest it lists, and a
manifest pushed between mark and sweep keeps its old blobs; the store's GcLock lets pushes share it
while a deletion waits for them and then goes before later pushes; the report counts tags, manifests,
blobs, bytes, errors and duration; `gc --json` prints it; a bad retention file is a usage error (exit
2).
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest

from dockyard_registry import cli, digest, fsck, gc, paths, retention, store, sweep
from dockyard_registry.storage import base, filesystem
from tests.registry.conftest import OCI_INDEX, OCI_MANIFEST, Image, make_image, make_manifest, sha256
from tests.registry.test_gc_fsck import age, push

HOUR = 3600.0


# --------------------------------------------------------------------------------------- the policy
def test_retention_file_parses_yaml_and_json_alike() -> None:
    text = """
rules:
  - repositories: ["team/**"]
    tags: ["v*"]
    keepLast: 3
  - repositories: "**"
    keepWithin: 7d
"""
    policy = retention.parse(text)
    assert policy == retention.Policy(
        (
            retention.Rule(repositories=("team/**",), tags=("v*",), keep_last=3),
            retention.Rule(repositories=("**",), keep_within=7 * 86400.0),
        )
    )
    as_json = json.dumps(
        {
            "rules": [
                {"repositories": ["team/**"], "tags": ["v*"], "keepLast": 3},
                {"repositories": "**", "keepWithin": "7d"},
            ]
        }
    )
    assert retention.parse(as_json) == policy
    assert retention.parse("") == retention.Policy()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: [", "not valid YAML"),
        ("- a", "one key"),
        ("rules: {}", "must be a list"),
        ("rules: [{keepLast: 1}]", "rules[0]: `repositories` is required"),
        ("rules: [{repositories: [a]}]", "rules[0]: give keepLast"),
        ("rules: [{repositories: [a], keepLast: -1}]", "rules[0].keepLast"),
        ("rules: [{repositories: [a], keepLast: true}]", "rules[0].keepLast"),
        ("rules: [{repositories: [a], keepWithin: soon}]", "rules[0].keepWithin"),
        ("rules: [{repositories: [], keepLast: 1}]", "rules[0].repositories"),
        ("rules: [{repositories: [a], keepLast: 1, keep: 2}]", "unknown keys ['keep']"),
    ],
)
def test_a_bad_retention_file_is_refused_with_the_rule_named(text: str, message: str) -> None:
    with pytest.raises(retention.RetentionError, match=re.escape(message)):
        retention.parse(text)


def test_keep_last_counts_only_matching_tags_and_keep_within_keeps_recent_ones() -> None:
    policy = retention.parse(
        """
rules:
  - {repositories: ["team/*"], tags: ["v*"], keepLast: 2}
  - {repositories: ["team/*"], tags: ["nightly-*"], keepWithin: 1h}
"""
    )
    now = 100_000.0
    pushed = {"v1": 1.0, "v2": 2.0, "v3": 3.0, "nightly-1": now - 2 * HOUR, "nightly-2": now - 60, "x": 0.0}
    assert policy.kept("team/app", pushed, now=now) == {"v2", "v3", "nightly-2"}
    # `*` stays within a segment: team/a/b is not covered, so it keeps everything.
    assert policy.kept("team/a/b", pushed, now=now) == set(pushed)
    assert policy.kept("other", pushed, now=now) == set(pushed)
    assert retention.repository_matches("team/**", "team/a/b")
    assert not retention.repository_matches("team/*", "team/a/b")


# ------------------------------------------------------------------------------------- helpers
async def push_image(st: store.Store, repo: str, image: Image, *, tag: str | None) -> digest.Digest:
    await push(st, repo, image.config)
    await push(st, repo, image.layer)
    ref: str | digest.Digest = tag if tag is not None else digest.parse(image.digest)
    return st.put_manifest(repo, ref, data=image.manifest, content_type=OCI_MANIFEST).digest


def index_of(*images: Image) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": i.digest, "size": len(i.manifest)} for i in images
            ],
        }
    ).encode()


def referrer_of(subject: Image, seed: str) -> Image:
    config = json.dumps({"signature": seed}).encode()
    layer = f"signature {seed}".encode()
    data = make_manifest(
        config=config,
        layers=[layer],
        subject={"mediaType": OCI_MANIFEST, "digest": subject.digest, "size": len(subject.manifest)},
        artifact_type="application/vnd.example.signature",
    )
    return Image(config=config, layer=layer, manifest=data)


def age_everything(driver: base.Driver, st: store.Store, seconds: float) -> None:
    """Make every blob, revision and tag look `seconds` old."""
    for blob in gc.stored_blobs(st):
        age(driver, paths.blob_data(blob), seconds)
    for repo in st.catalog():
        for revision in st.maintenance.revisions(repo):
            age(driver, paths.revision_link(repo, revision), seconds)
        for tag in driver.list(paths.tags(repo)):
            age(driver, paths.tag_link(repo, tag), seconds)


def snapshot(driver: base.Driver, st: store.Store) -> dict[str, tuple[int | None, float | None]]:
    """Every blob, link and tag with its size and mtime: what a dry run must leave untouched."""
    files: dict[str, tuple[int | None, float | None]] = {}
    for blob in gc.stored_blobs(st):
        p = paths.blob_data(blob)
        files[p] = (driver.size(p), driver.mtime(p))
    for repo in st.catalog():
        for found, link in (
            (st.maintenance.revisions(repo), paths.revision_link),
            (st.maintenance.layer_links(repo), paths.layer_link),
        ):
            for d in found:
                p = link(repo, d)
                files[p] = (driver.size(p), driver.mtime(p))
        for tag in driver.list(paths.tags(repo)):
            p = paths.tag_link(repo, tag)
            files[p] = (driver.size(p), driver.mtime(p))
    return files


# ------------------------------------------------------------------------------- untagged manifests
async def test_delete_untagged_removes_old_untagged_manifests_and_their_blobs(driver: base.Driver) -> None:
    st = store.Store(driver)
    old, kept = make_image("old"), make_image("kept")
    old_digest = await push_image(st, "r", old, tag="latest")
    await push_image(st, "r", kept, tag="latest")  # moves `latest`: `old` is untagged now
    age_everything(driver, st, 2 * HOUR)
    young = make_image("young")
    await push_image(st, "r", young, tag=None)  # untagged but inside the grace period

    report = gc.collect(st, grace=HOUR, dry_run=False, delete_untagged=True)

    assert report.manifests == [f"r@{old_digest}"]
    assert sorted(report.blobs) == sorted([old.digest, sha256(old.config), sha256(old.layer)])
    assert report.bytes == len(old.manifest) + len(old.config) + len(old.layer)
    assert report.errors == []
    assert report.duration >= 0
    with pytest.raises(store.ManifestUnknownError):
        st.get_manifest("r", old_digest)
    assert st.get_manifest("r", "latest").data == kept.manifest
    assert st.get_manifest("r", digest.parse(young.digest)).data == young.manifest
    assert fsck.check(st) == fsck.Report()


async def test_without_delete_untagged_untagged_manifests_stay(driver: base.Driver) -> None:
    st = store.Store(driver)
    old = make_image("old")
    await push_image(st, "r", old, tag=None)
    age_everything(driver, st, 2 * HOUR)
    report = gc.collect(st, grace=HOUR, dry_run=False)
    assert report.manifests == [] and report.blobs == []
    assert st.get_manifest("r", digest.parse(old.digest)).data == old.manifest


async def test_index_children_and_referrers_of_kept_manifests_stay_orphan_referrers_go(
    driver: base.Driver,
) -> None:
    st = store.Store(driver)
    child_a, child_b, lone = make_image("a"), make_image("b"), make_image("lone")
    for image in (child_a, child_b, lone):
        await push_image(st, "r", image, tag=None)
    index = index_of(child_a, child_b)
    st.put_manifest("r", "multi", data=index, content_type=OCI_INDEX)
    signature_of_index_child = referrer_of(child_a, "kept")
    orphan_signature = referrer_of(lone, "orphan")
    for sig in (signature_of_index_child, orphan_signature):
        await push_image(st, "r", sig, tag=None)
    age_everything(driver, st, 2 * HOUR)

    report = gc.collect(st, grace=HOUR, dry_run=False, delete_untagged=True)

    assert sorted(report.manifests) == sorted([f"r@{lone.digest}", f"r@{orphan_signature.digest}"])
    for image in (child_a, child_b, signature_of_index_child):
        assert st.get_manifest("r", digest.parse(image.digest)).data == image.manifest
    assert [r["digest"] for r in st.referrers("r", digest.parse(child_a.digest))] == [
        signature_of_index_child.digest
    ]
    assert st.referrers("r", digest.parse(lone.digest)) == []
    assert fsck.check(st) == fsck.Report()


async def test_a_referrer_whose_subject_was_deleted_goes(driver: base.Driver) -> None:
    st = store.Store(driver)
    subject = make_image("subject")
    await push_image(st, "r", subject, tag="v1")
    signature = referrer_of(subject, "sig")
    await push_image(st, "r", signature, tag=None)
    st.delete_manifest("r", digest.parse(subject.digest))
    age_everything(driver, st, 2 * HOUR)
    report = gc.collect(st, grace=HOUR, dry_run=False, delete_untagged=True)
    assert report.manifests == [f"r@{signature.digest}"]
    assert fsck.check(st) == fsck.Report()


# ----------------------------------------------------------------------------------------- retention
async def test_retention_keeps_the_newest_matching_tags_and_never_a_young_one(driver: base.Driver) -> None:
    st = store.Store(driver)
    images = [make_image(f"v{i}") for i in range(5)]
    for i, image in enumerate(images):
        await push_image(st, "team/app", image, tag=f"v{i}")
    await push_image(st, "other", images[0], tag="v0")
    age_everything(driver, st, 10 * HOUR)
    for i in range(5):  # v4 newest; v0 and v1 are past the grace period, v2..v4 within keepLast
        age(driver, paths.tag_link("team/app", f"v{i}"), (10 - i) * HOUR)
    recent = make_image("recent")
    await push_image(st, "team/app", recent, tag="v-recent")  # retired by the rule, but young
    policy = retention.parse("rules: [{repositories: ['team/**'], tags: ['v?'], keepLast: 3}]")

    report = gc.collect(st, grace=HOUR, dry_run=False, delete_untagged=True, policy=policy)

    assert report.tags == ["team/app:v0", "team/app:v1"]
    assert sorted(report.manifests) == sorted(f"team/app@{images[i].digest}" for i in (0, 1))
    assert st.tags("team/app") == ["v-recent", "v2", "v3", "v4"]
    assert st.tags("other") == ["v0"]  # not covered: untouched, and its blobs are kept
    assert st.get_manifest("other", "v0").data == images[0].manifest
    assert fsck.check(st) == fsck.Report()


async def test_retention_keeps_what_a_kept_index_lists(driver: base.Driver) -> None:
    st = store.Store(driver)
    child = make_image("child")
    await push_image(st, "r", child, tag="old")
    st.put_manifest("r", "release", data=index_of(child), content_type=OCI_INDEX)
    age_everything(driver, st, 2 * HOUR)
    policy = retention.parse("rules: [{repositories: [r], tags: [release], keepLast: 1}]")
    report = gc.collect(st, grace=HOUR, dry_run=False, delete_untagged=True, policy=policy)
    assert report.tags == ["r:old"]
    assert report.manifests == []
    assert st.get_manifest("r", digest.parse(child.digest)).data == child.manifest


async def test_a_dry_run_reports_what_the_real_run_deletes_and_changes_nothing(driver: base.Driver) -> None:
    st = store.Store(driver)
    for i in range(4):
        await push_image(st, "r", make_image(f"i{i}"), tag=f"t{i}")
    await push_image(st, "r", make_image("untagged"), tag=None)
    age_everything(driver, st, 2 * HOUR)
    policy = retention.parse("rules: [{repositories: [r], keepLast: 2}]")
    before = snapshot(driver, st)

    dry = gc.collect(st, grace=HOUR, dry_run=True, delete_untagged=True, policy=policy)
    assert snapshot(driver, st) == before
    assert dry.dry_run and len(dry.tags) == 2 and len(dry.manifests) == 3

    real = gc.collect(st, grace=HOUR, dry_run=False, delete_untagged=True, policy=policy)
    assert (real.tags, sorted(real.manifests), sorted(real.blobs), real.bytes) == (
        dry.tags,
        sorted(dry.manifests),
        sorted(dry.blobs),
        dry.bytes,
    )


async def test_an_index_pushed_while_gc_decides_keeps_the_manifest_it_lists(
    driver: base.Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = store.Store(driver)
    child = make_image("child")
    await push_image(st, "r", child, tag=None)
    age_everything(driver, st, 2 * HOUR)
    scan = gc._scan

    def scan_then_push(s: store.Store, repo: str) -> dict[digest.Digest, gc._Revision]:
        found = scan(s, repo)
        # A client pushes an index listing the (old, untagged) child after gc has read the repository.
        s.put_manifest(repo, "multi", data=index_of(child), content_type=OCI_INDEX)
        return found

    monkeypatch.setattr(gc, "_scan", scan_then_push)
    report = gc.collect(st, grace=HOUR, dry_run=False, delete_untagged=True)
    assert report.manifests == []
    assert report.blobs == []
    assert st.get_manifest("r", digest.parse(child.digest)).data == child.manifest
    assert fsck.check(st) == fsck.Report()


# ---------------------------------------------------------------------------------------------- CLI
async def test_gc_cli_applies_a_retention_file_and_prints_a_json_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    driver = filesystem.FilesystemDriver(data)
    st = store.Store(driver)
    for i in range(3):
        await push_image(st, "r", make_image(f"i{i}"), tag=f"t{i}")
        age(driver, paths.tag_link("r", f"t{i}"), (10 - i) * HOUR)
    age_everything(driver, st, 10 * HOUR)
    for i in range(3):
        age(driver, paths.tag_link("r", f"t{i}"), (10 - i) * HOUR)
    rules = tmp_path / "retention.json"
    rules.write_text(json.dumps({"rules": [{"repositories": ["**"], "keepLast": 1}]}))
    argv = ["gc", "--data-dir", str(data), "--retention", str(rules), "--delete-untagged", "--json"]

    assert cli.main([*argv, "--dry-run"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["dryRun"] is True and dry["tagsDeleted"] == 2 and st.tags("r") == ["t0", "t1", "t2"]

    assert cli.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tagsDeleted"] == 2 and out["manifestsDeleted"] == 2 and out["blobsDeleted"] == 6
    assert out["bytesFreed"] > 0 and out["errors"] == 0 and out["items"]["tags"] == ["r:t0", "r:t1"]
    assert st.tags("r") == ["t2"]


def test_gc_cli_refuses_a_bad_retention_file_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data").mkdir()
    bad = tmp_path / "retention.yaml"
    bad.write_text("rules: [{repositories: [a]}]")
    assert cli.main(["gc", "--data-dir", str(tmp_path / "data"), "--retention", str(bad)]) == 2
    assert "rules[0]: give keepLast" in capsys.readouterr().err
    assert cli.main(["gc", "--data-dir", str(tmp_path / "data"), "--retention", str(tmp_path / "none")]) == 2


async def test_a_manifest_pushed_between_mark_and_sweep_keeps_its_old_blobs(
    driver: base.Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = store.Store(driver)
    image = make_image("late")
    await push(st, "r", image.config)
    await push(st, "r", image.layer)
    age_everything(driver, st, 2 * HOUR)  # uploaded long ago, referenced by nothing yet
    links = sweep.layer_links

    def push_then_list(s: store.Store) -> dict[digest.Digest, list[str]]:
        # The client pushes the manifest after gc marked (nothing) and before it sweeps.
        s.put_manifest("r", "v1", data=image.manifest, content_type=OCI_MANIFEST)
        return links(s)

    monkeypatch.setattr(sweep, "layer_links", push_then_list)  # read at the start of the sweep
    report = gc.collect(st, grace=HOUR, dry_run=False, delete_untagged=True)
    assert report.blobs == []
    assert st.get_manifest("r", "v1").data == image.manifest
    assert fsck.check(st) == fsck.Report()


def test_gc_lock_lets_pushes_share_and_a_deletion_wait_for_them() -> None:
    lock = store.GcLock()
    events: list[str] = []
    pushing, deleted = threading.Event(), threading.Event()

    def push_a() -> None:
        with lock.shared():
            events.append("push a in")
            pushing.set()
            time.sleep(0.2)
            events.append("push a out")

    def delete() -> None:
        pushing.wait()
        with lock.exclusive():
            events.append("delete")
        deleted.set()

    def push_b() -> None:
        pushing.wait()
        while not lock._waiting:  # until the deletion queues behind push a
            time.sleep(0.001)
        with lock.shared():  # a deletion is waiting: this push goes after it
            events.append("push b")

    threads = [threading.Thread(target=f) for f in (push_a, delete, push_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert deleted.is_set()
    assert events == ["push a in", "push a out", "delete", "push b"]
