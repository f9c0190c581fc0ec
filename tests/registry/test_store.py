"""The store's domain rules, directly (both drivers), where HTTP tests cannot see them.

Covers: an upload survives a restart (a new Store over the same driver re-hashes what is on disk once
and continues); finishing with another algorithm than the running hash re-hashes instead of failing;
identical content pushed to two repositories is stored once (deduplicated) and linked twice; manifests
are stored as the exact bytes with their media type; a referrer entry is written for a subject and
removed with its manifest; the catalog only lists directories that are repositories; and a finished
upload leaves no session behind; a damaged tag file reads as an unknown manifest; a revision link
emptied by a power loss still serves the right media type; a multi-MiB body (hashed and written by a
worker thread in batches) failing midway is rolled back once the worker is done.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest

from dockyard_registry import digest, paths, store
from dockyard_registry.storage import base
from tests.registry.conftest import OCI_MANIFEST, make_image, make_manifest, sha256


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_an_upload_survives_a_restart_and_is_rehashed_once(
    driver: base.Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = store.Store(driver)
    upload = first.start_upload("r")
    await first.write_chunk("r", upload, body=chunks(b"before restart "))
    second = store.Store(driver)  # a new process: no running hash in memory
    rehashed: list[str] = []
    real = second._hash_file

    def spy(path: str, algorithm: str) -> digest.Hasher:
        rehashed.append(path)
        return real(path, algorithm)

    monkeypatch.setattr(second, "_hash_file", spy)
    await second.write_chunk("r", upload, body=chunks(b"and after"), start=15)
    await second.write_chunk("r", upload, body=chunks(b"!"))
    size = await second.finish_upload("r", upload, dgst=digest.of_bytes(b"before restart and after!"))
    assert size == 25
    assert rehashed == [paths.upload_data(upload)], "the bytes on disk are re-read exactly once"


async def test_finishing_with_another_algorithm_rehashes_instead_of_failing(driver: base.Driver) -> None:
    st = store.Store(driver)
    upload = st.start_upload("r")
    await st.write_chunk("r", upload, body=chunks(b"sha512 please"))
    dgst = digest.parse("sha512:" + hashlib.sha512(b"sha512 please").hexdigest())
    await st.finish_upload("r", upload, dgst=dgst)
    assert st.blob_size("r", dgst) == 13


async def test_identical_content_is_stored_once_and_linked_per_repository(driver: base.Driver) -> None:
    st = store.Store(driver)
    for repo in ("one", "two"):
        upload = st.start_upload(repo)
        await st.finish_upload(repo, upload, dgst=digest.of_bytes(b"same"), body=chunks(b"same"))
    dgst = digest.of_bytes(b"same")
    assert driver.list(f"blobs/sha256/{dgst.encoded[:2]}") == [dgst.encoded]
    assert st.blob_size("one", dgst) == st.blob_size("two", dgst) == 4
    assert driver.list(paths.UPLOADS) == []


async def test_manifest_bytes_and_media_type_are_kept_exactly(driver: base.Driver) -> None:
    st = store.Store(driver)
    image = make_image()
    for blob in (image.config, image.layer):
        upload = st.start_upload("r")
        await st.finish_upload("r", upload, dgst=digest.of_bytes(blob), body=chunks(blob))
    weird = image.manifest.replace(b", ", b",   ")  # unusual whitespace must survive byte for byte
    result = st.put_manifest("r", "v1", data=weird, content_type=OCI_MANIFEST)
    found = st.get_manifest("r", "v1")
    assert (found.data, found.media_type, str(found.digest)) == (weird, OCI_MANIFEST, sha256(weird))
    assert result.subject is None


async def test_referrer_entry_follows_its_manifest(driver: base.Driver) -> None:
    st = store.Store(driver)
    upload = st.start_upload("r")
    await st.finish_upload("r", upload, dgst=digest.of_bytes(b"{}"), body=chunks(b"{}"))
    subject = {"mediaType": OCI_MANIFEST, "digest": sha256(b"absent subject"), "size": 14}
    body = make_manifest(config=b"{}", layers=[], subject=subject, artifact_type="application/x-test")
    result = st.put_manifest("r", digest.of_bytes(body), data=body, content_type=OCI_MANIFEST)
    assert str(result.subject) == subject["digest"]
    listed = st.referrers("r", digest.parse(str(subject["digest"])))
    assert listed == [
        {
            "mediaType": OCI_MANIFEST,
            "digest": sha256(body),
            "size": len(body),
            "artifactType": "application/x-test",
        }
    ]
    st.delete_manifest("r", result.digest)
    assert st.referrers("r", digest.parse(str(subject["digest"]))) == []


async def test_catalog_lists_only_repositories(driver: base.Driver) -> None:
    st = store.Store(driver)
    for repo in ("a/b/c", "a", "x/y"):
        upload = st.start_upload(repo)
        await st.finish_upload(repo, upload, dgst=digest.of_bytes(repo.encode()), body=chunks(repo.encode()))
    assert st.catalog() == ["a", "a/b/c", "x/y"]


async def test_a_damaged_tag_file_reads_as_an_unknown_manifest_not_a_bad_request(driver: base.Driver) -> None:
    st = store.Store(driver)
    driver.put(paths.tag_link("r", "broken"), b"\xff not a digest")
    with pytest.raises(store.ManifestUnknownError, match="damaged"):
        st.get_manifest("r", "broken")


async def test_a_revision_link_emptied_by_a_power_loss_still_serves_the_right_media_type(
    driver: base.Driver,
) -> None:
    st = store.Store(driver)
    upload = st.start_upload("r")
    await st.finish_upload("r", upload, dgst=digest.of_bytes(b"{}"), body=chunks(b"{}"))
    index = b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}'
    result = st.put_manifest("r", "v1", data=index, content_type=None)
    driver.put(paths.revision_link("r", result.digest), b"")  # what ENTRY durability may leave after a crash
    assert st.get_manifest("r", "v1").media_type == "application/vnd.oci.image.index.v1+json"


async def test_a_multi_mib_body_failing_midway_is_rolled_back_after_the_worker_finishes(
    driver: base.Driver,
) -> None:
    st = store.Store(driver)
    upload = st.start_upload("r")
    await st.write_chunk("r", upload, body=chunks(b"k" * 1000))
    mib = b"m" * (1 << 20)

    async def failing() -> AsyncIterator[bytes]:
        for _ in range(3):  # several batches go to the worker thread before the failure
            yield mib
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await st.write_chunk("r", upload, body=failing())
    assert st.upload_size("r", upload) == 1000
    await st.write_chunk("r", upload, body=chunks(mib, mib, b"tail"))
    expected = b"k" * 1000 + mib + mib + b"tail"
    assert await st.finish_upload("r", upload, dgst=digest.of_bytes(expected)) == len(expected)
