"""Upload sessions are bounded state, over HTTP against the real app on both storage drivers.

Covers: a session untouched for longer than the expiry answers 404 BLOB_UPLOAD_UNKNOWN to status, PATCH, PUT
and DELETE and is gone from storage; a PATCH keeps a session alive past its start time (one right after the
start rewrites no session record, a later one does); the sweep purges
abandoned sessions with their running hashes (which therefore do not grow with abandoned uploads), is
bounded per run (examining a share of the sessions each time, so fresh ones cannot starve it), never purges
a session receiving bytes, and runs by itself on the app's interval; finishing or cancelling drops the
running hash too; sessions written by older versions (no owner) count for nobody's cap and expire by age;
the per-user cap answers one more POST (monolithic too) with 429 TOOMANYREQUESTS and stores nothing, counts
per user, frees a slot on DELETE and ignores expired sessions.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dockyard_registry import auth, paths, store
from dockyard_registry.storage import base
from tests.registry import test_auth, test_gc_fsck
from tests.registry.conftest import ClientFactory, Clock, Registry, sha256

HOUR = 3600.0
EXPIRY = 168 * HOUR


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def reg(make_client: ClientFactory, driver: base.Driver, clock: Clock) -> Registry:
    return await make_client(driver=driver, clock=clock)


async def code(resp: Any) -> str:
    body = await resp.json()
    return str(body["errors"][0]["code"])


async def open_session(reg: Registry, *, data: bytes = b"partial", headers: Any = None) -> str:
    post = await reg.client.post("/v2/r/blobs/uploads/", headers=headers)
    assert post.status == 202, await post.text()
    location = post.headers["Location"]
    if data:
        patch = await reg.client.patch(location, data=data, headers=headers)
        assert patch.status == 202, await patch.text()
    return str(location)


def sessions(reg: Registry) -> list[str]:
    return reg.store.driver.list(paths.UPLOADS)


async def test_a_session_untouched_past_the_expiry_answers_404_blob_upload_unknown(
    reg: Registry, clock: Clock
) -> None:
    location = await open_session(reg)
    clock.advance(EXPIRY + 1)
    status = await reg.client.get(location)
    assert (status.status, await code(status)) == (404, "BLOB_UPLOAD_UNKNOWN")
    assert sessions(reg) == [], "the expired session's data is gone"
    assert reg.store._hash_states == {}
    for method in ("PATCH", "PUT", "DELETE"):
        url = f"{location}?digest={sha256(b'partial')}" if method == "PUT" else location
        resp = await reg.client.request(method, url, data=b"")
        assert (resp.status, await code(resp)) == (404, "BLOB_UPLOAD_UNKNOWN"), method


async def test_each_method_on_an_expired_session_answers_404(reg: Registry, clock: Clock) -> None:
    for method in ("PATCH", "PUT", "DELETE"):
        location = await open_session(reg)
        clock.advance(EXPIRY + 1)
        url = f"{location}?digest={sha256(b'partial more')}" if method == "PUT" else location
        resp = await reg.client.request(method, url, data=b" more")
        assert (resp.status, await code(resp)) == (404, "BLOB_UPLOAD_UNKNOWN"), method
        assert sessions(reg) == []


async def test_writing_to_a_session_keeps_it_alive_past_its_start_time(reg: Registry, clock: Clock) -> None:
    location = await open_session(reg, data=b"")
    clock.advance(EXPIRY - HOUR)
    assert (await reg.client.patch(location, data=b"late ")).status == 202
    clock.advance(EXPIRY - HOUR)  # twice the expiry since the POST, not since the PATCH
    assert await reg.store.purge_expired_uploads() == []
    assert (await reg.client.get(location)).status == 204
    put = await reg.client.put(f"{location}?digest={sha256(b'late but whole')}", data=b"but whole")
    assert put.status == 201


async def test_a_chunk_right_after_the_start_rewrites_no_session_record_and_a_later_one_does(
    reg: Registry, clock: Clock
) -> None:
    location = await open_session(reg, data=b"")
    upload_id = location.rsplit("/", 1)[1]

    def recorded() -> dict[str, Any]:
        info: dict[str, Any] = json.loads(reg.store.driver.get(paths.upload_info(upload_id)))
        return info

    started = recorded()
    clock.advance(EXPIRY * store.TOUCH_EVERY / 2)  # as every client sends its PATCH: right after the POST
    assert (await reg.client.patch(location, data=b"soon ")).status == 202
    assert recorded() == started, "a record younger than TOUCH_EVERY of the expiry is not rewritten"
    clock.advance(EXPIRY * store.TOUCH_EVERY)
    assert (await reg.client.patch(location, data=b"later ")).status == 202
    assert recorded()["touched"] == clock()
    clock.advance(EXPIRY - 1)  # the expiry since the start has long passed, not since the last chunk
    assert (await reg.client.get(location)).status == 204


async def test_the_sweep_purges_abandoned_sessions_and_their_running_hashes(
    reg: Registry, clock: Clock
) -> None:
    for i in range(20):
        await open_session(reg, data=f"abandoned {i}".encode())
    assert len(reg.store._hash_states) == 20
    clock.advance(EXPIRY + 1)
    fresh = (await open_session(reg)).rsplit("/", 1)[1]
    purged = await reg.store.purge_expired_uploads()
    assert len(purged) == 20
    assert sessions(reg) == [fresh]
    assert set(reg.store._hash_states) == {fresh}, "running hashes do not outlive their sessions"


async def test_finishing_or_cancelling_drops_the_running_hash(reg: Registry) -> None:
    finished = await open_session(reg, data=b"whole")
    assert (await reg.client.put(f"{finished}?digest={sha256(b'whole')}")).status == 201
    cancelled = await open_session(reg)
    assert (await reg.client.delete(cancelled)).status == 204
    assert reg.store._hash_states == {}
    assert sessions(reg) == []


async def test_one_sweep_purges_at_most_its_limit(reg: Registry, clock: Clock) -> None:
    for _ in range(8):
        await open_session(reg)
    clock.advance(EXPIRY + 1)
    assert len(await reg.store.purge_expired_uploads(limit=5)) == 5
    assert len(sessions(reg)) == 3
    assert len(await reg.store.purge_expired_uploads(limit=5)) == 3
    assert sessions(reg) == []


async def test_fresh_sessions_do_not_keep_a_bounded_sweep_from_reaching_expired_ones(
    reg: Registry, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    expired = (await open_session(reg)).rsplit("/", 1)[1]
    clock.advance(EXPIRY + 1)
    fresh = [(await open_session(reg)).rsplit("/", 1)[1] for _ in range(5)]
    examined: set[str] = set()
    real = reg.store._expired

    def spy(upload_id: str, **kw: Any) -> bool:
        examined.add(upload_id)
        return real(upload_id, **kw)

    monkeypatch.setattr(reg.store, "_expired", spy)
    purged: list[str] = []
    for _ in range(3):  # 6 sessions, 2 examined a sweep: three sweeps see each once
        examined.clear()
        purged += await reg.store.purge_expired_uploads(limit=2)
        assert len(examined) == 2, "one sweep examines at most its limit"
    assert purged == [expired]
    assert sorted(sessions(reg)) == sorted(fresh)


async def test_the_sweep_never_purges_a_session_receiving_bytes(reg: Registry, clock: Clock) -> None:
    location = await open_session(reg, data=b"")
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"first half, "
        await release.wait()
        yield b"second half"

    patch = asyncio.create_task(reg.client.patch(location, data=slow_body()))
    for _ in range(2400):  # bounded wait for the handler to hold the session, never a timing assertion
        if reg.store.uploads_in_flight():
            break
        await asyncio.sleep(0.025)
    assert reg.store.uploads_in_flight() == 1
    clock.advance(EXPIRY + 1)
    assert await reg.store.purge_expired_uploads() == []
    release.set()
    resp = await patch
    assert resp.status == 202
    assert resp.headers["Range"] == "0-22"
    assert len(sessions(reg)) == 1


async def test_the_registry_sweeps_expired_sessions_by_itself(
    make_client: ClientFactory, driver: base.Driver, clock: Clock
) -> None:
    reg = await make_client(driver=driver, clock=clock, upload_sweep_seconds=0.01)
    await open_session(reg)
    clock.advance(EXPIRY + 1)
    for _ in range(2400):  # bounded wait for the background task; no request touches the session
        if not sessions(reg):
            break
        await asyncio.sleep(0.025)
    assert sessions(reg) == []
    assert reg.store._hash_states == {}


def write_old_session(driver: base.Driver, upload_id: str, *, started: float) -> None:
    """A session as the code before owners wrote it (no `owner`, no `touched`), its data as old as it."""
    driver.put(paths.upload_info(upload_id), json.dumps({"repository": "r", "started": started}).encode())
    driver.open_writer(paths.upload_data(upload_id)).close()
    test_gc_fsck.age(driver, paths.upload_data(upload_id), time.time() - started)


async def test_sessions_from_older_versions_count_for_nobody_and_expire_by_age(
    make_client: ClientFactory, driver: base.Driver, clock: Clock
) -> None:
    reg = await make_client(driver=driver, clock=clock, max_uploads_per_owner=1)
    old, recent = "a" * 32, "b" * 32
    write_old_session(driver, old, started=clock() - EXPIRY - HOUR)
    write_old_session(driver, recent, started=clock())
    mine = (await open_session(reg)).rsplit("/", 1)[1]
    assert (await reg.client.get(f"/v2/r/blobs/uploads/{recent}")).status == 204
    clock.advance(2 * HOUR)
    assert await reg.store.purge_expired_uploads() == [old]
    assert sorted(sessions(reg)) == sorted([recent, mine])


ALICE = test_auth.basic("alice", "alice-pw")
BOB = test_auth.basic("bob", "bob-pw")


@pytest.fixture
async def capped(make_client: ClientFactory, driver: base.Driver, clock: Clock, tmp_path: Path) -> Registry:
    htpasswd, access = tmp_path / "auth" / "htpasswd", tmp_path / "auth" / "access.yaml"
    test_auth.write_users(htpasswd, {"alice": "alice-pw", "bob": "bob-pw"})
    access.write_text("users:\n  alice: {access: push}\n  bob: {access: push}\n")
    authenticator = auth.Authenticator(htpasswd=htpasswd, access=access)
    return await make_client(driver=driver, clock=clock, authenticator=authenticator, max_uploads_per_owner=3)


def stored(reg: Registry) -> dict[str, bytes]:
    """Every upload file and its bytes (what a refused POST must not change)."""
    driver = reg.store.driver
    return {
        f"{upload_id}/{name}": driver.get(f"{paths.UPLOADS}/{upload_id}/{name}")
        for upload_id in driver.list(paths.UPLOADS)
        for name in driver.list(f"{paths.UPLOADS}/{upload_id}")
    }


async def test_one_post_beyond_the_cap_is_429_toomanyrequests_and_stores_nothing(capped: Registry) -> None:
    locations = [await open_session(capped, headers=ALICE) for _ in range(3)]
    before = stored(capped)
    refused = await capped.client.post("/v2/r/blobs/uploads/", headers=ALICE)
    assert (refused.status, await code(refused)) == (429, "TOOMANYREQUESTS")
    assert "3 upload sessions already open" in (await refused.json())["errors"][0]["message"]
    monolithic = await capped.client.post(
        f"/v2/r/blobs/uploads/?digest={sha256(b'x')}", data=b"x", headers=ALICE
    )
    assert (monolithic.status, await code(monolithic)) == (429, "TOOMANYREQUESTS")
    assert stored(capped) == before
    assert (await capped.client.post("/v2/r/blobs/uploads/", headers=BOB)).status == 202, (
        "the cap is per user"
    )
    assert (await capped.client.delete(locations[0], headers=ALICE)).status == 204
    assert (await capped.client.post("/v2/r/blobs/uploads/", headers=ALICE)).status == 202


async def test_expired_sessions_do_not_count_towards_the_cap(capped: Registry, clock: Clock) -> None:
    for _ in range(3):
        await open_session(capped, headers=ALICE)
    clock.advance(EXPIRY + 1)
    assert (await capped.client.post("/v2/r/blobs/uploads/", headers=ALICE)).status == 202


def test_a_store_over_an_existing_driver_counts_the_sessions_already_there(driver: base.Driver) -> None:
    first = store.Store(driver, max_uploads_per_owner=2)
    first.start_upload("r", owner="alice")
    first.start_upload("r", owner="alice")
    restarted = store.Store(driver, max_uploads_per_owner=2)
    with pytest.raises(store.TooManyUploadsError):
        restarted.start_upload("r", owner="alice")
    restarted.start_upload("r", owner="")
