"""Body files hashed while nginx writes them (bodyahead.py, issue 15), over the real app and inotify.

The test plays nginx as test_body_files.py does, but writes each body file into the watched directory
before sending the request, and waits until the registry's follower has hashed it ahead. Covers:
- a monolithic push whose body was hashed ahead is stored with the right digest, and the registry hashes
  only the rest of the file (each byte hashed once); a wrong digest still stores nothing;
- a chunk that continues an upload, announced by nginx's auth subrequest (Content-Range not at 0), is not
  hashed ahead; once its request arrived, the next new file is;
- a body hashed ahead that turns out to continue an upload (no announcement) is hashed from the upload's
  own state instead: the digest is still right;
- the follower alone: a file it never saw gives nothing to take, and it stops cleanly.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

import pytest

from dockyard_registry import bodyahead, bodyfile
from tests.registry.conftest import ClientFactory, Registry, sha256
from tests.registry.test_body_files import blob_file, body_dir, error_code, nginx_wrote

HEADER = bodyfile.HEADER
BIG = 2 * bodyahead.WINDOW + 12345  # two full windows to hash ahead, and a tail left for the request


@pytest.fixture
async def reg(make_client: ClientFactory, tmp_path: Path) -> Registry:
    return await make_client(body_file_dir=body_dir(tmp_path), body_ahead=True)


def follower(reg: Registry) -> bodyahead.Follower:
    found = reg.settings.body_ahead
    assert found is not None
    return found


async def hashed_ahead(reg: Registry, body: Path, *, wanted: int) -> None:
    """Wait until the follower hashed `wanted` bytes of `body` (it works in its own thread)."""
    for _ in range(1000):
        if follower(reg).progress().get(body.name) == wanted:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"follower never reached {wanted}: {follower(reg).progress()}")


@pytest.fixture
def hash_starts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The offsets from which the request's own hashing of a body file started."""
    starts: list[int] = []
    real = bodyfile._hash_into

    def spy(hasher: bodyfile.digest.Hasher, fd: int, size: int, *, start: int = 0) -> None:
        starts.append(start)
        real(hasher, fd, size, start=start)

    monkeypatch.setattr(bodyfile, "_hash_into", spy)
    return starts


async def test_a_push_hashed_ahead_hashes_only_the_rest(
    reg: Registry, tmp_path: Path, hash_starts: list[int]
) -> None:
    data = os.urandom(BIG)
    body = nginx_wrote(body_dir(tmp_path), data)
    await hashed_ahead(reg, body, wanted=2 * bodyahead.WINDOW)

    resp = await reg.client.post(f"/v2/r/blobs/uploads/?digest={sha256(data)}", headers={HEADER: str(body)})

    assert resp.status == 201, await resp.text()
    assert blob_file(tmp_path, sha256(data)).read_bytes() == data
    assert hash_starts == [2 * bodyahead.WINDOW]
    assert follower(reg).hashed_ahead == 2 * bodyahead.WINDOW
    assert follower(reg).progress() == {}


async def test_a_wrong_digest_after_hashing_ahead_stores_nothing(reg: Registry, tmp_path: Path) -> None:
    data = os.urandom(BIG)
    body = nginx_wrote(body_dir(tmp_path), data)
    await hashed_ahead(reg, body, wanted=2 * bodyahead.WINDOW)
    wrong = sha256(data + b"x")

    resp = await reg.client.post(f"/v2/r/blobs/uploads/?digest={wrong}", headers={HEADER: str(body)})

    assert resp.status == 400 and await error_code(resp) == "DIGEST_INVALID"
    assert not blob_file(tmp_path, wrong).exists()
    assert not blob_file(tmp_path, sha256(data)).exists()


