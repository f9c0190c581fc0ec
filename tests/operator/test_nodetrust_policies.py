"""Node trust's pure policies: default hosts, aggregation of registries, staged CA rotation, readiness.

Covers:
- default hosts per expose mode (ClusterIP: the FQDN only; NodePort: localhost/127.0.0.1 with the node port;
  LoadBalancer: plus its addresses; Ingress: its host), `nodeTrust.hostnames` appended, no duplicates;
- aggregation is deterministic, narrows targets, and gives a host claimed twice to the registry that holds
  it already while it still claims it, else to the oldest (creationTimestamp; unknown last; then namespace and
  name), telling the other with reason HostConflict and the owner; unusable hosts and CAs are problems, not
  ConfigMap entries;
- rotation: STABLE without a next CA; PUBLISHING (both CAs, server unchanged) until every node reports the
  next CA for every host; SWITCHING (serve from the next CA) once they do; RETIRING (publish only the next,
  promote) once the certificate is signed by it and every pod serves it; a node missing one host holds the
  rotation back;
- readiness: no hosts, no nodes, partial installation and full installation, with counts in the message.
"""

from __future__ import annotations

import datetime
import json

from dockyard_common import pki
from dockyard_operator.nodetrust import aggregate, layout, rotation

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def ca_pem(name: str) -> str:
    return pki.new_ca(common_name=name, now=NOW, duration=datetime.timedelta(days=30)).cert_pem.decode()


OLD = ca_pem("old")
NEW = ca_pem("new")
FP_OLD, FP_NEW = layout.fingerprint(OLD), layout.fingerprint(NEW)
HOSTS = ["localhost:30500", "127.0.0.1:30500"]


def exposure(**overrides: object) -> aggregate.Exposure:
    values: dict[str, object] = {"service": "demo", "namespace": "team"}
    values.update(overrides)
    return aggregate.Exposure(**values)  # type: ignore[arg-type]


def test_a_clusterip_registry_defaults_to_its_service_fqdn_only() -> None:
    assert aggregate.default_hosts(exposure()) == ["demo.team.svc.cluster.local"]


def test_a_nodeport_registry_adds_the_loopback_forms_of_its_node_port() -> None:
    hosts = aggregate.default_hosts(exposure(service_type="NodePort", node_port=30500))

    assert hosts == ["demo.team.svc.cluster.local", "localhost:30500", "127.0.0.1:30500"]


def test_a_load_balancer_adds_its_addresses_and_an_ingress_its_host_and_extras_come_last() -> None:
    hosts = aggregate.default_hosts(
        exposure(
            service_type="LoadBalancer",
            node_port=31000,
            load_balancer=["203.0.113.7", "lb.example.com"],
            ingress_host="registry.example.com",
            cluster_domain="corp.local",
        ),
        extra=["mirror.internal:5000", "localhost:31000"],
    )

    assert hosts == [
        "demo.team.svc.corp.local",
        "localhost:31000",
        "127.0.0.1:31000",
        "203.0.113.7",
        "lb.example.com",
        "registry.example.com",
        "mirror.internal:5000",
    ]


def trust(
    namespace: str, name: str, hosts: list[str], pem: str = OLD, **extra: object
) -> aggregate.RegistryTrust:
    return aggregate.RegistryTrust(namespace=namespace, name=name, hosts=hosts, ca_pems=[pem], **extra)  # type: ignore[arg-type]


def test_aggregation_encodes_every_host_and_is_independent_of_input_order() -> None:
    a = trust("team", "a", ["a.example", "localhost:30001"], targets=("containerd",))
    b = trust("team", "b", ["b.example"], pem=NEW)

    first = aggregate.aggregate([a, b])
    second = aggregate.aggregate([b, a])

    assert first == second
    assert set(first.data) == {"a.example", "localhost..30001", "b.example", layout.TARGETS_KEY}
    assert layout.fingerprints(first.data["b.example"]) == [FP_NEW]
    assert json.loads(first.data[layout.TARGETS_KEY]) == {
        "a.example": ["containerd"],
        "localhost..30001": ["containerd"],
    }
    assert first.owners["b.example"] == ("team", "b")
    assert first.problems == {}


