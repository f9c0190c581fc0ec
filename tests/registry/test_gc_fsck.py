"""Garbage collection and fsck over the store (both drivers) and through the CLI.

Covers gc: blobs referenced by any manifest revision (config, layers, manifests themselves, index children)
are kept; unreferenced blobs older than the grace period are deleted along with the layer links to them;
younger ones (just pushed, or re-linked) are kept, and a push relying on an old blob (a dedup commit, a
mount, a manifest naming it) keeps it by a `pushed` record without touching or rewriting its data; --dry-run
reports without deleting; stale upload sessions go, active ones stay (by --upload-expiry when given, else the
grace period); blob writes interrupted before their rename (a crash) are removed once old, and so are the temp
files a kill -9 leaves anywhere in the store (a manifest PUT's tag, revision and blob, an upload's info),
reported by --dry-run; with foreign layers allowed (the serve default, over HTTP) a layer with `urls` naming
another repository's blob is not linked and does not keep that blob, one the repository holds is kept, urls
must be plain http(s), and only foreign layer types are exempt from being in the repository.
fsck: a clean store has no problems (an interrupted write is not corruption); corrupted blob bytes, a missing
blob, a dangling tag and a manifest whose layer vanished are each reported as corruption; what API DELETEs
leave behind (an index listing a deleted manifest, a manifest naming a blob deleted from its repository) is
reported as dangling, not corruption: the CLI warns and exits 0, or 1 with --strict.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from dockyard_registry import cli, digest, fsck, gc, paths, store
from dockyard_registry.storage import base, filesystem, memory
from tests.registry.conftest import OCI_MANIFEST, ClientFactory, Registry, make_image, sha256


def age(driver: base.Driver, path: str, seconds: float) -> None:
    """Make a file look `seconds` old (a blob's data: its `pushed` record too, when it has one)."""
    if path.startswith(f"{paths.BLOBS}/") and path.endswith("/data"):
        record = path.removesuffix("data") + "pushed"
        if driver.size(record) is not None:
            age(driver, record, seconds)
    stamp = time.time() - seconds
    if isinstance(driver, filesystem.FilesystemDriver):
        local = driver.local_path(path)
        assert local is not None
        os.utime(local, (stamp, stamp))
    else:
        assert isinstance(driver, memory.MemoryDriver)
        driver.set_mtime(path, stamp)


async def push(st: store.Store, repo: str, data: bytes) -> digest.Digest:
    upload = st.start_upload(repo)

    async def body() -> object:
        yield data

    dgst = digest.of_bytes(data)
    await st.finish_upload(repo, upload, dgst=dgst, body=body())  # type: ignore[arg-type]
    return dgst


async def seeded_store(driver: base.Driver) -> tuple[store.Store, digest.Digest, digest.Digest]:
    """A store with one tagged image and one orphan blob; returns (store, manifest digest, orphan)."""
    st = store.Store(driver)
    image = make_image()
    await push(st, "r", image.config)
    await push(st, "r", image.layer)
    result = st.put_manifest("r", "v1", data=image.manifest, content_type=OCI_MANIFEST)
    orphan = await push(st, "r", b"orphan bytes")
    return st, result.digest, orphan


def age_all_blobs(st: store.Store, seconds: float) -> None:
    for blob in gc.stored_blobs(st):
        age(st.driver, paths.blob_data(blob), seconds)


async def test_gc_deletes_old_unreferenced_blobs_and_their_links(driver: base.Driver) -> None:
    st, manifest, orphan = await seeded_store(driver)
    age_all_blobs(st, 7200)
    report = gc.collect(st, grace=3600, dry_run=False)
    assert report.blobs == [str(orphan)]
    assert report.bytes == len(b"orphan bytes")
    assert driver.size(paths.blob_data(orphan)) is None
    assert driver.size(paths.layer_link("r", orphan)) is None
    image = make_image()
    for kept in (manifest, digest.of_bytes(image.config), digest.of_bytes(image.layer)):
        assert driver.size(paths.blob_data(kept)) is not None
    assert st.get_manifest("r", "v1").data == image.manifest


async def test_gc_keeps_unreferenced_blobs_inside_the_grace_period(driver: base.Driver) -> None:
    st, _, orphan = await seeded_store(driver)
    report = gc.collect(st, grace=3600, dry_run=False)
    assert report.blobs == []
    assert driver.size(paths.blob_data(orphan)) is not None


async def test_pushes_relying_on_an_old_blob_record_it_without_touching_its_data(
    driver: base.Driver,
) -> None:
    st, _, orphan = await seeded_store(driver)
    age_all_blobs(st, 7200)
    aged = driver.mtime(paths.blob_data(orphan))
    assert st.mount_blob("other", source="r", dgst=orphan)  # a mount relies on it ...
    await push(st, "third", b"orphan bytes")  # ... and so does a deduplicated upload
    assert driver.mtime(paths.blob_data(orphan)) == aged  # the data was never touched
    report = gc.collect(st, grace=3600, dry_run=False)
    assert str(orphan) not in report.blobs
    assert driver.get(paths.blob_data(orphan)) == b"orphan bytes"
    age_all_blobs(st, 7200)  # the record ages like anything else: then the blob goes
    report = gc.collect(st, grace=3600, dry_run=False)
    assert report.blobs == [str(orphan)]
    assert driver.size(paths.blob_pushed(orphan)) is None


async def test_gc_dry_run_reports_but_deletes_nothing(driver: base.Driver) -> None:
    st, _, orphan = await seeded_store(driver)
    age_all_blobs(st, 7200)
    report = gc.collect(st, grace=3600, dry_run=True)
    assert report.blobs == [str(orphan)]
    assert driver.size(paths.blob_data(orphan)) is not None
    assert driver.size(paths.layer_link("r", orphan)) is not None


async def test_relinking_an_old_blob_protects_it_for_the_grace_period(driver: base.Driver) -> None:
    st, _, orphan = await seeded_store(driver)
    age_all_blobs(st, 7200)
    assert st.mount_blob("other", source="r", dgst=orphan)
    assert gc.collect(st, grace=3600, dry_run=False).blobs == []


async def test_gc_keeps_untagged_manifests_and_index_children_and_removes_only_stale_uploads(
    driver: base.Driver,
) -> None:
    st, manifest, _ = await seeded_store(driver)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": str(manifest), "size": len(make_image().manifest)}
            ],
        }
    ).encode()
    st.put_manifest("r", "multi", data=index, content_type=None)
    st.delete_tag("r", "v1")
    stale, active = st.start_upload("r"), st.start_upload("r")
    driver.put(
        paths.upload_info(stale), json.dumps({"repository": "r", "started": time.time() - 7200}).encode()
    )
    age(driver, paths.upload_data(stale), 7200)
    age_all_blobs(st, 7200)
    report = gc.collect(st, grace=3600, dry_run=False)
    assert str(manifest) not in report.blobs
    assert report.uploads == [stale]
    assert st.upload_size("r", active) == 0