async def test_an_announced_continuation_is_not_hashed_ahead(
    reg: Registry, tmp_path: Path, hash_starts: list[int]
) -> None:
    first, second = os.urandom(BIG), os.urandom(BIG)
    start = await reg.client.post("/v2/r/blobs/uploads/")
    location = start.headers["Location"]
    one = nginx_wrote(body_dir(tmp_path), first)
    await hashed_ahead(reg, one, wanted=2 * bodyahead.WINDOW)
    resp = await reg.client.patch(location, headers={HEADER: str(one), "Content-Range": f"0-{BIG - 1}"})
    assert resp.status == 202, await resp.text()
    # nginx's auth subrequest for the next chunk, before nginx writes its body.
    rng = f"{BIG}-{2 * BIG - 1}"
    auth = await reg.client.get(
        "/auth", headers={"X-Original-URI": location, "X-Original-Method": "PATCH", "Content-Range": rng}
    )
    assert auth.status == 200

    two = nginx_wrote(body_dir(tmp_path), second)
    # A later file shows the follower has seen the one before it (inotify reports in order).
    probe = nginx_wrote(body_dir(tmp_path), b"")
    for _ in range(1000):
        if probe.name in follower(reg).progress() or two.name not in follower(reg).progress():
            break
        await asyncio.sleep(0.01)
    assert two.name not in follower(reg).progress()

    resp = await reg.client.patch(location, headers={HEADER: str(two), "Content-Range": rng})
    assert resp.status == 202, await resp.text()
    done = await reg.client.put(f"{location}?digest={sha256(first + second)}")

    assert done.status == 201, await done.text()
    assert blob_file(tmp_path, sha256(first + second)).read_bytes() == first + second
    assert hash_starts == [2 * bodyahead.WINDOW, 0]  # the second chunk hashed whole, once
    # Its request arrived: the next new file is hashed ahead again.
    three = nginx_wrote(body_dir(tmp_path), os.urandom(BIG))
    await hashed_ahead(reg, three, wanted=2 * bodyahead.WINDOW)


async def test_a_continuation_hashed_ahead_unannounced_still_gets_the_right_digest(
    reg: Registry, tmp_path: Path, hash_starts: list[int]
) -> None:
    first, second = os.urandom(1000), os.urandom(BIG)
    start = await reg.client.post("/v2/r/blobs/uploads/")
    location = start.headers["Location"]
    resp = await reg.client.patch(
        location, headers={HEADER: str(nginx_wrote(body_dir(tmp_path), first)), "Content-Range": "0-999"}
    )
    assert resp.status == 202, await resp.text()
    two = nginx_wrote(body_dir(tmp_path), second)
    await hashed_ahead(reg, two, wanted=2 * bodyahead.WINDOW)  # from the empty hash: useless here

    resp = await reg.client.patch(location, headers={HEADER: str(two), "Content-Range": f"1000-{999 + BIG}"})
    assert resp.status == 202, await resp.text()
    done = await reg.client.put(f"{location}?digest={sha256(first + second)}")

    assert done.status == 201, await done.text()
    assert blob_file(tmp_path, sha256(first + second)).read_bytes() == first + second
    assert hash_starts == [0, 0]


def test_the_follower_gives_nothing_for_a_file_it_never_followed(tmp_path: Path) -> None:
    follower = bodyahead.Follower(tmp_path)
    unseen = tmp_path / "0000000001"
    unseen.write_bytes(os.urandom(BIG))  # written before the follower started
    assert follower.start()
    try:
        fd = os.open(unseen, os.O_RDONLY)
        try:
            assert follower.take(fd) is None
        finally:
            os.close(fd)
    finally:
        follower.stop()
    follower.stop()  # idempotent


def test_the_follower_hashes_a_file_as_it_grows(tmp_path: Path) -> None:
    follower = bodyahead.Follower(tmp_path)
    assert follower.start()
    data = os.urandom(BIG)
    path = tmp_path / "0000000007"
    try:
        with path.open("wb", buffering=0) as out:
            for at in range(0, BIG, 1 << 20):
                out.write(data[at : at + (1 << 20)])
        fd = os.open(path, os.O_RDONLY)
        try:
            for _ in range(1000):
                if follower.progress().get(path.name) == 2 * bodyahead.WINDOW:
                    break
                time.sleep(0.01)
            ahead = follower.take(fd)
        finally:
            os.close(fd)
    finally:
        follower.stop()
    assert ahead is not None and ahead.offset == 2 * bodyahead.WINDOW
    ahead.hasher.update(data[ahead.offset :])
    assert ahead.hasher.hexdigest() == hashlib.sha256(data).hexdigest()