def test_a_host_claimed_twice_goes_to_the_first_registry_and_the_second_is_told() -> None:
    result = aggregate.aggregate(
        [trust("z", "late", ["shared.example"], pem=NEW), trust("a", "early", ["shared.example"])]
    )

    assert layout.fingerprints(result.data["shared.example"]) == [FP_OLD]
    assert result.owners["shared.example"] == ("a", "early")
    assert result.problems == {
        ("z", "late"): [
            aggregate.Problem(
                "HostConflict", "host shared.example is already trusted for a/early, which claimed it first"
            )
        ]
    }


def test_an_older_registry_claims_a_host_first_whatever_its_name() -> None:
    early = trust("zzz-team", "registry", ["shared.example"], created="2026-01-01T00:00:00Z")
    late = trust("aaa-tenant", "x", ["shared.example"], pem=NEW, created="2026-02-01T00:00:00Z")
    unknown = trust("aaa", "a", ["shared.example"], pem=NEW)

    result = aggregate.aggregate([late, unknown, early])

    assert result.owners["shared.example"] == ("zzz-team", "registry")
    assert layout.fingerprints(result.data["shared.example"]) == [FP_OLD]
    assert [p.reason for p in result.problems[("aaa-tenant", "x")]] == ["HostConflict"]
    assert "zzz-team/registry" in result.problems[("aaa-tenant", "x")][0].message


def test_a_published_host_keeps_its_owner_while_it_still_claims_it() -> None:
    young = trust("b", "young", ["shared.example"], pem=NEW, created="2026-03-01T00:00:00Z")
    old = trust("a", "old", ["shared.example"], created="2026-01-01T00:00:00Z")

    kept = aggregate.aggregate([old, young], previous={"shared.example": ("b", "young")})
    released = aggregate.aggregate(
        [old, trust("b", "young", [], pem=NEW)], previous={"shared.example": ("b", "young")}
    )

    assert kept.owners == {"shared.example": ("b", "young")}
    assert "already trusted for b/young" in kept.problems[("a", "old")][0].message
    assert released.owners == {"shared.example": ("a", "old")} and released.problems == {}


def test_unusable_hosts_and_cas_are_problems_not_entries() -> None:
    result = aggregate.aggregate(
        [
            trust("t", "bad-host", ["[::1]:5000", "ok.example"]),
            trust("t", "bad-ca", ["x.example"], pem="garbage"),
        ]
    )

    assert set(result.data) == {"ok.example"}
    assert "not a registry host" in result.problems[("t", "bad-host")][0].message
    assert "CA cannot be published" in result.problems[("t", "bad-ca")][0].message


def test_no_registries_give_an_empty_configmap() -> None:
    assert aggregate.aggregate([]).data == {}


def nodes(*reports: dict[str, tuple[str, ...]], desired: int | None = None) -> rotation.Nodes:
    parsed = [layout.Report(node=f"n{i}", applied="x", hosts=hosts) for i, hosts in enumerate(reports)]
    count = len(parsed) if desired is None else desired
    return rotation.Nodes(desired=count, ready=count, updated=count, reports=parsed)


BOTH = (FP_OLD, FP_NEW)


def test_without_a_next_ca_the_plan_is_stable() -> None:
    plan = rotation.plan(current_pem=OLD, next_pem=None, server_issuer=FP_OLD, hosts=HOSTS, nodes=nodes())

    assert plan.phase is rotation.Phase.STABLE
    assert plan.publish == (OLD,) and not plan.serve_with_next and not plan.promote


