"""Upload bodies nginx already wrote to a file (`serve --body-file-dir`, issue 15), over the real app.

The test plays nginx: it writes each body to a file named like nginx's temp files in the body directory
on the data volume and sends only `X-Dockyard-Body-File` naming it (no body on the socket), as the
operator's nginx does. Covers:
- a monolithic push and the first PATCH adopt the file by rename (the blob's inode is the body file's:
  written once, by nginx); later PATCHes are appended; the final PUT may carry an empty body file;
- digests are verified: a wrong digest stores nothing; Content-Range must match the file's size;
- a full disk while appending rolls the upload back to its previous size (507) and the next chunk works;
  a chunk cancelled while its worker adopts the file is rolled back once the worker is done, and a PUT
  cancelled so commits nothing (its retry commits the blob);
- a PATCH or PUT with a body file is one worker-thread call (check, size, hash, adopt, verify, commit);
  one to an expired session answers unknown and purges it (the check runs under the session's lock);
- the memory driver (no local files) gets the file's bytes streamed;
- nginx may name the body directory by another path to the same directory (its own mount of it);
- a header naming anything but an nginx temp file directly inside the body directory (another path, a
  `..` escape, a symlink, a directory, a missing file) is refused with BLOB_UPLOAD_INVALID, and no file
  is touched; without `body_file_dir` the header is ignored and the socket's body is the body;
- the same body file header next to a socket body is refused;
- body files a killed nginx left behind (nginx temp names only, older than the upload expiry) are removed
  by the registry's upload sweep; fresh ones, symlinks and other files stay.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import hashlib
import itertools
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from dockyard_registry import bodyfile, digest, paths, store
from dockyard_registry.storage import filesystem, memory
from tests.registry.conftest import ClientFactory, Clock, Registry, sha256

HEADER = bodyfile.HEADER
_names = itertools.count(1)


def body_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data" / bodyfile.DIR_NAME
    d.mkdir(parents=True, exist_ok=True)
    return d


def nginx_wrote(directory: Path, data: bytes) -> Path:
    """A body file as nginx leaves it: a zero-padded counter name in the body directory."""
    path = directory / f"{next(_names):010d}"
    path.write_bytes(data)
    return path


def blob_file(tmp_path: Path, dgst: str) -> Path:
    return tmp_path / "data" / paths.blob_data(digest.parse(dgst))


def cancel_then_release(task: asyncio.Task[Any], release: threading.Event) -> None:
    """Cancel a request whose worker thread waits on `release`, and release the worker only once the
    cancellation reached the request (its wakeup is already queued, so it runs first). Released at once,
    the worker could pass its `abandoned` check before the request set it and commit what it adopted: a
    legitimate outcome of a client leaving at that moment, but not the one the tests below are about."""
    task.cancel()
    asyncio.get_running_loop().call_soon(release.set)


async def error_code(resp: Any) -> str:
    code: str = json.loads(await resp.text())["errors"][0]["code"]
    return code


@pytest.fixture
async def reg(make_client: ClientFactory, tmp_path: Path) -> Registry:
    return await make_client(body_file_dir=body_dir(tmp_path))


async def test_a_monolithic_push_adopts_nginx_s_file_by_rename(reg: Registry, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)
    body = nginx_wrote(body_dir(tmp_path), data)
    inode = body.stat().st_ino
    dgst = sha256(data)

    resp = await reg.client.post(f"/v2/r/blobs/uploads/?digest={dgst}", headers={HEADER: str(body)})

    assert resp.status == 201, await resp.text()
    stored = blob_file(tmp_path, dgst)
    assert stored.read_bytes() == data
    assert stored.stat().st_ino == inode  # the very file nginx wrote: no copy
    assert not body.exists()
    got = await reg.client.get(f"/v2/r/blobs/{dgst}")
    assert got.status == 200 and await got.read() == data


async def test_chunked_patches_rename_then_append_and_an_empty_put_finishes(
    reg: Registry, tmp_path: Path
) -> None:
    parts = [os.urandom(1_000_000), os.urandom(777_777), os.urandom(5)]
    whole = b"".join(parts)
    start = await reg.client.post("/v2/r/blobs/uploads/")
    location = start.headers["Location"]
    offset = 0
    kept: list[Path] = []
    for part in parts:
        body = nginx_wrote(body_dir(tmp_path), part)
        kept.append(body)
        resp = await reg.client.patch(
            location,
            headers={HEADER: str(body), "Content-Range": f"{offset}-{offset + len(part) - 1}"},
        )
        assert resp.status == 202, await resp.text()
        offset += len(part)
        assert resp.headers["Range"] == f"0-{offset - 1}"
    empty = nginx_wrote(body_dir(tmp_path), b"")
    done = await reg.client.put(f"{location}?digest={sha256(whole)}", headers={HEADER: str(empty)})

    assert done.status == 201, await done.text()
    assert blob_file(tmp_path, sha256(whole)).read_bytes() == whole
    # The first chunk was renamed away; the appended ones stay for nginx to remove when their request ends.
    assert [p.exists() for p in kept] == [False, True, True]


async def test_nginx_may_name_the_body_directory_by_another_path_to_it(reg: Registry, tmp_path: Path) -> None:
    """nginx's mount of the directory may have another path than the registry's (a local pod runner)."""
    alias = tmp_path / "nginx-view"
    alias.symlink_to(body_dir(tmp_path))
    data = os.urandom(10_000)
    body = nginx_wrote(body_dir(tmp_path), data)

    resp = await reg.client.post(
        f"/v2/r/blobs/uploads/?digest={sha256(data)}", headers={HEADER: str(alias / body.name)}
    )

    assert resp.status == 201, await resp.text()
    assert blob_file(tmp_path, sha256(data)).read_bytes() == data


async def test_a_wrong_digest_stores_nothing(reg: Registry, tmp_path: Path) -> None:
    data = b"the real bytes" * 1000
    wrong = sha256(b"other bytes")
    body = nginx_wrote(body_dir(tmp_path), data)

    resp = await reg.client.post(f"/v2/r/blobs/uploads/?digest={wrong}", headers={HEADER: str(body)})

    assert resp.status == 400 and await error_code(resp) == "DIGEST_INVALID"
    assert not blob_file(tmp_path, wrong).exists() and not blob_file(tmp_path, sha256(data)).exists()
    assert list((tmp_path / "data" / paths.UPLOADS).iterdir()) == []


async def test_content_range_must_match_the_body_file(reg: Registry, tmp_path: Path) -> None:
    start = await reg.client.post("/v2/r/blobs/uploads/")
    body = nginx_wrote(body_dir(tmp_path), b"12345")

    resp = await reg.client.patch(
        start.headers["Location"], headers={HEADER: str(body), "Content-Range": "0-9"}
    )

    assert resp.status == 416 and await error_code(resp) == "RANGE_INVALID"
    assert body.read_bytes() == b"12345"
    status = await reg.client.get(start.headers["Location"])
    assert status.headers["Range"] == "0-0"  # nothing was added


async def test_a_full_disk_while_appending_rolls_the_upload_back(
    reg: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = os.urandom(100_000), os.urandom(200_000)
    start = await reg.client.post("/v2/r/blobs/uploads/")
    location = start.headers["Location"]
    ok = await reg.client.patch(location, headers={HEADER: str(nginx_wrote(body_dir(tmp_path), first))})
    assert ok.status == 202
    real_copy = os.copy_file_range

    def full(
        src: int, dst: int, count: int, offset_src: int | None = None, offset_dst: int | None = None
    ) -> int:
        real_copy(
            src, dst, min(count, 4096), offset_src, offset_dst
        )  # some bytes land, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "copy_file_range", full)
    failed = await reg.client.patch(location, headers={HEADER: str(nginx_wrote(body_dir(tmp_path), second))})
    monkeypatch.setattr(os, "copy_file_range", real_copy)

    assert failed.status == 507
    status = await reg.client.get(location)
    assert status.headers["Range"] == f"0-{len(first) - 1}"
    again = await reg.client.patch(location, headers={HEADER: str(nginx_wrote(body_dir(tmp_path), second))})
    assert again.status == 202
    done = await reg.client.put(f"{location}?digest={sha256(first + second)}")
    assert done.status == 201, await done.text()


async def test_without_local_files_the_body_file_is_streamed(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    reg = await make_client(driver=memory.MemoryDriver(), body_file_dir=body_dir(tmp_path))
    data = os.urandom(2 * 1024 * 1024 + 1)
    body = nginx_wrote(body_dir(tmp_path), data)

    resp = await reg.client.post(f"/v2/r/blobs/uploads/?digest={sha256(data)}", headers={HEADER: str(body)})

    assert resp.status == 201, await resp.text()
    got = await reg.client.get(f"/v2/r/blobs/{sha256(data)}")
    assert await got.read() == data
    assert body.exists()  # read, not adopted: nginx removes it


def forged_paths(tmp_path: Path) -> dict[str, Path]:
    directory = body_dir(tmp_path)
    secret = tmp_path / "secret"
    secret.write_bytes(b"not yours")
    (directory / "0000000999").symlink_to(secret)
    (directory / "0000000998").mkdir()
    (directory / "notanumber").write_bytes(b"x")
    return {
        "outside the directory": secret,
        "escape with ..": directory / ".." / "secret",
        "a symlink": directory / "0000000999",
        "a directory": directory / "0000000998",
        "not nginx's name": directory / "notanumber",
        "missing": directory / "0000000997",
        "relative": Path("0000000001"),
    }


@pytest.mark.parametrize(
    "case",
    ["outside the directory", "escape with ..", "a symlink", "a directory", "not nginx's name", "missing",
     "relative"],
)  # fmt: skip
async def test_a_header_naming_anything_but_an_nginx_body_file_is_refused(
    reg: Registry, tmp_path: Path, case: str
) -> None:
    named = forged_paths(tmp_path)[case]
    secret = tmp_path / "secret"
    dgst = sha256(b"not yours")

    monolithic = await reg.client.post(f"/v2/r/blobs/uploads/?digest={dgst}", headers={HEADER: str(named)})
    start = await reg.client.post("/v2/r/blobs/uploads/")
    patch = await reg.client.patch(start.headers["Location"], headers={HEADER: str(named)})

    for resp in (monolithic, patch):
        assert resp.status == 400 and await error_code(resp) == "BLOB_UPLOAD_INVALID", await resp.text()
    assert secret.read_bytes() == b"not yours"
    assert not blob_file(tmp_path, dgst).exists()
    status = await reg.client.get(start.headers["Location"])
    assert status.headers["Range"] == "0-0"


async def test_a_body_file_next_to_a_socket_body_is_refused(reg: Registry, tmp_path: Path) -> None:
    body = nginx_wrote(body_dir(tmp_path), b"file bytes")
    resp = await reg.client.post(
        f"/v2/r/blobs/uploads/?digest={sha256(b'socket bytes')}",
        data=b"socket bytes",
        headers={HEADER: str(body)},
    )
    assert resp.status == 400 and await error_code(resp) == "BLOB_UPLOAD_INVALID"
    assert body.read_bytes() == b"file bytes"


async def test_without_body_file_dir_the_header_is_ignored(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    reg = await make_client()
    body = nginx_wrote(body_dir(tmp_path), b"a file the client names")
    data = b"what the client sent"

    resp = await reg.client.post(
        f"/v2/r/blobs/uploads/?digest={sha256(data)}", data=data, headers={HEADER: str(body)}
    )

    assert resp.status == 201, await resp.text()
    assert blob_file(tmp_path, sha256(data)).read_bytes() == data
    assert body.read_bytes() == b"a file the client names"
    assert hashlib.sha256(data).hexdigest() in str(blob_file(tmp_path, sha256(data)))


def test_the_sweep_removes_only_old_nginx_body_files(tmp_path: Path) -> None:
    directory = body_dir(tmp_path)
    old, fresh = nginx_wrote(directory, b"left by a killed nginx"), nginx_wrote(directory, b"in flight")
    other = directory / "keep-me"
    other.write_bytes(b"not nginx's")
    linked = directory / "0000000555"
    linked.symlink_to(other)
    week_ago = 1_000_000.0
    for path in (old, other):
        os.utime(path, (week_ago, week_ago))

    removed = bodyfile.sweep(directory, older_than=week_ago + 1)

    assert removed == 1 and not old.exists()
    assert fresh.exists() and other.exists() and linked.is_symlink()
    assert bodyfile.sweep(tmp_path / "absent", older_than=week_ago) == 0


async def test_the_registry_sweeps_body_files_left_behind(make_client: ClientFactory, tmp_path: Path) -> None:
    directory = body_dir(tmp_path)
    left = nginx_wrote(directory, b"left behind")
    os.utime(left, (1_000_000.0, 1_000_000.0))
    fresh = nginx_wrote(directory, b"in flight")
    reg = await make_client(body_file_dir=directory, upload_sweep_seconds=0.01)

    for _ in range(1000):  # until the first sweeps ran, whatever this machine's speed
        if not left.exists():
            break
        await asyncio.sleep(0.01)

    assert not left.exists() and fresh.exists()
    assert (await reg.client.get("/v2/")).status == 200


async def test_a_cancelled_chunk_is_rolled_back_once_its_worker_is_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client (or nginx) goes away while the worker adopts the file: the bytes may be in place already,
    so the request waits for the worker, then truncates the upload back, and a retry of the chunk works."""
    st = store.Store(filesystem.FilesystemDriver(tmp_path / "data"))
    upload = st.start_upload("r")
    placed, release = threading.Event(), threading.Event()
    real = bodyfile.adopt

    def slow(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)  # the bytes are in the upload now
        placed.set()
        release.wait(30)
        return result

    monkeypatch.setattr(bodyfile, "adopt", slow)
    data = os.urandom(200_000)
    chunk = bodyfile.open_checked(nginx_wrote(body_dir(tmp_path), data))
    task = asyncio.create_task(st.write_chunk("r", upload, body=chunk))
    assert await asyncio.to_thread(placed.wait, 30)
    cancel_then_release(task, release)
    with pytest.raises(asyncio.CancelledError):
        await task
    monkeypatch.setattr(bodyfile, "adopt", real)

    assert st.upload_size("r", upload) == 0
    again = bodyfile.open_checked(nginx_wrote(body_dir(tmp_path), data))
    assert await st.write_chunk("r", upload, body=again) == len(data)
    assert await st.finish_upload("r", upload, dgst=digest.parse(sha256(data))) == len(data)


