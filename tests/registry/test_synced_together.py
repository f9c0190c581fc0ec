"""Directory syncs gathered at the end of a block (storage.base.Driver.synced_together, issue 15).

Each fsync that commits the file system's journal costs a small push about a millisecond, and a blob's
commit used to make three (its data, its directory, the repository's link directory). Covers, with the
real filesystem driver and the real `os.fsync` watched:
- inside the block, file data is synced where each call syncs it, directories are not; as the block ends
  each directory is synced once, in the order first changed; a failing block still syncs them and raises;
- nested blocks join the outer one; outside any block every call syncs as before;
- a blob commit through the store syncs the data first and each directory once, after both renames.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dockyard_registry import digest, paths, store
from dockyard_registry.storage import base, filesystem


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What os.fsync was called on, by path, in order."""
    seen: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        seen.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return seen


def test_directories_are_synced_once_each_as_the_block_ends(tmp_path: Path, synced: list[str]) -> None:
    driver = filesystem.FilesystemDriver(tmp_path)
    with driver.synced_together():
        driver.put("a/x", b"1", durability=base.Durability.ENTRY)
        driver.put("b/z", b"3")  # FULL: its data is synced at once
        driver.put("a/y", b"2", durability=base.Durability.ENTRY)
        with driver.synced_together():  # nested: joins the outer block
            driver.put("c/w", b"4", durability=base.Durability.ENTRY)
        assert len(synced) == 1 and synced[0].startswith(f"{tmp_path}/b/{filesystem.TEMP_PREFIX}")
    assert synced[1:] == [f"{tmp_path}/a", f"{tmp_path}/b", f"{tmp_path}/c"]
    assert (tmp_path / "a" / "y").read_bytes() == b"2"


def test_a_failing_block_still_syncs_what_it_changed(tmp_path: Path, synced: list[str]) -> None:
    driver = filesystem.FilesystemDriver(tmp_path)
    with pytest.raises(RuntimeError, match="later step"), driver.synced_together():
        driver.put("a/x", b"1", durability=base.Durability.ENTRY)
        raise RuntimeError("later step")
    assert synced == [f"{tmp_path}/a"]


def test_outside_a_block_every_call_syncs_at_once(tmp_path: Path, synced: list[str]) -> None:
    driver = filesystem.FilesystemDriver(tmp_path)
    driver.put("a/x", b"1", durability=base.Durability.ENTRY)
    assert synced == [f"{tmp_path}/a"]
    driver.put("a/y", b"2", durability=base.Durability.ENTRY)
    assert synced == [f"{tmp_path}/a", f"{tmp_path}/a"]


async def test_a_blob_commit_syncs_its_data_then_each_directory_once_after_both_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = store.Store(filesystem.FilesystemDriver(tmp_path))
    data = b"layer bytes"
    dgst = digest.of_bytes(data)
    link = tmp_path / paths.layer_link("team/app", dgst)
    upload_id = s.start_upload("team/app")
    synced: list[tuple[str, bool]] = []  # what was synced, and whether the link existed by then
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), link.exists()))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)

    async def body() -> AsyncIterator[bytes]:
        yield data

    await s.finish_upload("team/app", upload_id, dgst=dgst, body=body())

    assert synced == [
        (f"{tmp_path}/{paths.upload_data(upload_id)}", False),  # the data, before it is renamed
        (f"{tmp_path}/{paths.blob_dir(dgst)}", True),
        (str(link.parent), True),
    ]
    assert (tmp_path / paths.blob_data(dgst)).read_bytes() == data
