"""The reconcile pass handing a registry's CA to node trust, against the in-memory API.

Each `run` is a pass followed by one round of node trust's publisher and the passes it starts, as the
publisher task does (tests/operator/test_nodetrust_publisher.py covers the publisher on its own).

Covers:
- a registry without node trust never touches the operator's namespace (no ConfigMap, no DaemonSet);
- node trust is on by default; an operator without node trust (no namespace) still makes such a registry
  Ready and reports `NodeTrustReady` False with reason NotConfigured;
- with `nodeTrust.enabled` the CA is published for the registry's hosts (the node trust ConfigMap and
  DaemonSet appear), reports `status.nodeTrust` and a `NodeTrustReady` condition that stays False until the
  agents report, and True once every node reports the CA for every host;
- switching node trust off withdraws the CA, removes `status.nodeTrust` (an explicit null in the patch) and
  the condition; deleting the registry withdraws it too, and deleting one that never used node trust does
  nothing;
- staged CA rotation (`dockyard.dev/rotate-ca`): the next CA is staged and published beside the current one,
  `ca.crt` carries both, the serving certificate switches only once every node trusts the next CA, the CA is
  promoted only once the Deployment serves the new certificate, the same request never rotates twice and a
  new one stages a fresh CA; without node trust, or when the request predates the CA, nothing rotates;
  the publisher's change alone (the agents reporting the next CA) moves a staged rotation on (a pass, not a
  status refresh);
- a staged next CA Secret that a pass did not see (an earlier create still in flight) is used, never replaced
  by a second next CA for the same request;
- a hostname the registry may not claim (a public registry, a name it does not serve) is left out of the
  ConfigMap and `status.nodeTrust.hosts`, and `NodeTrustReady` is False (HostRefused) naming it and why.
"""

from __future__ import annotations

import base64
import datetime
from typing import Any

import pytest

from dockyard_common import pki
from dockyard_operator import names, reconcile, settings
from dockyard_operator.nodetrust import builders, controller, layout
from tests.operator import fakes

TRUST_NS = "dockyard-system"
N = names.Names.of("demo")


@pytest.fixture
def api() -> fakes.FakeKube:
    kube = fakes.FakeKube()
    kube.put(builders.service_account(namespace=TRUST_NS))  # the agent's account, as the chart installs it
    return kube


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
    """A pass, then one round of node trust's publisher and the passes it starts (as its task would)."""
    await reconciler.reconcile(namespace="ns", name="demo")
    if reconciler.node_trust is not None:
        await reconciler.node_trust.publish_round(on_change=reconciler.node_trust_changed)


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
    api.put(fakes.registry(spec={"nodeTrust": {"enabled": False}}))
    await run(reconciler)
    assert [key for key in api.objects if key[1] == TRUST_NS] == [("ServiceAccount", TRUST_NS, builders.NAME)]
    assert "nodeTrust" not in status(api)
    assert condition(api, "NodeTrustReady") is None
    await reconciler.forget(body=api.obj(names.KIND, "demo"))
    assert [key for key in api.objects if key[1] == TRUST_NS] == [("ServiceAccount", TRUST_NS, builders.NAME)]


async def test_enabling_node_trust_publishes_the_ca_and_reports_until_nodes_trust_it(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    api.put(
        fakes.registry(
            spec={
                "tls": {"dnsNames": ["registry.example.com"]},
                "nodeTrust": {"enabled": True, "hostnames": ["registry.example.com:5000"]},
            }
        )
    )
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
    api.obj(names.KIND, "demo")["spec"] = {"nodeTrust": {"enabled": False}}
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


def _serve_nodes(api: fakes.FakeKube, fingerprints: list[str]) -> None:
    """One node whose agent reports `fingerprints` for every published host."""
    daemonset = api.obj("DaemonSet", builders.NAME, TRUST_NS)
    daemonset["status"] = {"desiredNumberScheduled": 1, "numberReady": 1, "updatedNumberScheduled": 1}
    hosts = status(api)["nodeTrust"]["hosts"]
    report = layout.Report(node="node-1", applied="v", hosts={h: tuple(fingerprints) for h in hosts})
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


def _tls(api: fakes.FakeKube) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in api.obj("Secret", N.tls_secret)["data"].items()}