class _CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    """The event loop's default executor (`asyncio.to_thread`), counting the calls handed to it."""

    def __init__(self) -> None:
        super().__init__(max_workers=4)
        self.calls = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return super().submit(fn, *args, **kwargs)


async def test_a_body_file_patch_or_put_is_one_worker_thread_call(tmp_path: Path) -> None:
    """Issue 15: checking the session, its size, hashing and adopting the file and (PUT) verifying and
    committing are one hand-off to a worker thread per request, not one per step."""
    st = store.Store(filesystem.FilesystemDriver(tmp_path / "data"))
    executor = _CountingExecutor()
    asyncio.get_running_loop().set_default_executor(executor)
    first, second = os.urandom(100_000), os.urandom(70_000)

    upload = st.start_upload("r")
    patched = await st.write_chunk(
        "r", upload, body=bodyfile.open_checked(nginx_wrote(body_dir(tmp_path), first))
    )
    assert (patched, executor.calls) == (len(first), 1)
    finished = await st.finish_upload(
        "r",
        upload,
        dgst=digest.parse(sha256(first + second)),
        body=bodyfile.open_checked(nginx_wrote(body_dir(tmp_path), second)),
        start=len(first),
        length=len(second),
    )
    assert (finished, executor.calls) == (len(first + second), 2)
    monolithic = st.start_upload("r")
    await st.finish_upload(
        "r", monolithic, dgst=digest.parse(sha256(second)), body=bodyfile.open_checked(
            nginx_wrote(body_dir(tmp_path), second)
        )
    )  # fmt: skip
    assert executor.calls == 3
    assert st.blob_size("r", digest.parse(sha256(first + second))) == len(first + second)
    assert st.blob_size("r", digest.parse(sha256(second))) == len(second)


