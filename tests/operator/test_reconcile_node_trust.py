"""The reconcile pass handing a registry's CA to node trust, against the in-memory API.

Covers:
- a registry without node trust never touches the operator's namespace (no ConfigMap, no DaemonSet);
- with `nodeTrust.enabled` the pass publishes the CA for the registry's hosts (the node trust ConfigMap and
  DaemonSet appear), reports `status.nodeTrust` and a `NodeTrustReady` condition that stays False until the
  agents report, and True once every node reports the CA for every host;
- switching node trust off withdraws the CA, removes `status.nodeTrust` (an explicit null in the patch) and
  the condition; deleting the registry withdraws it too, and deleting one that never used node trust does
  nothing.
"""

from __future__ import annotations

import base64
import datetime
from typing import Any

import pytest

from dockyard_operator import names, reconcile, settings
from dockyard_operator.nodetrust import builders, controller, layout
from tests.operator import fakes

TRUST_NS = "dockyard-system"
N = names.Names.of("demo")


@pytest.fixture
def api() -> fakes.FakeKube:
    return fakes.FakeKube()


@pytest.fixture
def reconciler(api: fakes.FakeKube) -> reconcile.Reconciler:
    trust = controller.NodeTrust(client=api, namespace=TRUST_NS, image="agent:test")  # type: ignore[arg-type]
    return reconcile.Reconciler(
        client=api,  # type: ignore[arg-type]
        config=settings.Settings(bcrypt_rounds=4),
        clock=lambda: datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        node_trust=trust,
    )


async def run(reconciler: reconcile.Reconciler) -> None:
    await reconciler.reconcile(namespace="ns", name="demo")


def status(api: fakes.FakeKube) -> dict[str, Any]:
    return dict(api.obj(names.KIND, "demo").get("status") or {})


def condition(api: fakes.FakeKube, type_: str) -> dict[str, Any] | None:
    return next((c for c in status(api).get("conditions", []) if c["type"] == type_), None)


def published(api: fakes.FakeKube) -> dict[str, str]:
    return dict(api.obj("ConfigMap", builders.NAME, TRUST_NS).get("data") or {})


def _ca_pem(api: fakes.FakeKube) -> str:
    return base64.b64decode(api.obj("Secret", N.ca_secret)["data"]["ca.crt"]).decode()


async def test_a_registry_without_node_trust_leaves_the_operator_namespace_alone(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    api.put(fakes.registry())
    await run(reconciler)
    assert not any(ns == TRUST_NS for _, ns, _ in api.objects)
    assert "nodeTrust" not in status(api)
    assert condition(api, "NodeTrustReady") is None
    await reconciler.forget(body=api.obj(names.KIND, "demo"))
    assert not any(ns == TRUST_NS for _, ns, _ in api.objects)


async def test_enabling_node_trust_publishes_the_ca_and_reports_until_nodes_trust_it(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    api.put(fakes.registry(spec={"nodeTrust": {"enabled": True, "hostnames": ["registry.example.com:5000"]}}))
    await run(reconciler)
    assert api.has("DaemonSet", builders.NAME, TRUST_NS)
    assert _ca_pem(api).strip() in "\n".join(published(api).values())
    trust = status(api)["nodeTrust"]
    assert "registry.example.com:5000" in trust["hosts"] and "demo.ns.svc.cluster.local" in trust["hosts"]
    assert trust["desired"] == 0 and trust["caFingerprintOnNodes"] == []
    not_yet = condition(api, "NodeTrustReady")
    assert not_yet is not None and not_yet["status"] == "False"

    # One node runs the agent and reports the CA for every host.
    daemonset = api.obj("DaemonSet", builders.NAME, TRUST_NS)
    daemonset["status"] = {"desiredNumberScheduled": 1, "numberReady": 1, "updatedNumberScheduled": 1}
    fingerprint = layout.fingerprint(_ca_pem(api))
    report = layout.Report(
        node="node-1", applied="v1", hosts={host: (fingerprint,) for host in trust["hosts"]}
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
    await run(reconciler)
    ready = condition(api, "NodeTrustReady")
    assert ready is not None and ready["status"] == "True", ready
    assert status(api)["nodeTrust"]["caFingerprintOnNodes"] == [fingerprint]
    assert status(api)["nodeTrust"]["trusting"] == 1


async def test_switching_node_trust_off_withdraws_the_ca_and_clears_the_status(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    api.put(fakes.registry(spec={"nodeTrust": {"enabled": True}}))
    await run(reconciler)
    assert published(api)
    api.obj(names.KIND, "demo")["spec"] = {}
    await run(reconciler)
    assert not any(v.strip() for k, v in published(api).items() if not k.startswith("_"))
    assert api.status_patches[-1]["nodeTrust"] is None
    assert condition(api, "NodeTrustReady") is None


async def test_deleting_a_registry_withdraws_its_ca_from_the_nodes(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    api.put(fakes.registry(spec={"nodeTrust": {"enabled": True}}))
    await run(reconciler)
    body = api.obj(names.KIND, "demo")
    api.remove(names.KIND, "demo")
    await reconciler.forget(body=body)
    assert not any(v.strip() for k, v in published(api).items() if not k.startswith("_"))
