"""Node trust as one publisher, against the in-memory API.

Covers:
- a registry's pass does no node trust I/O: it never reads the operator's namespace or lists registries,
  and it completes while a publication is in progress (no lock on the registry path);
- before the first publication a pass reports NodeTrustReady False (Publishing); the publisher's round then
  passes that registry, which reports what was published;
- a steady-state round costs the same number of API calls for 3 registries as for 12 (O(N) work per
  resync, not O(N²)), writes nothing and starts no pass;
- a round starts passes only for registries whose view changed (an agent reporting one registry's CA);
- `submit` wakes the publisher task only when a registry's source changed.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

from dockyard_operator import names, reconcile, settings
from dockyard_operator.nodetrust import builders, controller, layout
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
    count: int, *, resync: float = 60.0
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

    async def counting_publish() -> Any:
        result = await real_publish()
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
