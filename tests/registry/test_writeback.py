"""Early writeback of pushed bytes (issue 15): the disk starts writing a blob before the commit's fsync.

Covers:
- `writeback.start` on this kernel: a regular file's range is taken, a pipe or a negative range is not,
  and without the call (another OS) it does nothing;
- a body file nginx wrote that becomes the upload (a monolithic push, a first PATCH) is written back in a
  second thread *while* it is hashed, and the push still stores exactly the bytes, as that very file;
- an appended chunk's range of the upload is written back once copied; a body file that is only copied
  from is never written back (it is nginx's scratch file), nor is a body under `writeback.MIN_BYTES`;
- the streamed path (FileWriter) starts writeback every MIN_BYTES written, over contiguous ranges, and a
  rollback (truncate) moves the next range's start back;
- the commit still fsyncs: its result does not rest on the kick (a kick the kernel refuses changes nothing).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from dockyard_registry import bodyfile, digest, store, writeback
from dockyard_registry.storage import filesystem
from tests.registry.conftest import ClientFactory, Registry, sha256
from tests.registry.test_body_files import HEADER, blob_file, body_dir, nginx_wrote

MiB = 1 << 20
BIG = writeback.MIN_BYTES + 12345


@pytest.fixture
async def reg(make_client: ClientFactory, tmp_path: Path) -> Registry:
    return await make_client(body_file_dir=body_dir(tmp_path))


def inode(fd: int) -> int:
    return os.fstat(fd).st_ino


@pytest.fixture
def kicks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """Every writeback.start call as (inode, offset, length); the real call still runs."""
    seen: list[tuple[int, int, int]] = []
    real = writeback.start

    def record(fd: int, offset: int = 0, length: int = 0) -> bool:
        seen.append((inode(fd), offset, length))
        return real(fd, offset, length)

    monkeypatch.setattr(writeback, "start", record)
    return seen


def test_start_takes_a_regular_file_s_range_and_nothing_else(tmp_path: Path) -> None:
    assert writeback.supported()  # Linux: every machine these tests run on
    path = tmp_path / "f"
    path.write_bytes(os.urandom(3 * MiB))
    fd = os.open(path, os.O_RDONLY)
    read, write = os.pipe()
    try:
        assert writeback.start(fd)
        assert writeback.start(fd, MiB, MiB)
        assert not writeback.start(fd, -1, MiB)
        assert not writeback.start(read)  # ESPIPE
    finally:
        for each in (fd, read, write):
            os.close(each)


def test_without_the_call_start_does_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writeback, "_sync_file_range", None)
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert not writeback.start(fd)
    finally:
        os.close(fd)
    assert not writeback.supported() and not writeback.size_worth_it(writeback.MIN_BYTES * 10)


async def test_a_renamed_body_is_written_back_while_it_is_hashed(
    reg: Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each side waits (bounded) for the other to have started: run one after the other, one of them
    times out and the flags say so."""
    hashing, kicked = threading.Event(), threading.Event()
    overlapped: dict[str, bool] = {}
    real_hash, real_start = bodyfile._hash_into, writeback.start
    kicked_inodes: list[int] = []

    def hash_into(hasher: digest.Hasher, fd: int, size: int, *, start: int = 0) -> None:
        hashing.set()
        overlapped["kick seen by the hash"] = kicked.wait(10)
        real_hash(hasher, fd, size, start=start)

    def start(fd: int, offset: int = 0, length: int = 0) -> bool:
        kicked_inodes.append(inode(fd))
        kicked.set()
        overlapped["hash seen by the kick"] = hashing.wait(10)
        return real_start(fd, offset, length)

    monkeypatch.setattr(bodyfile, "_hash_into", hash_into)
    monkeypatch.setattr(writeback, "start", start)
    data = os.urandom(BIG)
    body = nginx_wrote(body_dir(tmp_path), data)
    body_inode = body.stat().st_ino

    resp = await reg.client.post(f"/v2/r/blobs/uploads/?digest={sha256(data)}", headers={HEADER: str(body)})

    assert resp.status == 201, await resp.text()
    assert overlapped == {"kick seen by the hash": True, "hash seen by the kick": True}
    assert kicked_inodes == [body_inode]
    stored = blob_file(tmp_path, sha256(data))
    assert stored.read_bytes() == data and stored.stat().st_ino == body_inode


async def test_appended_chunks_are_written_back_once_copied_and_their_body_files_never(
    reg: Registry,
    tmp_path: Path,
    kicks: list[tuple[int, int, int]],
) -> None:
    first, second, small = os.urandom(BIG), os.urandom(BIG), os.urandom(1000)
    location = (await reg.client.post("/v2/r/blobs/uploads/")).headers["Location"]
    bodies = [nginx_wrote(body_dir(tmp_path), part) for part in (first, second, small)]
    inodes = [b.stat().st_ino for b in bodies]

    for body in bodies:
        resp = await reg.client.patch(location, headers={HEADER: str(body)})
        assert resp.status == 202, await resp.text()
    done = await reg.client.put(f"{location}?digest={sha256(first + second + small)}")

    assert done.status == 201, await done.text()
    # The first body became the upload (the whole file); the second chunk's range of it once copied; the
    # small chunk is left to the commit's fsync; the copied-from body files were never written back.
    assert kicks == [(inodes[0], 0, 0), (inodes[0], len(first), len(second))]
    stored = blob_file(tmp_path, sha256(first + second + small))
    assert stored.read_bytes() == first + second + small and stored.stat().st_ino == inodes[0]


async def test_a_body_below_the_threshold_is_left_to_the_commit_s_fsync(
    reg: Registry,
    tmp_path: Path,
    kicks: list[tuple[int, int, int]],
) -> None:
    data = os.urandom(writeback.MIN_BYTES - 1)
    body = nginx_wrote(body_dir(tmp_path), data)
    resp = await reg.client.post(f"/v2/r/blobs/uploads/?digest={sha256(data)}", headers={HEADER: str(body)})
    assert resp.status == 201, await resp.text()
    assert kicks == []


def test_the_streamed_writer_starts_writeback_every_min_bytes(
    tmp_path: Path, kicks: list[tuple[int, int, int]]
) -> None:
    step = writeback.MIN_BYTES
    writer = filesystem.FileWriter(tmp_path / "data")
    ino = (tmp_path / "data").stat().st_ino
    try:
        for _ in range(9):  # 2.25 x MIN_BYTES in quarter pieces
            writer.write(b"a" * (step // 4))
        assert kicks == [(ino, 0, step), (ino, step, step)]
        writer.truncate(step // 2)  # a rolled-back chunk: those bytes are gone, the next range starts here
        for _ in range(4):
            writer.write(b"b" * (step // 4))
    finally:
        writer.close()
    assert kicks[2:] == [(ino, step // 2, step)]
    assert (tmp_path / "data").read_bytes() == b"a" * (step // 2) + b"b" * step


async def test_a_kick_the_kernel_refuses_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writeback, "start", lambda *args: False)
    st = store.Store(filesystem.FilesystemDriver(tmp_path / "data"))
    upload = st.start_upload("r")
    parts = [os.urandom(BIG), os.urandom(BIG)]
    for part in parts:
        chunk = bodyfile.open_checked(nginx_wrote(body_dir(tmp_path), part))
        await st.write_chunk("r", upload, body=chunk)

    size = await st.finish_upload("r", upload, dgst=digest.parse(sha256(b"".join(parts))))

    assert size == 2 * BIG
    assert blob_file(tmp_path, sha256(b"".join(parts))).read_bytes() == b"".join(parts)