def _rolled_out(api: fakes.FakeKube) -> None:
    deployment = api.obj("Deployment", N.deployment)
    deployment["status"] = {
        "observedGeneration": deployment["metadata"]["generation"],
        "replicas": 1,
        "updatedReplicas": 1,
        "availableReplicas": 1,
        "readyReplicas": 1,
    }


async def test_a_ca_rotation_is_staged_through_the_nodes_and_never_serves_an_untrusted_certificate(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    api.put(fakes.registry(spec={"nodeTrust": {"enabled": True}}))
    await run(reconciler)
    old_pem = _ca_pem(api)
    old_fp = layout.fingerprint(old_pem)
    _serve_nodes(api, [old_fp])
    _rolled_out(api)
    await run(reconciler)
    assert condition(api, "NodeTrustReady")["status"] == "True"  # type: ignore[index]

    api.obj(names.KIND, "demo")["metadata"]["annotations"] = {"dockyard.dev/rotate-ca": "r1"}
    await run(reconciler)  # stages the next CA
    next_name = builders.next_ca_name("demo")
    assert api.has("Secret", next_name)
    new_pem = base64.b64decode(api.obj("Secret", next_name)["data"]["ca.crt"]).decode()
    new_fp = layout.fingerprint(new_pem)
    assert pki.inspect(new_pem.encode()).permitted is not None, "a staged CA has name constraints too"
    await run(reconciler)  # node trust publishes both
    assert layout.fingerprints(_tls(api)["ca.crt"].decode()) == [old_fp, new_fp]  # clients may trust either
    assert pki.signed_by(cert_pem=_tls(api)["tls.crt"], ca_pem=old_pem.encode())  # nodes lack the new CA
    await run(reconciler)
    assert pki.signed_by(cert_pem=_tls(api)["tls.crt"], ca_pem=old_pem.encode())

    _serve_nodes(api, [old_fp, new_fp])  # every node now trusts both
    for _ in range(2):
        await run(reconciler)
    assert pki.signed_by(cert_pem=_tls(api)["tls.crt"], ca_pem=new_pem.encode())  # switched
    assert _ca_pem(api) == old_pem  # not promoted before the pods serve the new certificate

    _rolled_out(api)
    for _ in range(3):
        await run(reconciler)
    assert _ca_pem(api) == new_pem  # promoted; the staged Secret now holds the same CA: no rotation
    assert base64.b64decode(api.obj("Secret", next_name)["data"]["ca.crt"]).decode() == new_pem
    assert layout.fingerprints(_tls(api)["ca.crt"].decode()) == [new_fp]
    assert api.obj("Secret", N.ca_secret)["metadata"]["annotations"]["dockyard.dev/rotate-ca"] == "r1"
    writes = len(api.child_writes())
    await run(reconciler)
    assert api.child_writes()[writes:] == []  # the same request does not rotate again

    api.obj(names.KIND, "demo")["metadata"]["annotations"] = {"dockyard.dev/rotate-ca": "r2"}
    await run(reconciler)  # a new request stages a fresh CA in the same Secret
    staged = base64.b64decode(api.obj("Secret", next_name)["data"]["ca.crt"]).decode()
    assert staged not in (old_pem, new_pem)
    assert layout.fingerprints(_tls(api)["ca.crt"].decode())[0] == new_fp


async def test_a_staged_rotation_moves_on_when_the_nodes_report_it_without_any_other_trigger(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    """The agents' reports reach the operator only through node trust's publisher: during a rotation its
    change brings a pass (a status refresh would leave the serving certificate as it is)."""
    api.put(fakes.registry(spec={"nodeTrust": {"enabled": True}}))
    await run(reconciler)
    old_pem = _ca_pem(api)
    _serve_nodes(api, [layout.fingerprint(old_pem)])
    await run(reconciler)
    api.obj(names.KIND, "demo")["metadata"]["annotations"] = {"dockyard.dev/rotate-ca": "r1"}
    await run(reconciler)  # stages the next CA; the publisher's round publishes both
    new_pem = base64.b64decode(api.obj("Secret", builders.next_ca_name("demo"))["data"]["ca.crt"]).decode()
    assert pki.signed_by(cert_pem=_tls(api)["tls.crt"], ca_pem=old_pem.encode())
    _serve_nodes(api, [layout.fingerprint(old_pem), layout.fingerprint(new_pem)])
    assert reconciler.node_trust is not None
    await reconciler.node_trust.publish_round(on_change=reconciler.node_trust_changed)  # no pass of ours
    assert pki.signed_by(cert_pem=_tls(api)["tls.crt"], ca_pem=new_pem.encode())  # switched


async def test_a_staged_ca_that_an_earlier_attempt_created_unseen_is_used_and_never_replaced(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.put(fakes.registry(spec={"nodeTrust": {"enabled": True}}))
    await run(reconciler)
    api.obj(names.KIND, "demo")["metadata"]["annotations"] = {"dockyard.dev/rotate-ca": "r1"}
    await run(reconciler)  # stages the next CA
    next_name = builders.next_ca_name("demo")
    first = api.obj("Secret", next_name)["data"]["ca.crt"]

    # The next pass does not see the staged Secret (an earlier create whose answer was lost, still in
    # flight at the API server when this pass read), so it creates its own and meets AlreadyExists.
    real_get = api.get
    hidden = {"once": True}

    async def get(**ref: Any) -> dict[str, Any] | None:
        if ref["kind"] == "Secret" and ref["name"] == next_name and hidden.pop("once", False):
            return None
        return await real_get(**ref)

    monkeypatch.setattr(api, "get", get)
    await run(reconciler)
    assert not hidden  # the staged Secret was hidden from this pass
    assert api.obj("Secret", next_name)["data"]["ca.crt"] == first  # one request, one next CA
    await run(reconciler)
    assert api.obj("Secret", next_name)["data"]["ca.crt"] == first
    first_pem = base64.b64decode(first).decode()
    assert layout.fingerprints(_tls(api)["ca.crt"].decode())[1] == layout.fingerprint(first_pem)


async def test_the_default_node_trust_without_a_node_trust_operator_is_reported_not_configured(
    api: fakes.FakeKube,
) -> None:
    plain = reconcile.Reconciler(
        client=api,  # type: ignore[arg-type]
        config=settings.Settings(bcrypt_rounds=4),
        clock=lambda: datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    )
    api.put(fakes.registry())
    await plain.reconcile(namespace="ns", name="demo")
    trust = condition(api, "NodeTrustReady")
    assert trust is not None and trust["status"] == "False" and trust["reason"] == "NotConfigured"
    assert "not configured for this operator" in trust["message"]
    assert [key for key in api.objects if key[1] == TRUST_NS] == [("ServiceAccount", TRUST_NS, builders.NAME)]
    deployment = api.obj("Deployment", N.deployment)
    deployment["status"] = {
        "observedGeneration": deployment["metadata"]["generation"],
        "availableReplicas": 1,
        "readyReplicas": 1,
        "updatedReplicas": 1,
    }
    await plain.reconcile(namespace="ns", name="demo")
    ready = condition(api, "Ready")
    assert ready is not None and ready["status"] == "True", ready


async def test_a_rotation_request_waits_without_node_trust(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    api.put(fakes.registry(spec={"nodeTrust": {"enabled": False}}))
    await run(reconciler)
    old = _ca_pem(api)
    api.obj(names.KIND, "demo")["metadata"]["annotations"] = {"dockyard.dev/rotate-ca": "r1"}
    await run(reconciler)
    assert _ca_pem(api) == old and not api.has("Secret", builders.next_ca_name("demo"))


async def test_a_rotation_requested_before_the_ca_existed_is_satisfied_by_it(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    body = fakes.registry(spec={"nodeTrust": {"enabled": True}})
    body["metadata"]["annotations"] = {"dockyard.dev/rotate-ca": "r0"}
    api.put(body)
    await run(reconciler)
    await run(reconciler)
    assert not api.has("Secret", builders.next_ca_name("demo"))


async def test_a_refused_hostname_is_not_published_and_node_trust_ready_names_it(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    api.put(
        fakes.registry(spec={"nodeTrust": {"enabled": True, "hostnames": ["docker.io", "elsewhere.example"]}})
    )
    await run(reconciler)

    assert set(layout.decode(published(api)).hosts) == {"demo.ns.svc.cluster.local"}
    assert status(api)["nodeTrust"]["hosts"] == ["demo.ns.svc.cluster.local"]
    refused = condition(api, "NodeTrustReady")
    assert refused is not None and (refused["status"], refused["reason"]) == ("False", "HostRefused")
    assert "docker.io" in refused["message"] and "public registry" in refused["message"]
    assert "elsewhere.example" in refused["message"] and "spec.tls.dnsNames" in refused["message"]