def test_a_next_ca_is_first_published_beside_the_old_one_while_the_server_keeps_its_cert() -> None:
    partial = nodes({h: BOTH for h in HOSTS}, {h: (FP_OLD,) for h in HOSTS})

    plan = rotation.plan(current_pem=OLD, next_pem=NEW, server_issuer=FP_OLD, hosts=HOSTS, nodes=partial)

    assert plan.phase is rotation.Phase.PUBLISHING
    assert plan.publish == (OLD, NEW) and not plan.serve_with_next
    assert "1/2 nodes" in plan.message


def test_a_node_missing_one_host_holds_the_switch_back() -> None:
    one_host_short = nodes({h: BOTH for h in HOSTS}, {HOSTS[0]: BOTH})

    plan = rotation.plan(
        current_pem=OLD, next_pem=NEW, server_issuer=FP_OLD, hosts=HOSTS, nodes=one_host_short
    )

    assert plan.phase is rotation.Phase.PUBLISHING


def test_fewer_reports_than_desired_nodes_hold_the_switch_back() -> None:
    missing_node = nodes({h: BOTH for h in HOSTS}, desired=2)

    plan = rotation.plan(current_pem=OLD, next_pem=NEW, server_issuer=FP_OLD, hosts=HOSTS, nodes=missing_node)

    assert plan.phase is rotation.Phase.PUBLISHING


def test_when_every_node_trusts_the_next_ca_the_server_switches_and_both_stay_published() -> None:
    everyone = nodes({h: BOTH for h in HOSTS}, {h: BOTH for h in HOSTS})

    plan = rotation.plan(current_pem=OLD, next_pem=NEW, server_issuer=FP_OLD, hosts=HOSTS, nodes=everyone)

    assert plan.phase is rotation.Phase.SWITCHING
    assert plan.publish == (OLD, NEW) and plan.serve_with_next and not plan.promote


def test_the_old_ca_stays_while_pods_still_serve_the_old_certificate() -> None:
    everyone = nodes({h: BOTH for h in HOSTS})

    plan = rotation.plan(
        current_pem=OLD, next_pem=NEW, server_issuer=FP_NEW, hosts=HOSTS, nodes=everyone, rolled_out=False
    )

    assert plan.phase is rotation.Phase.SWITCHING
    assert plan.publish == (OLD, NEW) and not plan.promote


def test_once_the_server_uses_the_next_ca_the_old_one_is_retired() -> None:
    everyone = nodes({h: BOTH for h in HOSTS})

    plan = rotation.plan(current_pem=OLD, next_pem=NEW, server_issuer=FP_NEW, hosts=HOSTS, nodes=everyone)

    assert plan.phase is rotation.Phase.RETIRING
    assert plan.publish == (NEW,) and plan.serve_with_next and plan.promote


def test_a_next_ca_equal_to_the_current_one_is_no_rotation() -> None:
    plan = rotation.plan(current_pem=OLD, next_pem=OLD, server_issuer=FP_OLD, hosts=HOSTS, nodes=nodes())

    assert plan.phase is rotation.Phase.STABLE


def test_readiness_needs_hosts_and_nodes() -> None:
    assert rotation.readiness(nodes=nodes(), hosts=[], fingerprints=[FP_OLD]).reason == "NoHosts"
    assert rotation.readiness(nodes=nodes(), hosts=HOSTS, fingerprints=[FP_OLD]).reason == "NoNodes"


def test_readiness_counts_the_nodes_that_trust_every_published_ca() -> None:
    partial = nodes({h: (FP_OLD,) for h in HOSTS}, {h: BOTH for h in HOSTS})

    waiting = rotation.readiness(nodes=partial, hosts=HOSTS, fingerprints=[FP_OLD, FP_NEW])
    done = rotation.readiness(nodes=partial, hosts=HOSTS, fingerprints=[FP_OLD])

    assert (waiting.ok, waiting.reason) == (False, "Installing")
    assert f"1/2 nodes trust CA {FP_NEW}" in waiting.message
    assert (done.ok, done.reason) == (True, "Installed")
