"""Node trust as one publisher, against the in-memory API.

Covers:
- a registry's pass does no node trust I/O: it never reads the operator's namespace or lists registries,
  and it completes while a publication is in progress (no lock on the registry path);
- before the first publication a pass reports NodeTrustReady False (Publishing); the publisher's round then
  passes that registry, which reports what was published;
- a steady-state round costs the same number of API calls for 3 registries as for 12 (O(N) work per
  resync, not O(N²)), writes nothing and starts no pass;
- a round starts passes only for registries whose view changed (an agent reporting one registry's CA);
- `submit` wakes the publisher task only when a registry's source changed;
- a round woken by a hand-in publishes from the sources in memory without listing the registries; only the
  first round after a restart (which reads registries no pass handed in yet, so the ConfigMap is never
  partial) and the periodic round (which drops a registry whose deletion was missed) list them;
- a burst of hand-ins is gathered into one round, and a steady stream of them cannot hold publication back;
- a round reads the ConfigMap, the DaemonSet, the agent's ServiceAccount and the agent Pods once each (the
  writer decides on those reads), whatever the number of registries.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
from typing import Any

from dockyard_operator import names, reconcile, settings
from dockyard_operator.nodetrust import builders, controller, layout, sources
from tests.operator import fakes

TRUST_NS = "dockyard-system"


class CountingKube(fakes.FakeKube):
    """The fake API, counting reads by (verb, kind, namespace) and able to hold registry lists."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[str, str, str | None]] = []
        self.hold_lists: asyncio.Event | None = None

    async def get(self, *, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append(("get", kind, namespace))
        return await super().get(api_version=api_version, kind=kind, namespace=namespace, name=name)

    async def list(self, **kwargs: Any) -> list[dict[str, Any]]:
        self.reads.append(("list", kwargs["kind"], kwargs.get("namespace")))
        if kwargs["kind"] == names.KIND and self.hold_lists is not None:
            await self.hold_lists.wait()
        return await super().list(**kwargs)


def setup(
    count: int, *, resync: float = 60.0, gather: float = controller.GATHER_SECONDS, gather_max: float = 2.0
) -> tuple[CountingKube, controller.NodeTrust, reconcile.Reconciler]:
    api = CountingKube()
    api.put(builders.service_account(namespace=TRUST_NS))
    for index in range(count):
        api.put(fakes.registry(name=f"r{index}", spec={"nodeTrust": {"enabled": True}}))
    trust = controller.NodeTrust(
        client=api,  # type: ignore[arg-type]
        namespace=TRUST_NS,
        image="agent:test",
        resync_seconds=resync,
        gather_seconds=gather,
        gather_max_seconds=gather_max,
    )
    reconciler = reconcile.Reconciler(
        client=api,  # type: ignore[arg-type]
        config=settings.Settings(bcrypt_rounds=4),
        clock=lambda: datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        node_trust=trust,
    )
    return api, trust, reconciler


def condition(api: fakes.FakeKube, name: str, type_: str) -> dict[str, Any]:
    conditions = (api.obj(names.KIND, name).get("status") or {}).get("conditions") or []
    return next(c for c in conditions if c["type"] == type_)


async def converge(trust: controller.NodeTrust, reconciler: reconcile.Reconciler, count: int) -> None:
    for index in range(count):
        await reconciler.reconcile(namespace="ns", name=f"r{index}")
    await trust.publish_round(on_change=reconciler.node_trust_changed)
    await trust.publish_round(on_change=reconciler.node_trust_changed)


async def test_a_pass_does_no_node_trust_io_and_reports_publishing_until_the_publisher_passes_it() -> None:
    api, trust, reconciler = setup(1)
    await reconciler.reconcile(namespace="ns", name="r0")
    assert not [r for r in api.reads if r[2] == TRUST_NS or r[1] == "Pod"]
    assert [r for r in api.reads if r[1] == names.KIND] == [("get", names.KIND, "ns")]
    waiting = condition(api, "r0", "NodeTrustReady")
    assert (waiting["status"], waiting["reason"]) == ("False", "Publishing")
    assert not api.has("ConfigMap", builders.NAME, TRUST_NS)

    passed: list[set[tuple[str, str]]] = []

    async def on_change(keys: set[tuple[str, str]]) -> None:
        passed.append(keys)
        await reconciler.node_trust_changed(keys)

    await trust.publish_round(on_change=on_change)
    assert passed == [{("ns", "r0")}]
    assert api.has("ConfigMap", builders.NAME, TRUST_NS)
    assert condition(api, "r0", "NodeTrustReady")["reason"] != "Publishing"
    assert api.obj(names.KIND, "r0")["status"]["nodeTrust"]["hosts"]


async def test_a_pass_completes_while_a_publication_is_in_progress() -> None:
    api, trust, reconciler = setup(2)
    await converge(trust, reconciler, 2)
    api.hold_lists = asyncio.Event()
    publishing = asyncio.create_task(trust.publish())
    await asyncio.sleep(0)
    assert not publishing.done()
    await asyncio.wait_for(reconciler.reconcile(namespace="ns", name="r1"), timeout=5)
    api.hold_lists.set()
    await publishing


async def steady_round_reads(count: int) -> int:
    api, trust, reconciler = setup(count)
    await converge(trust, reconciler, count)
    writes, reads = len(api.writes), len(api.reads)
    passed: list[set[tuple[str, str]]] = []

    async def on_change(keys: set[tuple[str, str]]) -> None:
        passed.append(keys)

    await trust.publish_round(on_change=on_change)
    assert api.writes[writes:] == [] and passed == []
    return len(api.reads) - reads


async def test_a_steady_round_costs_the_same_calls_for_few_and_many_registries() -> None:
    assert await steady_round_reads(3) == await steady_round_reads(12)


async def test_a_round_passes_only_the_registries_whose_view_changed() -> None:
    api, trust, reconciler = setup(2)
    await converge(trust, reconciler, 2)
    daemonset = api.obj("DaemonSet", builders.NAME, TRUST_NS)
    daemonset["status"] = {"desiredNumberScheduled": 1, "numberReady": 1, "updatedNumberScheduled": 1}
    await trust.publish_round(on_change=reconciler.node_trust_changed)  # node counts: everyone reads them
    view = trust.latest()
    assert view is not None
    registry_view = view.view("ns", "r0")
    assert registry_view is not None
    report = layout.Report(
        node="node-1", applied="v1", hosts={h: registry_view.fingerprints for h in registry_view.hosts}
    )
    api.put(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "agent-1",
                "namespace": TRUST_NS,
                "labels": dict(builders.SELECTOR),
                "annotations": {layout.REPORT_ANNOTATION: report.to_json()},
            },
        }
    )
    passed: list[set[tuple[str, str]]] = []

    async def on_change(keys: set[tuple[str, str]]) -> None:
        passed.append(keys)
        await reconciler.node_trust_changed(keys)

    await trust.publish_round(on_change=on_change)
    assert passed == [{("ns", "r0")}]
    assert condition(api, "r0", "NodeTrustReady")["status"] == "True"
    assert condition(api, "r1", "NodeTrustReady")["status"] == "False"