async def test_fsck_finds_nothing_wrong_in_a_clean_store(driver: base.Driver) -> None:
    st, _, _ = await seeded_store(driver)
    assert fsck.check(st) == fsck.Report()


async def test_fsck_reports_corruption_missing_blobs_and_dangling_tags(driver: base.Driver) -> None:
    st, manifest, orphan = await seeded_store(driver)
    layer = digest.of_bytes(make_image().layer)
    driver.put(paths.blob_data(orphan), b"bit rot")
    driver.delete(paths.blob_dir(layer))
    driver.put(paths.tag_link("r", "ghost"), sha256(b"no such manifest").encode())
    report = fsck.check(st)
    assert report.dangling == []
    problems = "\n".join(report.corruption)
    assert f"blob {orphan}: content does not match its digest" in problems
    assert f"layer link to missing blob {layer}" in problems
    assert f"manifest {manifest} references missing blob {layer}" in problems
    assert "tag ghost points to missing manifest" in problems


def index_of(*children: digest.Digest) -> bytes:
    size = len(make_image().manifest)
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": str(c), "size": size} for c in children],
        }
    ).encode()


async def test_fsck_reports_what_api_deletes_leave_behind_as_dangling_not_corruption(
    driver: base.Driver,
) -> None:
    st, manifest, _ = await seeded_store(driver)
    index = st.put_manifest("r", "multi", data=index_of(manifest), content_type=None).digest
    layer = digest.of_bytes(make_image().layer)
    # Both are DELETEs the distribution API accepts: a blob a manifest names, a child an index lists.
    st.delete_blob("r", layer)
    assert fsck.check(st) == fsck.Report(
        dangling=[f"repository r: manifest {manifest} references blob {layer}, deleted from the repository"]
    )
    st.delete_manifest("r", manifest)
    assert fsck.check(st) == fsck.Report(
        dangling=[f"repository r: index {index} references manifest {manifest}, deleted from the repository"]
    )


