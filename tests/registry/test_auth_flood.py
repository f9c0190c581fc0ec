"""Fair authentication under a password flood, over HTTP against the real registry app.

Covers: one client flooding wrong passwords for a real user (`admin:<random>`, 200 at once) gets 429
TOOMANYREQUESTS with Retry-After beyond its small budget of pending checks, while six first-time logins
from six other clients all succeed and are checked within one round of the flooder's queue (round-robin
over clients, not first come first served); clients are told apart by `X-Real-IP` only when the peer is
a trusted proxy (the sidecar on loopback), otherwise by the peer itself, so a client cannot escape its
budget by inventing addresses; the nginx `/auth` endpoint is charged the same way; the fair slots hand
a freed slot to the next client in the rotation.

bcrypt is held at a gate (a threading.Event) so every check is queued when the logins arrive: the
outcome does not depend on how fast this machine hashes.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dockyard_registry import auth
from tests.registry import conftest

ROUNDS = 4
FLOODER = "198.51.100.66"
USERS = {f"user{i}": f"user{i}-pw" for i in range(6)} | {"admin": "admin-pw"}
PER_CLIENT = 8
FLOOD = 200


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


class Gate:
    """Holds every bcrypt check until opened, recording the password order in which checks started."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.started: list[str] = []

    def verify(self, password: str, hashed: str, real: Any) -> bool:
        self.started.append(password)
        assert self.opened.wait(30), "the gate was never opened"
        return bool(real(password, hashed))


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    g = Gate()
    real = auth._bcrypt_verify
    monkeypatch.setattr(auth, "_bcrypt_verify", lambda password, hashed: g.verify(password, hashed, real))
    yield g
    g.opened.set()  # never leave a thread blocked behind a failed test


@pytest.fixture
def authenticator(tmp_path: Path) -> auth.Authenticator:
    htpasswd = tmp_path / "auth" / "htpasswd"
    htpasswd.parent.mkdir(parents=True)
    htpasswd.write_text("".join(f"{u}:{auth.hash_password(p, rounds=ROUNDS)}\n" for u, p in USERS.items()))
    return auth.Authenticator(
        htpasswd=htpasswd, access=None, max_pending_per_client=PER_CLIENT, bcrypt_threads=2
    )


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    # No connection limit: the flood really is 200 requests in flight at once.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        yield s


async def until(what: str, check: Any) -> None:
    for _ in range(2000):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def get(session: aiohttp.ClientSession, url: Any, headers: dict[str, str]) -> tuple[int, str, str]:
    async with session.get(url, headers=headers) as resp:
        body = await resp.json(content_type=None) if resp.status != 200 else {}
        code = body["errors"][0]["code"] if body else ""
        return resp.status, code, resp.headers.get("Retry-After", "")


async def test_a_password_flood_from_one_client_gets_429_while_six_first_logins_from_others_succeed(
    make_client: conftest.ClientFactory,
    authenticator: auth.Authenticator,
    gate: Gate,
    session: aiohttp.ClientSession,
) -> None:
    reg = await make_client(authenticator=authenticator)
    url = reg.client.make_url("/v2/")
    flood = [
        asyncio.ensure_future(
            get(session, url, {"X-Real-IP": FLOODER, **basic("admin", f"guess-{secrets.token_hex(8)}")})
        )
        for _ in range(FLOOD)
    ]
    # Everything past the flooder's budget is answered at once, without a bcrypt.
    await until("the flood is shed", lambda: sum(f.done() for f in flood) == FLOOD - PER_CLIENT)
    logins = [
        asyncio.ensure_future(get(session, url, {"X-Real-IP": f"203.0.113.{i + 1}", **basic(u, p)}))
        for i, (u, p) in enumerate(sorted(USERS.items())[1:])
    ]
    slots = authenticator._bcrypt_slots
    await until(
        "the logins are queued", lambda: len(gate.started) == 2 and slots.waiting == PER_CLIENT - 2 + 6
    )
    gate.opened.set()

    assert [status for status, _, _ in await asyncio.gather(*logins)] == [200] * 6
    outcomes = await asyncio.gather(*flood)
    shed = [o for o in outcomes if o[0] == 429]
    assert len(shed) == FLOOD - PER_CLIENT
    assert set(shed) == {(429, "TOOMANYREQUESTS", "1")}
    assert sorted(o[:2] for o in outcomes if o[0] != 429) == [(401, "UNAUTHORIZED")] * PER_CLIENT
    # Round-robin: two flood checks were running, the flooder has one turn, then each login has its own,
    # before the flooder's remaining five (first come first served would put all six after them).
    login_turns = [i for i, password in enumerate(gate.started) if not password.startswith("guess-")]
    assert max(login_turns) <= 2 + 1 + 6, gate.started
    assert len(gate.started) == PER_CLIENT + 6


async def test_x_real_ip_from_an_untrusted_peer_does_not_buy_another_budget(
    make_client: conftest.ClientFactory,
    authenticator: auth.Authenticator,
    gate: Gate,
    session: aiohttp.ClientSession,
) -> None:
    authenticator.max_pending_per_client = 1
    for trusted, second_status in (((), 429), (None, 401)):
        gate.opened.clear()
        kw = {} if trusted is None else {"trusted_proxies": trusted}
        reg = await make_client(authenticator=authenticator, **kw)
        url = reg.client.make_url("/v2/")
        first = asyncio.ensure_future(get(session, url, {"X-Real-IP": "192.0.2.1", **basic("admin", "a")}))
        await until("the first check holds a slot", lambda: authenticator._pending == 1)
        second = asyncio.ensure_future(get(session, url, {"X-Real-IP": "192.0.2.2", **basic("admin", "b")}))
        if second_status == 429:
            assert (await second)[:2] == (429, "TOOMANYREQUESTS"), "both are the peer 127.0.0.1"
        gate.opened.set()
        assert (await first)[0] == 401
        assert (await second)[0] == second_status
        gate.started.clear()


async def test_the_nginx_auth_endpoint_charges_the_client_named_by_x_real_ip(
    make_client: conftest.ClientFactory,
    authenticator: auth.Authenticator,
    gate: Gate,
    session: aiohttp.ClientSession,
) -> None:
    authenticator.max_pending_per_client = 1
    reg = await make_client(authenticator=authenticator)
    url = reg.client.make_url("/auth")

    def ask(ip: str, password: str) -> Any:
        headers = {"X-Original-URI": "/v2/", "X-Real-IP": ip, **basic("admin", password)}
        return asyncio.ensure_future(get(session, url, headers))

    first = ask(FLOODER, "guess-1")
    await until("the first check holds a slot", lambda: authenticator._pending == 1)
    assert (await ask(FLOODER, "guess-2"))[0] == 429
    other = ask("203.0.113.9", "admin-pw")
    await until("the other client's check started", lambda: authenticator._pending == 2)
    gate.opened.set()
    assert ((await first)[0], (await other)[0]) == (401, 200)


async def test_fair_slots_serve_waiting_keys_in_rotation() -> None:
    slots = auth.FairSlots(1)
    order: list[str] = []
    release = asyncio.Event()

    async def hold(key: str) -> None:
        async with slots.turn(key):
            order.append(key)
            await release.wait()

    tasks = [asyncio.ensure_future(hold(k)) for k in ["a", "a", "a", "a", "b", "c", "b"]]
    await until("all wait", lambda: slots.waiting == 6)
    release.set()
    await asyncio.gather(*tasks)
    assert order == ["a", "a", "b", "c", "a", "b", "a"]