async def test_submit_wakes_the_publisher_only_for_a_changed_source() -> None:
    api, trust, reconciler = setup(1, resync=3600.0)  # only a submit can wake it within the test
    await converge(trust, reconciler, 1)
    rounds: list[set[tuple[str, str]]] = []
    published = asyncio.Event()
    real_publish = trust.publish

    async def counting_publish(**kwargs: Any) -> Any:
        result = await real_publish(**kwargs)
        published.set()
        return result

    trust.publish = counting_publish  # type: ignore[method-assign]

    async def on_change(keys: set[tuple[str, str]]) -> None:
        rounds.append(keys)

    task = asyncio.create_task(trust.run(on_change=on_change))
    try:
        await reconciler.reconcile(namespace="ns", name="r0")  # an unchanged source: nothing to publish
        await asyncio.sleep(0.05)
        assert not published.is_set()
        api.obj(names.KIND, "r0")["spec"]["nodeTrust"] = {"enabled": True, "hostnames": ["r0.example"]}
        await reconciler.reconcile(namespace="ns", name="r0")
        await asyncio.wait_for(published.wait(), timeout=5)
    finally:
        task.cancel()
    view = trust.latest()
    assert view is not None and view.view("ns", "r0") is not None


def registry_lists(api: CountingKube) -> int:
    return sum(1 for verb, kind, _ in api.reads if (verb, kind) == ("list", names.KIND))


def source_of(trust: controller.NodeTrust, name: str) -> sources.Source:
    latest = trust._sources[("ns", name)]  # the source its last pass handed in
    assert latest is not None
    return latest


def without_hosts(trust: controller.NodeTrust, name: str) -> None:
    """Hand in a changed source for registry `name` (as its pass would after a spec change): no hosts."""
    trust.submit(("ns", name), dataclasses.replace(source_of(trust, name), hosts=()))


def published(api: CountingKube) -> str:
    return json.dumps(api.obj("ConfigMap", builders.NAME, TRUST_NS)["data"])