async def test_a_put_cancelled_while_its_worker_adopts_the_file_commits_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client goes away while the worker adopts the last chunk: the worker rolls the upload back
    before the commit (no blob, the earlier chunk kept), and the retried PUT commits the blob."""
    st = store.Store(filesystem.FilesystemDriver(tmp_path / "data"))
    first, last = os.urandom(150_000), os.urandom(60_000)
    dgst = digest.parse(sha256(first + last))
    upload = st.start_upload("r")
    await st.write_chunk("r", upload, body=bodyfile.open_checked(nginx_wrote(body_dir(tmp_path), first)))
    placed, release = threading.Event(), threading.Event()
    real = bodyfile.adopt

    def slow(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)  # the bytes are in the upload now
        placed.set()
        release.wait(30)
        return result

    monkeypatch.setattr(bodyfile, "adopt", slow)
    put = bodyfile.open_checked(nginx_wrote(body_dir(tmp_path), last))
    task = asyncio.create_task(st.finish_upload("r", upload, dgst=dgst, body=put))
    assert await asyncio.to_thread(placed.wait, 30)
    cancel_then_release(task, release)
    with pytest.raises(asyncio.CancelledError):
        await task
    monkeypatch.setattr(bodyfile, "adopt", real)

    with pytest.raises(store.BlobUnknownError):
        st.blob_size("r", dgst)
    assert st.upload_size("r", upload) == len(first)
    again = bodyfile.open_checked(nginx_wrote(body_dir(tmp_path), last))
    assert await st.finish_upload("r", upload, dgst=dgst, body=again) == len(first + last)
    assert blob_file(tmp_path, str(dgst)).read_bytes() == first + last


async def test_a_body_file_put_to_an_expired_session_answers_unknown_and_purges_it(tmp_path: Path) -> None:
    clock = Clock()
    st = store.Store(filesystem.FilesystemDriver(tmp_path / "data"), clock=clock, upload_expiry=3600)
    data = os.urandom(10_000)
    upload = st.start_upload("r")
    clock.advance(3601)

    with pytest.raises(store.UploadUnknownError):
        await st.finish_upload(
            "r", upload, dgst=digest.parse(sha256(data)),
            body=bodyfile.open_checked(nginx_wrote(body_dir(tmp_path), data)),
        )  # fmt: skip

    assert not (tmp_path / "data" / paths.upload_dir(upload)).exists()


async def test_without_an_in_kernel_copy_a_later_chunk_is_streamed_from_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """copy_file_range refused (EXDEV: the body directory on another file system): the chunk is streamed
    from the body file instead, hashed once, and the blob is the same."""
    st = store.Store(filesystem.FilesystemDriver(tmp_path / "data"))
    first, second, last = os.urandom(100_000), os.urandom(80_000), os.urandom(5_000)
    upload = st.start_upload("r")
    await st.write_chunk("r", upload, body=bodyfile.open_checked(nginx_wrote(body_dir(tmp_path), first)))

    def refused(*args: Any) -> int:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(os, "copy_file_range", refused)
    chunk = nginx_wrote(body_dir(tmp_path), second)
    size = await st.write_chunk("r", upload, body=bodyfile.open_checked(chunk), start=len(first))
    final = nginx_wrote(body_dir(tmp_path), last)
    dgst = digest.parse(sha256(first + second + last))
    done = await st.finish_upload("r", upload, dgst=dgst, body=bodyfile.open_checked(final), start=size)

    assert (size, done) == (len(first + second), len(first + second + last))
    assert chunk.exists() and final.exists()  # read, not adopted: nginx removes them
    assert blob_file(tmp_path, str(dgst)).read_bytes() == first + second + last
