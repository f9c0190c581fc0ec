"""Which hosts a registry may have the nodes trust its CA for (`nodetrust.claims`), as pure checks.

Covers:
- well-known public registry hosts (docker.io and its aliases, registry.k8s.io, *.gcr.io, ECR, ACR,
  Artifact Registry, ...) are refused even when the registry's certificate names them, and with any port;
  only an allowlist entry naming them explicitly (the exact name, or a wildcard inside a public wildcard)
  unlocks one, never `*` or `*.io`;
- loopback names only with the registry's own node port;
- a cluster Service name of another namespace is refused even when the certificate names it, both the
  `.svc` and the `.svc.<domain>` forms; the registry's own namespace is fine;
- names the registry serves (certificate DNS names and IPs, `*.x` covering exactly one label,
  load-balancer addresses) are accepted with any port;
- the allowlist: exact names, `*.suffix` for any depth below the suffix (not the suffix itself), `*`;
- anything else is refused with a message naming the host and how to fix it;
- `screen` keeps the accepted hosts in order and returns one refusal per refused host.
"""

from __future__ import annotations

import pytest

from dockyard_operator.nodetrust import claims

SERVED = claims.Served(
    namespace="team-a",
    names=(
        "demo",
        "demo.team-a",
        "demo.team-a.svc",
        "demo.team-a.svc.cluster.local",
        "localhost",
        "registry.team-a.example",
        "*.apps.example",
        "docker.io",
        "registry.team-b.svc.cluster.local",
        "127.0.0.1",
        "10.1.2.3",
    ),
    node_port=30500,
)


def verdict(host: str, *allowed: str) -> claims.Verdict:
    return claims.verdict(host, served=SERVED, allowed=allowed)


@pytest.mark.parametrize(
    "host",
    [
        "docker.io",
        "registry-1.docker.io",
        "index.docker.io:443",
        "registry.k8s.io",
        "k8s.gcr.io",
        "gcr.io",
        "eu.gcr.io",
        "ghcr.io",
        "quay.io",
        "public.ecr.aws",
        "123456789012.dkr.ecr.us-east-1.amazonaws.com",
        "mcr.microsoft.com",
        "team.azurecr.io",
        "europe-docker.pkg.dev",
    ],
)
def test_public_registry_hosts_are_refused_even_when_the_certificate_names_them(host: str) -> None:
    found = verdict(host, "*", "*.io", "*.com", "*.corp.example")

    assert (found.ok, found.reason) == (False, "PublicRegistryHost")
    assert host in found.message and "public registry" in found.message


def test_only_an_allowlist_entry_naming_a_public_host_explicitly_unlocks_it() -> None:
    assert verdict("docker.io", "docker.io").ok
    assert verdict("docker.io:5000", "docker.io").reason == "Allowed"
    assert not verdict("registry-1.docker.io", "docker.io").ok
    assert verdict("team.azurecr.io", "*.azurecr.io").ok
    ecr = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    assert verdict(ecr, "*.dkr.ecr.eu-west-1.amazonaws.com").ok
    assert not verdict(ecr, "*.eu-west-1.com").ok


def test_loopback_hosts_are_only_the_registrys_own_node_port() -> None:
    assert verdict("localhost:30500").reason == "NodePort"
    assert verdict("127.0.0.1:30500").ok
    other = verdict("localhost:30501", "*")
    assert (other.ok, other.reason) == (False, "NotOwnNodePort")
    assert "localhost:30501" in other.message and "30500" in other.message
    assert not verdict("localhost").ok
    clusterip = claims.Served(namespace="team-a", names=("localhost",))
    assert not claims.verdict("localhost:30500", served=clusterip).ok


def test_another_namespaces_service_name_is_refused_even_when_the_certificate_names_it() -> None:
    for host in ("registry.team-b.svc.cluster.local", "registry.team-b.svc:443"):
        found = verdict(host, "*")
        assert (found.ok, found.reason) == (False, "ForeignServiceName")
        assert host in found.message and "team-b" in found.message
    assert verdict("demo.team-a.svc.cluster.local").ok
    assert verdict("demo.team-a.svc").reason == "Served"


def test_names_the_registry_serves_are_accepted_with_any_port() -> None:
    for host in ("registry.team-a.example", "registry.team-a.example:5000", "10.1.2.3", "x.apps.example"):
        assert verdict(host).reason == "Served", host
    assert not verdict("a.b.apps.example").ok, "a certificate wildcard covers one label"
    balanced = claims.Served(namespace="team-a", names=("lb.example.net",))
    assert claims.verdict("lb.example.net", served=balanced).ok


def test_the_allowlist_takes_exact_names_suffixes_and_star() -> None:
    assert verdict("mirror.corp.example:5000", "mirror.corp.example").reason == "Allowed"
    assert verdict("a.b.corp.example", "*.corp.example").ok
    assert not verdict("corp.example", "*.corp.example").ok
    assert not verdict("evilcorp.example", "*.corp.example").ok
    assert verdict("anything.example", "*").ok


def test_an_unserved_host_is_refused_with_how_to_fix_it() -> None:
    found = verdict("mirror.elsewhere.example")

    assert (found.ok, found.reason) == (False, "NotServed")
    assert "mirror.elsewhere.example" in found.message and "spec.tls.dnsNames" in found.message


def test_screen_keeps_accepted_hosts_in_order_and_lists_each_refusal() -> None:
    accepted, refused = claims.screen(
        ["demo.team-a.svc.cluster.local", "docker.io", "localhost:30500", "elsewhere.example"],
        served=SERVED,
    )

    assert accepted == ("demo.team-a.svc.cluster.local", "localhost:30500")
    assert [r.reason for r in refused] == ["PublicRegistryHost", "NotServed"]
