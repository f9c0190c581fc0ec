"""The node trust controller against an in-memory API: what it publishes and what it reports per registry.

Covers:
- sources: hosts from the spec and the live Service (allocated node port), the CA that signed the serving
  certificate, `rolled_out` from Deployment status;
- sync publishes one ConfigMap (every enabled registry's hosts) and the DaemonSet in the operator's namespace,
  writes nothing when nothing changed, drops a deleted registry's hosts (also one marked for deletion) and
  reads a registry it has no source for (after a restart) instead of publishing a partial ConfigMap;
  `forget` publishes without a registry whose deletion is running; the last plan per registry is kept;
- node reports on the agent Pods are counted (a broken one ignored); a staged next CA is published beside
  the current one while a node has not reported it;
- a missing namespace is an error in the observation, not an exception;
- the ConfigMap and DaemonSet are owned by the agent's ServiceAccount (the chart's), so uninstalling the chart
  removes them; without that account nothing is published and the observation names it;
- hijacking: a tenant's registry listing public registry hosts or another team's Service name publishes
  none of them (NodeTrustReady HostRefused names each) and the team keeps its host; the operator's allowed
  hosts add names a registry does not serve but never a public host by wildcard; a published host stays with
  its owner (recorded on the ConfigMap) across restarts even when an older registry claims it later, and the
  later claimant's view leaves the host out (a rotation never waits for it); a bring-your-own certificate
  serves the names it carries.
"""

from __future__ import annotations

import base64
import copy
import datetime
from collections.abc import Mapping
from typing import Any

from dockyard_common import pki
from dockyard_operator import kube, model, names
from dockyard_operator.nodetrust import builders, claims, controller, layout, rotation, sources

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
OP_NS = "dockyard-system"


def keypair(name: str) -> pki.KeyPair:
    return pki.new_ca(common_name=name, now=NOW, duration=datetime.timedelta(days=30))


CA = keypair("current")
NEXT = keypair("next")
SERVER = pki.issue_server_cert(
    ca=CA, common_name="demo", dns_names=["localhost"], ip_addresses=[], now=NOW,
    duration=datetime.timedelta(days=1),
)  # fmt: skip


class FakeApi:
    """Stores dicts by (kind, namespace, name); records writes; namespaces can be missing."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.writes: list[tuple[str, str]] = []
        self.missing_namespaces: set[str] = set()

    def put(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self.objects[(obj["kind"], meta.get("namespace", ""), meta["name"])] = copy.deepcopy(obj)

    async def get(self, *, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found else None

    async def list(
        self,
        *,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(o)
            for (k, ns, _), o in sorted(self.objects.items())
            if k == kind
            and (namespace is None or ns == namespace)
            and (labels or {}).items() <= (o["metadata"].get("labels") or {}).items()
        ]

    async def create(self, *, manifest: Mapping[str, Any]) -> dict[str, Any]:
        if manifest["metadata"]["namespace"] in self.missing_namespaces:
            raise kube.NotFound(f"namespaces {manifest['metadata']['namespace']} not found", status=404)
        self.writes.append(("create", manifest["kind"]))
        self.put(dict(manifest))
        return dict(manifest)

    async def apply(self, *, manifest: Mapping[str, Any], force: bool = False) -> dict[str, Any]:
        meta = manifest["metadata"]
        if meta["namespace"] in self.missing_namespaces:
            raise kube.NotFound(f"namespaces {meta['namespace']} not found", status=404)
        if (manifest["kind"], meta["namespace"], meta["name"]) not in self.objects:
            return await self.create(manifest=manifest)
        return await self.replace(manifest=manifest)

    async def delete(self, *, api_version: str, kind: str, namespace: str, name: str) -> None:
        self.writes.append(("delete", kind))
        self.objects.pop((kind, namespace, name), None)

    async def replace(self, *, manifest: Mapping[str, Any]) -> dict[str, Any]:
        self.writes.append(("replace", manifest["kind"]))
        meta = manifest["metadata"]
        live = self.objects.get((manifest["kind"], meta["namespace"], meta["name"])) or {}
        stored = {**manifest, **({"status": live["status"]} if "status" in live else {})}  # status is kept
        self.put(stored)
        return stored


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def add_registry(
    api: FakeApi,
    name: str,
    *,
    spec: dict[str, Any],
    node_port: int | None = None,
    namespace: str = "team",
    created: str | None = None,
) -> None:
    meta = {"name": name, "namespace": namespace, **({"creationTimestamp": created} if created else {})}
    api.put({"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": meta, "spec": spec})
    n = names.Names.of(name)
    api.put({"kind": "Secret", "metadata": {"name": n.ca_secret, "namespace": namespace},
             "data": {"ca.crt": b64(CA.cert_pem), "ca.key": b64(CA.key_pem)}})  # fmt: skip
    api.put({"kind": "Secret", "metadata": {"name": n.tls_secret, "namespace": namespace},
             "data": {"ca.crt": b64(CA.cert_pem), "tls.crt": b64(SERVER.cert_pem)}})  # fmt: skip
    ports = [{"name": "https", "port": 443, **({"nodePort": node_port} if node_port else {})}]
    api.put({"kind": "Service", "metadata": {"name": n.service, "namespace": namespace},
             "spec": {"type": spec.get("expose", {}).get("type", "ClusterIP"), "ports": ports}})  # fmt: skip


AGENT_ACCOUNT_UID = "4f7e1c3a-0000-4000-8000-00000000a9e7"


def trust(api: FakeApi, *, agent_account: bool = True, allowed: tuple[str, ...] = ()) -> controller.NodeTrust:
    """The controller, with the agent's ServiceAccount the chart installs (none when not `agent_account`)."""
    if agent_account and ("ServiceAccount", OP_NS, builders.NAME) not in api.objects:
        account = builders.service_account(namespace=OP_NS)
        account["metadata"]["uid"] = AGENT_ACCOUNT_UID
        api.put(account)
    return controller.NodeTrust(client=api, namespace=OP_NS, image="operator:test", allowed_hosts=allowed)


