"""Reading a registry pod's `/status` document over HTTP (its metrics listener, never the public port).

Owns: the HTTP GET with a short timeout and the rule that any failure (refused, timed out, not JSON, not 200)
is "no reading", logged at debug level: a pod that is starting or gone must not fail a reconcile pass, and
the status step then keeps what it reported last.
Must not: interpret the document (that is `observations`) or talk to the Kubernetes API.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

log = logging.getLogger(__name__)
TIMEOUT_SECONDS = 3.0


class StatusReader:
    """GETs status documents; one short-lived session per batch of reads."""

    def __init__(self, *, timeout: float = TIMEOUT_SECONDS) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def read_all(self, urls: list[str]) -> list[Any]:
        """The JSON documents of every URL that answered (in order; failures left out)."""
        if not urls:
            return []
        async with aiohttp.ClientSession(timeout=self._timeout) as session:
            found = await asyncio.gather(*(self._read(session, url) for url in urls))
        return [doc for doc in found if doc is not None]

    async def _read(self, session: aiohttp.ClientSession, url: str) -> Any:
        try:
            async with session.get(url, allow_redirects=False) as response:
                if response.status != 200:
                    log.debug("status of %s: HTTP %s", url, response.status)
                    return None
                return await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.debug("status of %s unavailable: %s", url, exc)
            return None
