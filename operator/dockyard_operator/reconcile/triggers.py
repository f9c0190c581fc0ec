"""When a registry gets a pass: its watch events, one operator-wide resync loop, and retries after errors.

The handlers hand every watch event of a `PrivateRegistry` here (`seen`, the initial listing included), and
ask for passes on behalf of watched Secrets and children (`run`). Owns:
- the registries this process knows, each with a small fingerprint of what a pass depends on besides the
  cluster around it (uid, `metadata.generation`, labels and annotations, e.g. the rotate-CA request): the
  first sight of a registry (an operator start, a creation) and any change of its fingerprint ask for a pass;
  status writes (ours, node trust's refresh) change none of it and ask for nothing. Nothing is written to
  the registry for this (no finalizer, no last-handled-configuration annotation, no progress annotations);
- deletion: the first event showing a `deletionTimestamp`, or the DELETED event, hands the last body to
  `forget` once (the CA leaves the nodes, pull secret copies and the hosting ConfigMap go);
- one resync loop: every resync period it asks for a periodic pass of every known registry, spread evenly
  over the period (1,000 registries at 60 s: one every 60 ms), not all at once (a late loop shifts the rest
  of its round instead of catching up in a burst); the reconciler's turns still give those passes a slot
  after every asked-for pass, and skip a registry that is busy or had a pass within half a period;
- the orphan sweep (`orphans`): at the start of every round of the resync loop, the first one included, it
  hands the registries it knows to the sweep, which removes what registries deleted unseen left outside their
  namespace (one sweep at a time: a round whose previous sweep still runs skips its own);
- retries: a pass that asks for one (`Result.retry_after`) or fails (10 s after an API error, 60 s after a
  refusal or an unexpected error) is asked for again after that delay; a later asked-for pass replaces the
  retry with its own outcome.
Must not: import kopf, call the API, or keep a registry's body (only a deletion's `forget` holds the last
one until it is done).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from dockyard_operator import kube
from dockyard_operator.reconcile.orchestrator import Result

log = logging.getLogger(__name__)

Key = tuple[str, str]
API_ERROR_DELAY = 10.0
"""Seconds before a pass that failed on an API error (a conflict, an unavailable API server) is retried."""
REFUSED_DELAY = 60.0
"""Seconds before a pass refused by RBAC, or failed unexpectedly, is retried."""


class Passes(Protocol):
    """The part of `orchestrator.Reconciler` the triggers drive."""

    async def reconcile(self, *, namespace: str, name: str, periodic: bool = False) -> Result: ...
    async def forget(self, *, body: Mapping[str, Any]) -> None: ...


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    """What a pass depends on in the registry object itself, beyond its spec's generation."""

    uid: str
    generation: int
    metadata: bytes
    """A digest of its labels and annotations."""

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Fingerprint:
        meta = body.get("metadata") or {}
        marks = {"labels": meta.get("labels") or {}, "annotations": meta.get("annotations") or {}}
        digest = hashlib.blake2b(json.dumps(marks, sort_keys=True).encode(), digest_size=16).digest()
        return cls(uid=str(meta.get("uid", "")), generation=int(meta.get("generation") or 0), metadata=digest)


def spread(keys: list[Key], period: float) -> list[tuple[float, Key]]:
    """When, in seconds from a round's start, each registry's periodic pass is asked for: evenly over the
    period, in a stable order."""
    ordered = sorted(keys)
    step = period / len(ordered) if ordered else period
    return [(index * step, key) for index, key in enumerate(ordered)]


