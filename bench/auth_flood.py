"""Workload 8: six first-time logins while one client floods the login with wrong passwords.

Against Dockyard in the pod's shape (nginx with the operator's rendered config, its own per-address
limits, in front of the registry): one client on 127.0.0.1 keeps `connections` (200) keep-alive
connections busy with `GET /v2/` as `bench:<random password>`, each connection sending its next guess as
soon as the last one is answered. Two seconds into the flood, six users who have never logged in
(bcrypt cost 10, added just before) log in at once the way `docker login` does (an anonymous `GET /v2/`,
then one with credentials), each from its own loopback address (127.0.0.2 to .7: loopback has all of
127/8), so nginx and the registry see seven clients. A login's latency runs from its first request to
the 200; a login that fails or takes over 30 s counts as not succeeded.

Owns: the flooding and the logging-in clients (aiohttp, in this process) and their numbers.
Must not: talk to anything but loopback addresses, or run without a time bound.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import os
import ssl
import statistics
import time
from collections.abc import Mapping

import aiohttp

from bench import tlsfiles

LOGIN_TIMEOUT = 30.0
FLOOD_LEAD_SECONDS = 2.0
FLOODER = "127.0.0.1"
LOGIN_ADDRESSES = [f"127.0.0.{i}" for i in range(2, 8)]


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def _flood(
    *,
    url: str,
    context: ssl.SSLContext,
    connections: int,
    stop: asyncio.Event,
    statuses: collections.Counter[int],
) -> None:
    connector = aiohttp.TCPConnector(limit=connections, local_addr=(FLOODER, 0), ssl=context)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            while not stop.is_set():
                headers = {"Authorization": _basic("bench", base64.b64encode(os.urandom(9)).decode())}
                try:
                    async with session.get(url, headers=headers) as resp:
                        await resp.read()
                        statuses[resp.status] += 1
                except (aiohttp.ClientError, OSError):
                    statuses[0] += 1  # refused or reset: still a flood, counted apart

        await asyncio.gather(*(one() for _ in range(connections)))


async def _login(
    *, url: str, context: ssl.SSLContext, address: str, user: str, password: str
) -> float | None:
    """Seconds for an anonymous GET /v2/ then one with credentials until 200; None when it fails."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0), ssl=context)
    timeout = aiohttp.ClientTimeout(total=LOGIN_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        try:
            async with session.get(url) as challenge:
                await challenge.read()
                if challenge.status != 401:
                    return None
            async with session.get(url, headers={"Authorization": _basic(user, password)}) as resp:
                await resp.read()
                return time.perf_counter() - start if resp.status == 200 else None
        except (aiohttp.ClientError, OSError, TimeoutError):
            return None


async def _run(
    *, url: str, tls: tlsfiles.ServerTLS, users: Mapping[str, str], connections: int
) -> dict[str, float]:
    context = ssl.create_default_context(cafile=str(tls.ca_file))
    stop = asyncio.Event()
    statuses: collections.Counter[int] = collections.Counter()
    flood_started = time.perf_counter()
    flood = asyncio.ensure_future(
        _flood(url=url, context=context, connections=connections, stop=stop, statuses=statuses)
    )
    try:
        await asyncio.sleep(FLOOD_LEAD_SECONDS)
        if flood.done():
            flood.result()  # a flood that ended early is a bench bug: say so
        latencies = await asyncio.gather(
            *(
                _login(url=url, context=context, address=address, user=user, password=password)
                for address, (user, password) in zip(LOGIN_ADDRESSES, users.items(), strict=True)
            )
        )
    finally:
        stop.set()
        await asyncio.wait_for(flood, timeout=LOGIN_TIMEOUT)
    flood_seconds = time.perf_counter() - flood_started
    ok = [s for s in latencies if s is not None]
    total = sum(statuses.values())
    return {
        "auth_logins_ok": float(len(ok)),
        "auth_login_max": max(ok) if len(ok) == len(latencies) else LOGIN_TIMEOUT,
        "auth_login_p50": statistics.median(ok) if ok else LOGIN_TIMEOUT,
        "auth_flood_rps": total / flood_seconds,
        "auth_flood_429_pct": 100 * statuses[429] / total if total else 0.0,
        "auth_flood_401_pct": 100 * statuses[401] / total if total else 0.0,
    }


def run(
    *, address: str, tls: tlsfiles.ServerTLS, users: Mapping[str, str], connections: int = 200
) -> dict[str, float]:
    """The workload's numbers: logins that succeeded, their max and median seconds, and the flood's."""
    if len(users) != len(LOGIN_ADDRESSES):
        raise ValueError(f"need {len(LOGIN_ADDRESSES)} users, one per login address")
    return asyncio.run(_run(url=f"https://{address}/v2/", tls=tls, users=users, connections=connections))
