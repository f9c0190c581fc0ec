"""When a registry gets a pass: watch events, the one resync loop, retries (`reconcile.triggers`).

Covers:
- the first sight of a registry (an operator start, a creation) asks for a pass; an event that changes
  neither its generation nor its labels or annotations (a status write) asks for nothing; a spec change or
  an annotation (the rotate-CA request) asks for one;
- a deletion is handed to `forget` once, with the last body, whether the first sign is a deletionTimestamp
  (another finalizer holds it) or the DELETED event, and the registry leaves the resync loop;
- a pass that asks for a retry, or fails on an API error, a refusal or a bug, is asked for again after its
  delay (10 s, 60 s, 60 s, or the pass's own); a later clean pass cancels the retry, a periodic one does not;
- the resync loop asks for one periodic pass of every known registry per period, spread evenly over it;
  a registry a pass found gone leaves it; every round, the first included, hands the known registries to the
  orphan sweep, and a failing sweep does not stop the loop;
- closing cancels passes still waiting and the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from dockyard_operator import kube, names
from dockyard_operator.reconcile import Result, triggers


class Passes:
    """A recording stand-in for the reconciler: each call's outcome comes from `outcomes` (default clean)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.forgotten: list[Mapping[str, Any]] = []
        self.outcomes: dict[str, Result | Exception] = {}
        self.called = asyncio.Event()
        self.hold: asyncio.Event | None = None

    async def reconcile(self, *, namespace: str, name: str, periodic: bool = False) -> Result:
        self.calls.append((name, periodic))
        self.called.set()
        if self.hold is not None:
            await self.hold.wait()
        outcome = self.outcomes.get(name, Result())
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def forget(self, *, body: Mapping[str, Any]) -> None:
        self.forgotten.append(body)


def body(name: str = "demo", *, generation: int = 1, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"namespace": "ns", "name": name, "uid": f"uid-{name}", "generation": generation, **meta},
        "spec": {},
        "status": {"observedGeneration": generation},
    }