def published(api: FakeApi) -> layout.Desired:
    return layout.decode(api.objects[("ConfigMap", OP_NS, builders.NAME)]["data"])


NODEPORT = {
    "expose": {"type": "NodePort"},
    "tls": {"dnsNames": ["reg.example"]},
    "nodeTrust": {"enabled": True, "hostnames": ["reg.example"]},
}


def extra_host(host: str) -> dict[str, Any]:
    """A ClusterIP registry that serves `host` too (in its certificate) and asks nodes to trust it."""
    return {"tls": {"dnsNames": [host]}, "nodeTrust": {"enabled": True, "hostnames": [host]}}


async def test_sync_publishes_every_enabled_registrys_hosts_and_the_daemonset() -> None:
    api = FakeApi()
    add_registry(api, "demo", spec=NODEPORT, node_port=30500)
    add_registry(api, "off", spec={"nodeTrust": {"enabled": False}})

    observation = await trust(api).publish()

    hosts = published(api).hosts
    assert set(hosts) == {"demo.team.svc.cluster.local", "localhost:30500", "127.0.0.1:30500", "reg.example"}
    assert layout.fingerprints(hosts["localhost:30500"][0]) == [pki.inspect(CA.cert_pem).fingerprint_sha256]
    assert ("DaemonSet", OP_NS, builders.NAME) in api.objects
    view = observation.view("team", "demo")
    assert view is not None and view.plan is not None and view.plan.phase is rotation.Phase.STABLE
    assert observation.view("team", "off") is None and observation.error is None


async def test_a_second_sync_without_changes_writes_nothing() -> None:
    api = FakeApi()
    add_registry(api, "demo", spec=NODEPORT, node_port=30500)
    nt = trust(api)
    await nt.publish()
    before = list(api.writes)

    await nt.publish()

    assert api.writes == before


async def test_a_deleted_or_deleting_registry_leaves_the_configmap() -> None:
    api = FakeApi()
    add_registry(api, "demo", spec=NODEPORT, node_port=30500)
    add_registry(api, "going", spec=extra_host("going.example"))
    nt = trust(api)
    await nt.publish()
    api.objects[(names.KIND, "team", "going")]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    del api.objects[(names.KIND, "team", "demo")]

    await nt.publish()

    assert published(api).hosts == {}


async def test_a_handed_in_source_wins_over_what_is_read_and_unknown_registries_are_read() -> None:
    api = FakeApi()
    add_registry(api, "demo", spec=NODEPORT, node_port=30500)
    add_registry(api, "other", spec=extra_host("other.example"))
    spec = model.parse_spec(NODEPORT)
    src = sources.source(
        spec=spec, name="demo", namespace="team", service=None, current_pem=CA.cert_pem.decode(),
        next_pem=NEXT.cert_pem.decode(), server_cert_pem=SERVER.cert_pem.decode(),
        cluster_domain="cluster.local",
    )  # fmt: skip
    ds = builders.daemonset(namespace=OP_NS, image="operator:test")
    ds["status"] = {"desiredNumberScheduled": 1}  # one node, which has not reported the next CA
    api.put(ds)

    nt = trust(api)
    nt.submit(("team", "demo"), src)
    observation = await nt.publish()

    hosts = published(api).hosts
    assert "other.example" in hosts, "a registry without a handed-in source is read, not dropped"
    assert "localhost:30500" not in hosts, "the handed-in source (no Service yet) is what counts"
    view = observation.view("team", "demo")
    assert view is not None and view.plan is not None and view.plan.phase is rotation.Phase.PUBLISHING
    assert layout.fingerprints(hosts["reg.example"][0]) == [
        pki.inspect(CA.cert_pem).fingerprint_sha256,
        pki.inspect(NEXT.cert_pem).fingerprint_sha256,
    ]