class Rounds:
    """Runs the publisher task and counts its rounds."""

    def __init__(self, trust: controller.NodeTrust) -> None:
        self.count = 0
        self.done = asyncio.Event()
        real_publish = trust.publish

        async def counting_publish(**kwargs: Any) -> Any:
            result = await real_publish(**kwargs)
            self.count += 1
            self.done.set()
            return result

        trust.publish = counting_publish  # type: ignore[method-assign]

        async def on_change(keys: set[tuple[str, str]]) -> None:
            return None

        self.task = asyncio.create_task(trust.run(on_change=on_change))

    async def next(self) -> None:
        self.done.clear()
        await asyncio.wait_for(self.done.wait(), timeout=10)

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def test_a_woken_round_publishes_the_handed_in_sources_without_listing_the_registries() -> None:
    api, trust, reconciler = setup(3, resync=3600.0)
    await converge(trust, reconciler, 3)
    lists = registry_lists(api)
    assert "r1.ns.svc" in published(api)
    rounds = Rounds(trust)
    try:
        without_hosts(trust, "r1")
        await rounds.next()
    finally:
        await rounds.stop()
    assert registry_lists(api) == lists
    assert "r1.ns.svc" not in published(api) and "r0.ns.svc" in published(api)
    view = trust.latest()
    assert view is not None
    assert set(view.registries) == {("ns", "r0"), ("ns", "r1"), ("ns", "r2")}


async def test_the_first_round_after_a_restart_lists_and_reads_registries_no_pass_handed_in() -> None:
    api, trust, reconciler = setup(3, resync=3600.0)
    await converge(trust, reconciler, 3)
    restarted = controller.NodeTrust(
        client=api,  # type: ignore[arg-type]
        namespace=TRUST_NS,
        image="agent:test",
        resync_seconds=3600.0,
        gather_seconds=0.05,
    )
    before = published(api)
    lists = registry_lists(api)
    rounds = Rounds(restarted)
    try:
        restarted.submit(("ns", "r0"), source_of(trust, "r0"))  # only r0's pass ran since the restart
        await rounds.next()
    finally:
        await rounds.stop()
    assert registry_lists(api) == lists + 1
    assert published(api) == before  # r1 and r2 were read, not dropped


async def test_a_burst_of_hand_ins_is_one_round() -> None:
    api, trust, reconciler = setup(5, resync=3600.0, gather=0.5)  # far longer than the burst's loop turns
    await converge(trust, reconciler, 5)
    rounds = Rounds(trust)
    try:
        for index in range(5):
            without_hosts(trust, f"r{index}")
            await asyncio.sleep(0)  # the publisher task may run between two hand-ins
        await rounds.next()
        await asyncio.sleep(0.1)
    finally:
        await rounds.stop()
    assert rounds.count == 1
    assert not any(f"r{index}.ns.svc" in published(api) for index in range(5))


async def test_a_steady_stream_of_hand_ins_cannot_hold_publication_back() -> None:
    _, trust, reconciler = setup(1, resync=3600.0, gather=0.2, gather_max=0.5)
    await converge(trust, reconciler, 1)
    streaming = True
    original = source_of(trust, "r0")

    async def stream() -> None:
        index = 0
        while streaming:  # a changed source every time: with and without its hosts
            trust.submit(("ns", "r0"), original if index % 2 else dataclasses.replace(original, hosts=()))
            index += 1
            await asyncio.sleep(0.02)  # always within the quiet period: never quiet

    rounds = Rounds(trust)
    feeder = asyncio.create_task(stream())
    try:
        await rounds.next()  # published while the stream still runs
        assert not feeder.done()
    finally:
        streaming = False
        await feeder
        await rounds.stop()


async def test_the_periodic_round_lists_the_registries_and_drops_a_deleted_one() -> None:
    api, trust, reconciler = setup(2, resync=0.3)
    await converge(trust, reconciler, 2)
    lists = registry_lists(api)
    api.remove(names.KIND, "r1")  # its deletion was never handed in (the operator missed the event)
    rounds = Rounds(trust)
    try:
        await rounds.next()
    finally:
        await rounds.stop()
    assert registry_lists(api) == lists + 1
    view = trust.latest()
    assert view is not None and view.view("ns", "r1") is None and view.view("ns", "r0") is not None


async def test_a_round_reads_each_of_its_objects_once() -> None:
    api, trust, reconciler = setup(2)
    await converge(trust, reconciler, 2)
    without_hosts(trust, "r0")  # the round writes the ConfigMap: no second read for the write
    reads = len(api.reads)
    await trust.publish(full=False)
    assert sorted(api.reads[reads:]) == [
        ("get", "ConfigMap", TRUST_NS),
        ("get", "DaemonSet", TRUST_NS),
        ("get", "ServiceAccount", TRUST_NS),
        ("list", "Pod", TRUST_NS),
    ]
    reads = len(api.reads)
    # The periodic round adds one LIST of the registries, and one read of the node credentials Secret,
    # which it writes back should someone have changed or deleted it.
    await trust.publish()
    assert sorted(api.reads[reads:]) == [
        ("get", "ConfigMap", TRUST_NS),
        ("get", "DaemonSet", TRUST_NS),
        ("get", "Secret", TRUST_NS),
        ("get", "ServiceAccount", TRUST_NS),
        ("list", "Pod", TRUST_NS),
        ("list", names.KIND, None),
    ]