async def settle() -> None:
    """Let the spawned pass tasks run to their end."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_first_sight_and_changes_ask_for_a_pass_and_status_writes_do_not() -> None:
    passes = Passes()
    t = triggers.Triggers(passes, resync_seconds=60)
    t.seen(event=None, body=body())  # the listing at start
    await settle()
    assert passes.calls == [("demo", False)]

    with_status = body()
    with_status["status"] = {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}]}
    t.seen(event="MODIFIED", body=with_status)
    await settle()
    assert passes.calls == [("demo", False)], "a status write asked for a pass"

    t.seen(event="MODIFIED", body=body(generation=2))
    t.seen(event="MODIFIED", body=body(generation=2, annotations={"dockyard.dev/rotate-ca": "now"}))
    await settle()
    assert passes.calls == [("demo", False)] * 3
    assert t.known() == {("ns", "demo")}
    await t.close()


async def test_a_deletion_is_forgotten_once_with_the_last_body() -> None:
    passes = Passes()
    t = triggers.Triggers(passes, resync_seconds=60)
    t.seen(event=None, body=body("held"))
    t.seen(event=None, body=body("plain"))
    await settle()

    deleting = body("held", deletionTimestamp="2026-01-01T00:00:00Z", finalizers=["example.com/other"])
    t.seen(event="MODIFIED", body=deleting)
    t.seen(event="MODIFIED", body=deleting)
    t.seen(event="DELETED", body=deleting)
    t.seen(event="DELETED", body=body("plain"))
    await settle()

    assert [b["metadata"]["name"] for b in passes.forgotten] == ["held", "plain"]
    assert passes.forgotten[0]["metadata"]["finalizers"] == ["example.com/other"]
    assert t.known() == set()
    assert passes.calls == [("held", False), ("plain", False)], "a deleting registry got a pass"
    await t.close()


@pytest.mark.parametrize(
    ("outcome", "delay"),
    [
        (kube.Unavailable("get Secret ns/x: etcd", status=503), triggers.API_ERROR_DELAY),
        (kube.Forbidden("forbidden: create Secret ns/x", status=403), triggers.REFUSED_DELAY),
        (RuntimeError("a bug"), triggers.REFUSED_DELAY),
        (Result(retry_after=5.0, message="ApplyFailed"), 5.0),
    ],
)
async def test_a_failed_pass_is_asked_for_again_after_its_delay(
    outcome: Result | Exception, delay: float
) -> None:
    passes = Passes()
    passes.outcomes["demo"] = outcome
    t = triggers.Triggers(passes, resync_seconds=60)
    t.seen(event=None, body=body())
    await settle()
    due = t.retry_in(("ns", "demo"))
    assert due is not None and delay - 1 < due <= delay

    await t.run(namespace="ns", name="demo", periodic=True)  # a skipped periodic pass cancels nothing
    assert t.retry_in(("ns", "demo")) is not None
    passes.outcomes.clear()
    await t.run(namespace="ns", name="demo")  # a clean pass somebody asked for does
    assert t.retry_in(("ns", "demo")) is None
    await t.close()


async def test_a_due_retry_runs_the_pass_again() -> None:
    passes = Passes()
    passes.outcomes["demo"] = Result(retry_after=0.01, message="not yet")
    t = triggers.Triggers(passes, resync_seconds=60)
    t.seen(event=None, body=body())
    await settle()
    passes.called.clear()
    passes.outcomes.clear()
    await asyncio.wait_for(passes.called.wait(), timeout=10)
    assert passes.calls == [("demo", False), ("demo", False)]
    await t.close()


def test_the_resync_round_spreads_the_registries_evenly_over_the_period() -> None:
    keys = [("ns", "c"), ("ns", "a"), ("other", "a"), ("ns", "b")]
    assert triggers.spread(keys, 60.0) == [
        (0.0, ("ns", "a")),
        (15.0, ("ns", "b")),
        (30.0, ("ns", "c")),
        (45.0, ("other", "a")),
    ]
    assert triggers.spread([], 60.0) == []


async def test_the_resync_loop_asks_for_a_periodic_pass_of_every_known_registry() -> None:
    passes = Passes()
    t = triggers.Triggers(passes, resync_seconds=0.05)
    for name in ("r0", "r1", "r2"):
        t.seen(event=None, body=body(name))
    await settle()
    passes.calls.clear()
    t.start()

    async def a_round() -> None:
        while {name for name, periodic in passes.calls if periodic} != {"r0", "r1", "r2"}:
            passes.called.clear()
            await passes.called.wait()

    await asyncio.wait_for(a_round(), timeout=10)
    assert all(periodic for _, periodic in passes.calls)

    passes.outcomes["r1"] = Result(gone=True)  # deleted while no watch event said so
    await t.run(namespace="ns", name="r1", periodic=True)
    assert t.known() == {("ns", "r0"), ("ns", "r2")}
    await t.close()


async def test_every_resync_round_hands_the_known_registries_to_the_orphan_sweep() -> None:
    passes = Passes()
    swept: list[set[triggers.Key]] = []
    rounds = asyncio.Event()

    async def sweep(known: set[triggers.Key]) -> None:
        swept.append(known)
        if len(swept) >= 2:
            rounds.set()
        raise kube.Unavailable("down", status=503)  # a failing sweep: the next round sweeps again

    t = triggers.Triggers(passes, resync_seconds=0.05, sweep=sweep)
    t.seen(event=None, body=body("r0"))
    t.start()
    await asyncio.wait_for(rounds.wait(), timeout=10)
    await t.close()

    assert swept[:2] == [{("ns", "r0")}, {("ns", "r0")}]


async def test_close_cancels_the_passes_still_waiting() -> None:
    passes = Passes()
    passes.hold = asyncio.Event()
    t = triggers.Triggers(passes, resync_seconds=60)
    t.start()
    t.seen(event=None, body=body())
    await asyncio.wait_for(passes.called.wait(), timeout=10)
    await t.close()
    t.seen(event="MODIFIED", body=body(generation=2))  # closed: asks for nothing
    await settle()
    assert passes.calls == [("demo", False)]