async def test_agent_reports_and_daemonset_counts_are_observed() -> None:
    api = FakeApi()
    ds = builders.daemonset(namespace=OP_NS, image="x")
    ds["status"] = {"desiredNumberScheduled": 2, "numberReady": 1, "updatedNumberScheduled": 2}
    api.put(ds)
    report = layout.Report(node="n1", applied="a", hosts={"h": ("FP",)})
    for name, notes in (("a", {layout.REPORT_ANNOTATION: report.to_json()}), ("b", {}),
                        ("c", {layout.REPORT_ANNOTATION: "{broken"})):  # fmt: skip
        meta = {"name": name, "namespace": OP_NS, "labels": dict(builders.LABELS), "annotations": notes}
        api.put({"kind": "Pod", "metadata": meta})

    nodes = await trust(api).observe()

    assert (nodes.desired, nodes.ready, nodes.updated) == (2, 1, 2)
    assert nodes.reports == [report]


async def test_a_missing_namespace_is_reported_not_raised() -> None:
    api = FakeApi()
    api.missing_namespaces.add(OP_NS)
    add_registry(api, "demo", spec=NODEPORT, node_port=30500)

    observation = await trust(api).publish()

    assert observation.error is not None and "not found" in observation.error
    assert observation.view("team", "demo") is not None


def test_rolled_out_needs_every_replica_updated_and_available() -> None:
    def deployment(**status: int) -> dict[str, Any]:
        return {
            "metadata": {"generation": 2},
            "spec": {"replicas": 1},
            "status": {"observedGeneration": 2, **status},
        }

    assert sources.rolled_out(deployment(updatedReplicas=1, replicas=1, availableReplicas=1))
    assert not sources.rolled_out(deployment(updatedReplicas=1, replicas=2, availableReplicas=1))
    assert not sources.rolled_out(deployment(updatedReplicas=1, replicas=1, availableReplicas=0))
    assert not sources.rolled_out(None)


async def test_forget_publishes_without_a_registry_being_deleted_and_plans_are_remembered() -> None:
    api = FakeApi()
    add_registry(api, "demo", spec=NODEPORT, node_port=30500)
    nt = trust(api)
    assert nt.plan_for("team", "demo") is None
    await nt.publish()
    plan = nt.plan_for("team", "demo")

    await nt.forget("team", "demo")  # still listed (finalizers run before it disappears)

    assert plan is not None and plan.phase is rotation.Phase.STABLE
    assert published(api).hosts == {}
    assert nt.plan_for("team", "demo") is None


async def test_the_verdict_names_publish_failures_host_conflicts_and_counts_trusting_nodes() -> None:
    api = FakeApi()
    add_registry(api, "a", spec=NODEPORT, node_port=30500)
    add_registry(api, "b", spec=extra_host("reg.example"))
    ds = builders.daemonset(namespace=OP_NS, image="operator:test")
    ds["status"] = {"desiredNumberScheduled": 1}
    api.put(ds)
    nt = trust(api)
    first = await nt.publish()
    hosts = first.registries[("team", "a")].hosts
    fp = pki.inspect(CA.cert_pem).fingerprint_sha256
    report = layout.Report(node="n1", applied="x", hosts={h: (fp,) for h in hosts})
    notes = {layout.REPORT_ANNOTATION: report.to_json()}
    meta = {"name": "agent", "namespace": OP_NS, "labels": dict(builders.LABELS), "annotations": notes}
    api.put({"kind": "Pod", "metadata": meta})

    second = await nt.publish()
    api.missing_namespaces.add(OP_NS)
    del api.objects[("ConfigMap", OP_NS, builders.NAME)]
    third = await nt.publish()

    a, b = second.verdict("team", "a"), second.verdict("team", "b")
    assert a is not None and (a.ok, a.reason) == (True, "Installed") and second.trusted("team", "a") == 1
    assert b is not None and (b.ok, b.reason) == (False, "HostConflict") and "reg.example" in b.message
    assert "team/a" in b.message
    assert second.verdict("team", "unknown") is None
    failed = third.verdict("team", "a")
    assert failed is not None and failed.reason == "PublishFailed"


async def test_published_children_are_owned_by_the_agents_service_account() -> None:
    api = FakeApi()
    add_registry(api, "demo", spec=NODEPORT, node_port=30500)

    await trust(api).publish()

    for kind in ("ConfigMap", "DaemonSet"):
        refs = api.objects[(kind, OP_NS, builders.NAME)]["metadata"]["ownerReferences"]
        assert [(r["kind"], r["name"], r["uid"]) for r in refs] == [
            ("ServiceAccount", builders.NAME, AGENT_ACCOUNT_UID)
        ]