class Triggers:
    """One per operator process, started by the handlers at startup and closed at cleanup."""

    def __init__(
        self,
        passes: Passes,
        *,
        resync_seconds: float,
        sweep: Callable[[set[Key]], Awaitable[None]] | None = None,
    ) -> None:
        """`sweep`: run with the known registries at the start of every resync round (`orphans`)."""
        self._passes = passes
        self._period = resync_seconds
        self._sweep = sweep
        self._sweeping: asyncio.Task[None] | None = None
        self._known: dict[Key, Fingerprint] = {}
        self._forgotten: set[str] = set()  # uids whose deletion was handed to `forget` already
        self._retries: dict[Key, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._closed = False

    def known(self) -> set[Key]:
        """The registries this process knows (watched, not being deleted)."""
        return set(self._known)

    def retry_in(self, key: Key) -> float | None:
        """Seconds until the registry's pending retry, None when none is pending."""
        handle = self._retries.get(key)
        return None if handle is None else handle.when() - asyncio.get_running_loop().time()

    def start(self) -> None:
        """Start the resync loop; its first round begins one period from now (a start passes everything)."""
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._resync_loop(), name="dockyard-resync")
            self._loop_task.add_done_callback(_loop_ended)

    # ------------------------------------------------------------------------------- watch events

    def seen(self, *, event: str | None, body: Mapping[str, Any]) -> None:
        """A watch event of a registry (`event` None: the listing at start); asks for a pass, or `forget`,
        as its type and fingerprint say. Returns at once: the pass runs in a task of its own."""
        meta = body.get("metadata") or {}
        namespace, name = meta.get("namespace"), meta.get("name")
        if self._closed or not namespace or not name:
            return
        key, uid = (str(namespace), str(name)), str(meta.get("uid", ""))
        if event == "DELETED" or meta.get("deletionTimestamp"):
            self._known.pop(key, None)
            self._cancel_retry(key)
            if uid not in self._forgotten:
                self._forgotten.add(uid)
                self._spawn(self._forget(dict(body)), key)
            if event == "DELETED":
                self._forgotten.discard(uid)
            return
        fingerprint = Fingerprint.of(body)
        if self._known.get(key) == fingerprint:
            return  # a status write, or an event that changes nothing a pass reads from the registry
        self._known[key] = fingerprint
        self._spawn(self.run(namespace=key[0], name=key[1]), key)

    # ------------------------------------------------------------------------------------- passes

    async def run(self, *, namespace: str, name: str, periodic: bool = False) -> None:
        """One pass of a registry, its outcome turned into a retry when it asks for one or fails; raises
        nothing (a Secret's or a child's watch handler awaits this)."""
        key = (namespace, name)
        delay: float | None = None
        try:
            result = await self._passes.reconcile(namespace=namespace, name=name, periodic=periodic)
            delay = result.retry_after
            if delay is not None:
                log.info("%s/%s: retrying in %gs: %s", namespace, name, delay, result.message or "retrying")
        except kube.Forbidden as exc:
            delay = REFUSED_DELAY
            log.error("%s/%s: %s (check the operator's RBAC); retrying in %gs", namespace, name, exc, delay)
        except kube.KubeError as exc:
            delay = API_ERROR_DELAY
            log.warning("%s/%s: %s; retrying in %gs", namespace, name, exc, delay)
        except Exception:
            delay = REFUSED_DELAY
            log.exception("%s/%s: the pass failed; retrying in %gs", namespace, name, delay)
        else:
            if result.gone:
                self._known.pop(key, None)  # deleted while no watch event said so (a re-list after a gap)
        if delay is not None:
            self._retry(key, delay)
        elif not periodic:  # a periodic pass may have been skipped: it says nothing about a retry due
            self._cancel_retry(key)

    async def _forget(self, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        try:
            await self._passes.forget(body=body)
        except Exception:  # the node trust publisher's next full round drops the registry all the same
            where = f"{meta.get('namespace')}/{meta.get('name')}"
            log.exception("%s: withdrawing the deleted registry failed", where)

    def _retry(self, key: Key, delay: float) -> None:
        self._cancel_retry(key)
        if self._closed or key not in self._known:
            return
        loop = asyncio.get_running_loop()
        self._retries[key] = loop.call_later(delay, self._retry_due, key)

    def _retry_due(self, key: Key) -> None:
        self._retries.pop(key, None)
        if key in self._known and not self._closed:
            self._spawn(self.run(namespace=key[0], name=key[1]), key)

    def _cancel_retry(self, key: Key) -> None:
        handle = self._retries.pop(key, None)
        if handle is not None:
            handle.cancel()

    def _spawn(self, work: Any, key: Key) -> None:
        task: asyncio.Task[None] = asyncio.create_task(work, name=f"dockyard-pass {key[0]}/{key[1]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -------------------------------------------------------------------------------- resync loop

    async def _resync_loop(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while not self._closed:
            start += self._period
            await asyncio.sleep(max(0.0, start - loop.time()))
            self._start_sweep()
            for offset, key in spread(list(self._known), self._period):
                late = loop.time() - (start + offset)
                if late > 0:
                    start += late  # a busy event loop shifts the rest of the round: no burst to catch up
                await asyncio.sleep(max(0.0, start + offset - loop.time()))
                if key in self._known and not self._closed:
                    self._spawn(self.run(namespace=key[0], name=key[1], periodic=True), key)

    def _start_sweep(self) -> None:
        if self._sweep is None or self._closed or (self._sweeping is not None and not self._sweeping.done()):
            return
        self._sweeping = asyncio.create_task(self._run_sweep(self._sweep), name="dockyard-orphan-sweep")
        self._tasks.add(self._sweeping)
        self._sweeping.add_done_callback(self._tasks.discard)

    async def _run_sweep(self, sweep: Callable[[set[Key]], Awaitable[None]]) -> None:
        try:
            await sweep(set(self._known))
        except Exception:  # the next round sweeps again
            log.exception("the orphan sweep failed")

    # ----------------------------------------------------------------------------------- shutdown

    def stop(self) -> None:
        """Ask for nothing more: the loop and every pending retry stop (running passes go on)."""
        self._closed = True
        for key in list(self._retries):
            self._cancel_retry(key)
        if self._loop_task is not None:
            self._loop_task.cancel()

    async def close(self) -> None:
        """After the reconciler drained its running passes: cancel what still waits, and wait for it."""
        self.stop()
        pending = [t for t in (*self._tasks, self._loop_task) if t is not None and not t.done()]
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _loop_ended(task: asyncio.Task[None]) -> None:
    """The loop only ends when cancelled at shutdown; anything else is a bug that must not go unseen."""
    if not task.cancelled() and task.exception() is not None:
        log.error("the resync loop stopped; drift is no longer corrected", exc_info=task.exception())
