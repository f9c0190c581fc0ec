"""The storage driver contract, run over every driver (memory and filesystem) by the `driver` fixture.

Covers: put/get round trip and replacement, missing paths (get/reader raise, size/mtime None, list
empty, delete no-op), sorted direct-children listing, recursive delete, append writers with truncate,
readers with an offset, commit moving a file atomically (replacing the target), touch refreshing mtime,
every durability level storing the same bytes, no leftovers after complete writes; and (filesystem only)
the path guard, that in-flight temp files are not listed but are found as leftovers (which mtime and
delete handle), and that each durability level, commit and scratch delete pay exactly the
fsyncs they need.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockyard_registry.storage import base, filesystem


def test_put_then_get_returns_the_bytes(driver: base.Driver) -> None:
    driver.put("a/b/c", b"hello")
    assert driver.get("a/b/c") == b"hello"
    assert driver.size("a/b/c") == 5


def test_put_replaces_existing_content(driver: base.Driver) -> None:
    driver.put("x", b"old content")
    driver.put("x", b"new")
    assert driver.get("x") == b"new"


def test_missing_paths_behave_as_documented(driver: base.Driver) -> None:
    with pytest.raises(FileNotFoundError):
        driver.get("nope")
    with pytest.raises(FileNotFoundError):
        driver.open_reader("nope")
    assert driver.size("nope") is None
    assert driver.mtime("nope") is None
    assert driver.list("nope") == []
    driver.delete("nope")


def test_list_returns_sorted_direct_children_only(driver: base.Driver) -> None:
    driver.put("d/b/1", b"")
    driver.put("d/a", b"")
    driver.put("d/c/deep/er", b"")
    assert driver.list("d") == ["a", "b", "c"]


def test_delete_removes_a_directory_recursively(driver: base.Driver) -> None:
    driver.put("r/x/1", b"1")
    driver.put("r/x/y/2", b"2")
    driver.put("r/keep", b"k")
    driver.delete("r/x")
    assert driver.size("r/x/1") is None
    assert driver.size("r/x/y/2") is None
    assert driver.list("r") == ["keep"]


def test_writer_appends_and_truncates(driver: base.Driver) -> None:
    w = driver.open_writer("up/data")
    w.write(b"abc")
    w.write(b"def")
    assert w.size == 6
    w.truncate(4)
    w.write(b"Z")
    w.sync()
    w.close()
    assert driver.get("up/data") == b"abcdZ"
    again = driver.open_writer("up/data")
    assert again.size == 5
    again.close()


def test_reader_starts_at_the_offset(driver: base.Driver) -> None:
    driver.put("f", b"0123456789")
    with driver.open_reader("f", offset=7) as f:
        assert f.read() == b"789"


def test_commit_moves_a_file_and_replaces_the_target(driver: base.Driver) -> None:
    w = driver.open_writer("uploads/1/data")
    w.write(b"payload")
    w.close()
    driver.put("blobs/x/data", b"stale")
    driver.commit("uploads/1/data", "blobs/x/data")
    assert driver.get("blobs/x/data") == b"payload"
    assert driver.size("uploads/1/data") is None


def test_touch_refreshes_mtime_and_ignores_missing_files(driver: base.Driver, tmp_path: Path) -> None:
    driver.put("t", b"x")
    if isinstance(driver, filesystem.FilesystemDriver):
        os.utime(driver.root / "t", (1000, 1000))
    else:
        driver.set_mtime("t", 1000)  # type: ignore[attr-defined]
    assert driver.mtime("t") == 1000
    driver.touch("t")
    assert (driver.mtime("t") or 0) > 1000
    driver.touch("missing")
    assert driver.size("missing") is None


def test_local_path_is_a_real_file_only_for_the_filesystem_driver(driver: base.Driver) -> None:
    driver.put("p/q", b"data")
    local = driver.local_path("p/q")
    if isinstance(driver, filesystem.FilesystemDriver):
        assert local is not None and local.read_bytes() == b"data"
    else:
        assert local is None


@pytest.mark.parametrize("path", ["../etc/passwd", "/abs", "a//b", "a/./b", "a/../b", "", "a\\b"])
def test_filesystem_driver_refuses_paths_that_could_escape_its_root(tmp_path: Path, path: str) -> None:
    driver = filesystem.FilesystemDriver(tmp_path)
    with pytest.raises(ValueError, match="unsafe storage path"):
        driver.put(path, b"x")


def test_filesystem_put_leaves_no_temp_file_behind(tmp_path: Path) -> None:
    driver = filesystem.FilesystemDriver(tmp_path)
    driver.put("dir/file", b"x")
    assert sorted(p.name for p in (tmp_path / "dir").iterdir()) == ["file"]


def test_filesystem_list_hides_in_flight_temp_files(tmp_path: Path) -> None:
    driver = filesystem.FilesystemDriver(tmp_path)
    driver.put("dir/file", b"x")
    (tmp_path / "dir" / ".tmp-123").write_bytes(b"partial")
    assert driver.list("dir") == ["file"]


def test_complete_writes_leave_no_leftovers(driver: base.Driver) -> None:
    driver.put("dir/a", b"x")
    driver.put("dir/sub/b", b"y", durability=base.Durability.NONE)
    writer = driver.open_writer("dir/upload")
    writer.write(b"z")
    writer.close()
    driver.commit("dir/upload", "dir/sub/c")
    assert driver.leftovers("dir") == ()
    assert driver.leftovers("missing") == ()


def test_filesystem_leftovers_are_the_temp_files_of_interrupted_writes(tmp_path: Path) -> None:
    driver = filesystem.FilesystemDriver(tmp_path)
    driver.put("dir/file", b"x")
    (tmp_path / "dir" / "sub").mkdir()
    (tmp_path / "dir" / ".tmp-1").write_bytes(b"partial")
    (tmp_path / "dir" / "sub" / ".tmp-2").write_bytes(b"partial too")
    assert driver.leftovers("dir") == ("dir/.tmp-1", "dir/sub/.tmp-2")
    assert driver.size("dir/sub/.tmp-2") == 11
    assert driver.mtime("dir/.tmp-1") is not None
    driver.delete("dir/.tmp-1")
    assert driver.leftovers("dir") == ("dir/sub/.tmp-2",)
    assert driver.get("dir/file") == b"x"


@pytest.mark.parametrize("durability", list(base.Durability))
def test_every_durability_level_stores_the_same_bytes(
    driver: base.Driver, durability: base.Durability
) -> None:
    driver.put("level/file", b"content", durability=durability)
    assert driver.get("level/file") == b"content"


def count_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record every os.fsync (still performing it); returns the list the calls land in."""
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


@pytest.mark.parametrize(
    ("durability", "fsyncs"),
    [(base.Durability.NONE, 0), (base.Durability.ENTRY, 1), (base.Durability.FULL, 2)],
)
def test_filesystem_pays_only_the_fsyncs_a_durability_level_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durability: base.Durability, fsyncs: int
) -> None:
    driver = filesystem.FilesystemDriver(tmp_path)
    driver.put("d/existing", b"x", durability=base.Durability.NONE)
    calls = count_fsyncs(monkeypatch)
    driver.put("d/file", b"x", durability=durability)
    assert len(calls) == fsyncs


def test_filesystem_commit_syncs_the_file_and_its_new_directory_and_scratch_deletes_sync_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = filesystem.FilesystemDriver(tmp_path)
    writer = driver.open_writer("uploads/u/data")
    writer.write(b"blob")
    writer.close()
    calls = count_fsyncs(monkeypatch)
    driver.commit("uploads/u/data", "blobs/b/data")
    assert len(calls) == 2
    driver.delete("uploads/u", durable=False)
    assert len(calls) == 2
    driver.delete("blobs/b", durable=True)
    assert len(calls) == 3
