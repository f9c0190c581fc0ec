"""A node trust change refreshes a registry's status from its last pass, against the in-memory API.

Covers:
- when the publisher changes only what a registry reads from node trust (the first publication, node
  counts), its status follows with one status patch and no read at all (not a second pass over its
  children), and a pass right after writes nothing: the refresh reported what a pass reports;
- a registry with nothing settled in this process (a restarted operator) gets a pass instead;
- passes and refreshes of one registry take turns: a refresh queued behind a running pass gives way to a
  pass queued after it, a second refresh is covered by the queued one, and a pass is never covered by a
  queued refresh;
- a pass somebody asked for gets a free slot before the resync timer's passes, and a pass waiting for its
  slot covers later passes of its registry.
"""

from __future__ import annotations

import asyncio
import datetime

from dockyard_operator import names, reconcile, settings
from dockyard_operator.nodetrust import builders
from dockyard_operator.reconcile import turns
from tests.operator import test_nodetrust_publisher as publisher
from tests.operator.test_nodetrust_publisher import TRUST_NS, CountingKube, condition, setup

Requests = tuple[list[tuple[str, str, str | None]], list[tuple[str, str, str]]]


async def refresh_requests(
    api: CountingKube, reconciler: reconcile.Reconciler, keys: set[tuple[str, str]]
) -> Requests:
    """The reads and writes of the reconciler's answer to a node trust change."""
    reads, writes = len(api.reads), len(api.writes)
    await reconciler.node_trust_changed(keys)
    return api.reads[reads:], api.writes[writes:]


async def test_a_node_trust_change_costs_one_status_patch_and_no_read() -> None:
    api, trust, reconciler = setup(2)
    await reconciler.reconcile(namespace="ns", name="r0")
    await reconciler.reconcile(namespace="ns", name="r1")
    assert condition(api, "r0", "NodeTrustReady")["reason"] == "Publishing"
    changes: list[Requests] = []

    async def on_change(keys: set[tuple[str, str]]) -> None:
        changes.append(await refresh_requests(api, reconciler, keys))

    await trust.publish_round(on_change=on_change)
    assert changes == [([], [("patch-status", names.KIND, "r0"), ("patch-status", names.KIND, "r1")])]
    assert condition(api, "r0", "NodeTrustReady")["reason"] != "Publishing"
    assert api.obj(names.KIND, "r0")["status"]["nodeTrust"]["hosts"]

    # The agents' DaemonSet is scheduled on a node: every registry reads the new counts.
    daemonset = api.obj("DaemonSet", builders.NAME, TRUST_NS)
    daemonset["status"] = {"desiredNumberScheduled": 1, "numberReady": 1, "updatedNumberScheduled": 1}
    changes.clear()
    await trust.publish_round(on_change=on_change)
    assert changes == [([], [("patch-status", names.KIND, "r0"), ("patch-status", names.KIND, "r1")])]
    assert api.obj(names.KIND, "r1")["status"]["nodeTrust"]["desired"] == 1

    # What the refresh reported is what a pass reports: the pass has nothing to write.
    writes, events = len(api.writes), len(api.events)
    await reconciler.reconcile(namespace="ns", name="r0")
    assert api.writes[writes:] == [] and api.events[events:] == []


async def test_a_registry_with_nothing_settled_in_this_process_gets_a_pass() -> None:
    api, trust, first = setup(1)
    await publisher.converge(trust, first, 1)
    restarted = reconcile.Reconciler(
        client=api,  # type: ignore[arg-type]
        config=settings.Settings(bcrypt_rounds=4),
        clock=lambda: datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        node_trust=trust,
    )
    reads, _ = await refresh_requests(api, restarted, {("ns", "r0")})
    assert ("get", names.KIND, "ns") in reads and ("get", "Secret", "ns") in reads
    # From then on it has a settled pass: the next change is a refresh.
    reads, _ = await refresh_requests(api, restarted, {("ns", "r0")})
    assert reads == []


async def test_passes_and_refreshes_of_one_registry_take_turns() -> None:
    queue = turns.Turns(slots=4)
    key = ("ns", "r0")
    release = asyncio.Event()
    got: list[tuple[str, bool]] = []

    async def take(kind: str) -> None:
        turn = queue.pass_turn(key) if kind.startswith("pass") else queue.refresh_turn(key)
        async with turn as mine:
            got.append((kind, mine))
            if kind == "pass-running":
                await release.wait()

    running = asyncio.create_task(take("pass-running"))
    await asyncio.sleep(0)
    refresh = asyncio.create_task(take("refresh-queued"))
    await asyncio.sleep(0)
    await take("refresh-covered")  # a refresh already waits: it reads the newest view when its turn comes
    queued = asyncio.create_task(take("pass-queued"))  # never covered by a refresh
    await asyncio.sleep(0)
    await take("pass-covered")  # a pass already waits: it reads the registry fresh
    release.set()
    await asyncio.gather(running, refresh, queued)
    assert got == [
        ("pass-running", True),
        ("refresh-covered", False),
        ("pass-covered", False),
        ("refresh-queued", False),  # a pass queued behind it covers it
        ("pass-queued", True),
    ]
    assert queue.held() == [] and not queue.busy(key)
    async with queue.refresh_turn(key) as mine:  # nothing queued: a refresh runs
        assert mine


async def test_a_pass_somebody_asked_for_gets_a_slot_before_the_timers_and_covers_later_ones() -> None:
    queue = turns.Turns(slots=1)
    release = asyncio.Event()
    order: list[str] = []

    async def take(name: str, *, urgent: bool) -> None:
        async with queue.pass_turn(("ns", name), urgent=urgent) as mine:
            order.append(f"{name}:{mine}")
            if name == "running":
                await release.wait()

    running = asyncio.create_task(take("running", urgent=True))
    await asyncio.sleep(0)
    timer = asyncio.create_task(take("timer", urgent=False))
    created = asyncio.create_task(take("created", urgent=True))
    await asyncio.sleep(0)
    assert queue.busy(("ns", "created"))  # waiting for a slot: the resync timer skips it
    await take("created", urgent=True)  # a pass that has not begun covers a later one
    release.set()
    await asyncio.gather(running, timer, created)
    assert order == ["running:True", "created:False", "created:True", "timer:True"]