def test_fsck_cli_warns_about_dangling_references_and_fails_on_them_only_with_strict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def deleted_child() -> tuple[digest.Digest, digest.Digest]:
        st, manifest, _ = await seeded_store(filesystem.FilesystemDriver(tmp_path))
        index = st.put_manifest("r", "multi", data=index_of(manifest), content_type=None).digest
        st.delete_manifest("r", manifest)
        return index, manifest

    index, manifest = asyncio.run(deleted_child())
    warning = f"warning: repository r: index {index} references manifest {manifest}, deleted"
    assert cli.main(["fsck", "--data-dir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert warning in out and "0 problems (corruption), 1 dangling references (warnings)" in err
    assert cli.main(["fsck", "--data-dir", str(tmp_path), "--strict"]) == 1
    out, err = capsys.readouterr()
    assert warning in out and "failing with --strict" in err


def interrupted_blob_dir(
    tmp_path: os.PathLike[str], *, age_seconds: float
) -> tuple[store.Store, digest.Digest]:
    """A filesystem store where a blob write was killed before its rename: a directory with a temp file."""
    from pathlib import Path

    st = store.Store(filesystem.FilesystemDriver(Path(tmp_path)))
    dgst = digest.of_bytes(b"never finished")
    directory = Path(tmp_path) / paths.blob_dir(dgst)
    directory.mkdir(parents=True)
    (directory / ".tmp-123").write_bytes(b"never fin")
    stamp = time.time() - age_seconds
    os.utime(directory, (stamp, stamp))
    return st, dgst


def test_fsck_does_not_report_a_blob_write_interrupted_before_its_rename(tmp_path: os.PathLike[str]) -> None:
    st, _ = interrupted_blob_dir(tmp_path, age_seconds=0)
    assert fsck.check(st) == fsck.Report()


def test_gc_removes_interrupted_blob_writes_once_they_are_old(tmp_path: os.PathLike[str]) -> None:
    st, dgst = interrupted_blob_dir(tmp_path, age_seconds=7200)
    gc.collect(st, grace=3600, dry_run=True)
    assert st.driver.mtime(paths.blob_dir(dgst)) is not None
    gc.collect(st, grace=3600, dry_run=False)
    assert st.driver.mtime(paths.blob_dir(dgst)) is None


async def test_gc_removes_temp_files_a_killed_write_left_once_older_than_the_grace(tmp_path: Path) -> None:
    st, manifest, _ = await seeded_store(filesystem.FilesystemDriver(tmp_path))
    upload = st.start_upload("r")
    # Where a kill -9 during a manifest PUT (blob, revision link, tag) or an upload's info write leaves one.
    old = [
        f"{paths.blob_dir(manifest)}/.tmp-1",
        f"{paths.revisions('r')}/sha256/.tmp-2",
        f"{paths.tags('r')}/.tmp-3",
        f"{paths.upload_dir(upload)}/.tmp-4",
    ]
    fresh = f"{paths.tags('r')}/.tmp-5"
    for path in [*old, fresh]:
        (tmp_path / path).write_bytes(b"half a write")
    for path in old:
        age(st.driver, path, 7200)
    assert sorted(gc.collect(st, grace=3600, dry_run=True).leftovers) == sorted(old)
    assert len(st.driver.leftovers(paths.REPOSITORIES)) == 3
    report = gc.collect(st, grace=3600, dry_run=False)
    assert sorted(report.leftovers) == sorted(old)
    assert st.driver.leftovers(paths.BLOBS) + st.driver.leftovers(paths.UPLOADS) == ()
    assert st.driver.leftovers(paths.REPOSITORIES) == (fresh,)
    assert fsck.check(st) == fsck.Report()
    assert st.upload_size("r", upload) == 0


async def test_gc_upload_expiry_is_separate_from_the_grace_period(driver: base.Driver) -> None:
    st = store.Store(driver)
    upload = st.start_upload("r")
    driver.put(
        paths.upload_info(upload), json.dumps({"repository": "r", "started": time.time() - 7200}).encode()
    )
    age(driver, paths.upload_data(upload), 7200)
    assert gc.collect(st, grace=3600, dry_run=True, upload_expiry=3 * 3600).uploads == []
    assert gc.collect(st, grace=3600, dry_run=False, upload_expiry=3600).uploads == [upload]
    assert driver.list(paths.UPLOADS) == []


async def test_gc_finishes_a_run_killed_between_a_blob_and_its_links(driver: base.Driver) -> None:
    st, _, orphan = await seeded_store(driver)
    driver.delete(paths.blob_dir(orphan))  # what a killed run (or an older version) could leave
    gc.collect(st, grace=3600, dry_run=False)
    assert driver.size(paths.layer_link("r", orphan)) is None
    assert fsck.check(st) == fsck.Report()


async def test_gc_leaves_a_link_a_manifest_needs_for_fsck_to_report(driver: base.Driver) -> None:
    st, _, _ = await seeded_store(driver)
    layer = digest.of_bytes(make_image().layer)
    driver.delete(paths.blob_dir(layer))
    gc.collect(st, grace=0, dry_run=False)
    assert driver.size(paths.layer_link("r", layer)) is not None
    assert any("references missing blob" in p for p in fsck.check(st).corruption)


FOREIGN = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"


def with_layer(layer: dict[str, Any]) -> bytes:
    """The default image's manifest plus one more layer."""
    doc = json.loads(make_image().manifest)
    doc["layers"].append(layer)
    return json.dumps(doc).encode()


@pytest.fixture
async def foreign_ok(make_client: ClientFactory) -> Registry:
    """A registry accepting foreign layers, holding the default image in `tenant`."""
    reg = await make_client(foreign_layer_urls=True)
    await reg.push_image("tenant", make_image(), tag="base")
    return reg


async def put(reg: Registry, repo: str, data: bytes) -> tuple[int, str]:
    resp = await reg.client.put(f"/v2/{repo}/manifests/v1", data=data, headers={"Content-Type": OCI_MANIFEST})
    body = await resp.text()
    return resp.status, (json.loads(body)["errors"][0]["code"] if resp.status >= 400 else "")


async def test_a_foreign_layer_naming_another_repositorys_blob_neither_links_nor_keeps_it(
    foreign_ok: Registry,
) -> None:
    private = await foreign_ok.push_blob("victim", b"the victim's private layer")
    layer = {"mediaType": FOREIGN, "digest": private, "size": 26, "urls": ["https://example.com/l"]}
    assert await put(foreign_ok, "tenant", with_layer(layer)) == (201, "")
    resp = await foreign_ok.client.get(f"/v2/tenant/blobs/{private}")
    assert (resp.status, (await resp.json())["errors"][0]["code"]) == (404, "BLOB_UNKNOWN")
    # The victim drops it: gc must collect it although tenant's manifest still names the digest.
    assert (await foreign_ok.client.delete(f"/v2/victim/blobs/{private}")).status == 202
    age_all_blobs(foreign_ok.store, 7200)
    report = gc.collect(foreign_ok.store, grace=3600, dry_run=False)
    assert report.blobs == [private]
    assert foreign_ok.store.driver.size(paths.blob_data(digest.parse(private))) is None
    assert (await foreign_ok.client.get("/v2/tenant/manifests/v1")).status == 200


async def test_a_foreign_layer_the_repository_holds_is_kept_by_gc(foreign_ok: Registry) -> None:
    held = await foreign_ok.push_blob("tenant", b"pushed along with its urls")
    layer = {"mediaType": FOREIGN, "digest": held, "size": 26, "urls": ["http://example.com/l"]}
    assert await put(foreign_ok, "tenant", with_layer(layer)) == (201, "")
    age_all_blobs(foreign_ok.store, 7200)
    assert gc.collect(foreign_ok.store, grace=3600, dry_run=False).blobs == []
    assert (await foreign_ok.client.get(f"/v2/tenant/blobs/{held}")).status == 200


@pytest.mark.parametrize(
    ("media_type", "urls", "expected"),
    [
        (FOREIGN, ["ftp://example.com/l"], "MANIFEST_INVALID"),
        (FOREIGN, ["https://example.com/l#part"], "MANIFEST_INVALID"),
        (FOREIGN, ["/relative/path"], "MANIFEST_INVALID"),
        (FOREIGN, ["https://[::1/l"], "MANIFEST_INVALID"),
        (FOREIGN, "https://example.com/l", "MANIFEST_INVALID"),
        # Only a foreign layer with urls is exempt from being in the repository (Distribution's rule).
        ("application/vnd.oci.image.layer.v1.tar+gzip", ["https://example.com/l"], "MANIFEST_BLOB_UNKNOWN"),
        (FOREIGN, [], "MANIFEST_BLOB_UNKNOWN"),
        (FOREIGN, None, "MANIFEST_BLOB_UNKNOWN"),
    ],
)
async def test_with_foreign_layers_allowed_urls_are_plain_http_and_other_layers_must_be_held(
    foreign_ok: Registry, media_type: str, urls: Any, expected: str
) -> None:
    private = await foreign_ok.push_blob("victim", b"the victim's private layer")
    layer: dict[str, Any] = {"mediaType": media_type, "digest": private, "size": 26}
    if urls is not None:
        layer["urls"] = urls
    assert await put(foreign_ok, "tenant", with_layer(layer)) == (400, expected)