async def test_without_the_agents_service_account_nothing_is_published_and_the_error_names_it() -> None:
    api = FakeApi()
    add_registry(api, "demo", spec=NODEPORT, node_port=30500)

    observation = await trust(api, agent_account=False).publish()

    assert ("ConfigMap", OP_NS, builders.NAME) not in api.objects
    assert ("DaemonSet", OP_NS, builders.NAME) not in api.objects
    assert observation.error is not None
    assert f"{OP_NS}/{builders.NAME}" in observation.error and "nodeTrust.enabled" in observation.error


async def test_a_tenant_cannot_take_public_hosts_or_another_teams_service_name() -> None:
    api = FakeApi()
    add_registry(api, "registry", namespace="team-b", spec={"nodeTrust": {"enabled": True}},
                 created="2026-02-01T00:00:00Z")  # fmt: skip
    stolen = ["docker.io", "registry.k8s.io", "ghcr.io", "registry.team-b.svc.cluster.local"]
    greedy = {"tls": {"dnsNames": stolen}, "nodeTrust": {"enabled": True, "hostnames": stolen}}
    add_registry(api, "x", namespace="aaa-tenant", created="2026-01-01T00:00:00Z", spec=greedy)

    observation = await trust(api).publish()

    hosts = published(api).hosts
    assert set(hosts) == {"registry.team-b.svc.cluster.local", "x.aaa-tenant.svc.cluster.local"}
    assert observation.registries[("team-b", "registry")].hosts == ("registry.team-b.svc.cluster.local",)
    team_b = observation.verdict("team-b", "registry")
    assert team_b is not None and team_b.reason != "HostConflict"
    tenant = observation.verdict("aaa-tenant", "x")
    assert tenant is not None and (tenant.ok, tenant.reason) == (False, "HostRefused")
    for host in stolen:
        assert host in tenant.message
    assert observation.registries[("aaa-tenant", "x")].hosts == ("x.aaa-tenant.svc.cluster.local",)


async def test_allowed_hosts_let_a_registry_publish_names_it_does_not_serve_but_not_public_ones() -> None:
    api = FakeApi()
    hostnames = ["mirror.corp.example:5000", "quay.io"]
    add_registry(api, "demo", spec={"nodeTrust": {"enabled": True, "hostnames": hostnames}})

    observation = await trust(api, allowed=("*.corp.example", "*")).publish()

    assert "mirror.corp.example:5000" in published(api).hosts and "quay.io" not in published(api).hosts
    verdict = observation.verdict("team", "demo")
    assert verdict is not None and verdict.reason == "HostRefused" and "quay.io" in verdict.message


async def test_a_published_host_stays_with_its_owner_across_restarts_even_against_an_older_registry() -> None:
    api = FakeApi()
    add_registry(api, "young", spec=extra_host("shared.example"), created="2026-03-01T00:00:00Z")
    add_registry(api, "old", spec={"tls": {"dnsNames": ["shared.example"]}, "nodeTrust": {"enabled": True}},
                 created="2026-01-01T00:00:00Z")  # fmt: skip
    await trust(api).publish()
    assert published(api).hosts["shared.example"]
    api.objects[(names.KIND, "team", "old")]["spec"] = extra_host("shared.example")  # claims it later

    observation = await trust(api).publish()  # a restarted operator: the owner comes from the ConfigMap

    owners = builders.owners_of(api.objects[("ConfigMap", OP_NS, builders.NAME)])
    assert owners["shared.example"] == ("team", "young")
    old = observation.verdict("team", "old")
    assert old is not None and old.reason == "HostConflict" and "team/young" in old.message
    assert "shared.example" not in observation.registries[("team", "old")].hosts, (
        "rotation waits for held hosts"
    )


def test_a_bring_your_own_certificate_serves_the_names_it_carries() -> None:
    spec = model.parse_spec(
        {
            "tls": {"mode": "Secret", "secretName": "mine"},
            "nodeTrust": {"hostnames": ["localhost:5000", "x.example"]},
        }
    )
    mine = pki.issue_server_cert(
        ca=CA,
        common_name="x",
        dns_names=["x.example"],
        ip_addresses=[],
        now=NOW,
        duration=datetime.timedelta(days=1),
    )

    src = sources.source(
        spec=spec, name="demo", namespace="team", service=None, current_pem=CA.cert_pem.decode(),
        next_pem=None, server_cert_pem=mine.cert_pem.decode(), cluster_domain="cluster.local",
    )  # fmt: skip

    assert "x.example" in src.served.names
    accepted, refused = claims.screen(src.hosts, served=src.served)
    assert "x.example" in accepted and [r.reason for r in refused] == ["NotOwnNodePort"]
