"""Pure policy checks: SANs, CA action, certificate renewal, bring-your-own certificates, storage, readiness.

Covers:
- the SAN set: service names, localhost, 127.0.0.1, ingress host, extra names/IPs, no duplicates;
- the CA is created only when nothing exists, kept when usable, and refused (never regenerated) when its key
  is gone while clients may trust it;
- the serving certificate is renewed when missing, expiring (injected clock), SANs changed, signed by another
  CA, or its key mismatches;
- a BYO Secret is checked for presence, keys, key match and expiry;
- storage fits the replica count; readiness follows the Deployment's observed generation and availability;
- a certificate capped by a short-lived CA is not renewed forever; ownership: ours, orphans, others.
"""

from __future__ import annotations

import datetime

import pytest

from dockyard_common import pki
from dockyard_operator import model, names, policies

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
HOUR = datetime.timedelta(hours=1)
N = names.Names.of("demo")


@pytest.fixture(scope="module")
def ca() -> pki.KeyPair:
    return pki.new_ca(common_name="ca", now=NOW, duration=1000 * HOUR)


def _tls(
    ca: pki.KeyPair, dns: list[str], ips: list[str], *, duration: datetime.timedelta = 100 * HOUR
) -> dict[str, bytes]:
    server = pki.issue_server_cert(
        ca=ca, common_name=dns[0], dns_names=dns, ip_addresses=ips, now=NOW, duration=duration
    )
    return {"tls.crt": server.cert_pem, "tls.key": server.key_pem, "ca.crt": ca.cert_pem}


def test_sans_cover_service_names_localhost_ingress_and_extras_once() -> None:
    spec = model.parse_spec(
        {
            "expose": {"ingress": {"host": "reg.example.com"}},
            "tls": {"dnsNames": ["reg.example.com", "extra.example.com"], "ipAddresses": ["10.0.0.5"]},
        }
    )
    dns, ips = policies.desired_sans(spec=spec, child_names=N, namespace="ns", cluster_domain="cluster.local")
    assert dns == [
        "demo",
        "demo.ns",
        "demo.ns.svc",
        "demo.ns.svc.cluster.local",
        "localhost",
        "reg.example.com",
        "extra.example.com",
    ]
    assert ips == ["127.0.0.1", "10.0.0.5"]


def test_a_ca_is_created_only_when_nothing_exists(ca: pki.KeyPair) -> None:
    assert policies.ca_action(ca_secret=None, tls_secret=None)[0] is policies.CaAction.CREATE
    kept = {"ca.crt": ca.cert_pem, "ca.key": ca.key_pem}
    assert policies.ca_action(ca_secret=kept, tls_secret=None)[0] is policies.CaAction.KEEP


def test_a_lost_ca_key_is_refused_while_clients_may_trust_the_old_ca(ca: pki.KeyPair) -> None:
    action, verdict = policies.ca_action(ca_secret=None, tls_secret={"ca.crt": ca.cert_pem})
    assert action is policies.CaAction.REFUSE and verdict.reason == "CAKeyMissing"


def test_a_ca_secret_whose_key_does_not_match_is_refused(ca: pki.KeyPair) -> None:
    other = pki.new_ca(common_name="other", now=NOW, duration=HOUR)
    action, verdict = policies.ca_action(
        ca_secret={"ca.crt": ca.cert_pem, "ca.key": other.key_pem}, tls_secret=None
    )
    assert action is policies.CaAction.REFUSE and verdict.reason == "CAInvalid"


def _verdict(
    ca: pki.KeyPair, tls: dict[str, bytes] | None, *, dns: list[str], now: datetime.datetime = NOW
) -> policies.Verdict:
    return policies.server_cert_verdict(
        tls_secret=tls,
        ca_pem=ca.cert_pem,
        dns_names=dns,
        ip_addresses=["127.0.0.1"],
        now=now,
        renew_before=10 * HOUR,
    )


def test_a_valid_certificate_is_kept(ca: pki.KeyPair) -> None:
    assert _verdict(ca, _tls(ca, ["a"], ["127.0.0.1"]), dns=["a"]).ok


@pytest.mark.parametrize(("hours", "ok"), [(89, True), (90, False), (95, False), (200, False)])
def test_the_certificate_is_renewed_inside_the_renew_before_window(
    ca: pki.KeyPair, hours: int, ok: bool
) -> None:
    verdict = _verdict(ca, _tls(ca, ["a"], ["127.0.0.1"]), dns=["a"], now=NOW + hours * HOUR)
    assert verdict.ok is ok
    if not ok:
        assert verdict.reason == "Expiring"


def test_a_san_change_reissues(ca: pki.KeyPair) -> None:
    assert _verdict(ca, _tls(ca, ["a"], ["127.0.0.1"]), dns=["a", "b"]).reason == "SANsChanged"


def test_a_certificate_from_another_ca_or_with_a_foreign_key_is_reissued(ca: pki.KeyPair) -> None:
    other = pki.new_ca(common_name="other", now=NOW, duration=1000 * HOUR)
    foreign = _tls(other, ["a"], ["127.0.0.1"])
    assert _verdict(ca, {**foreign, "ca.crt": ca.cert_pem}, dns=["a"]).reason == "NotSignedByCA"
    mismatched = {**_tls(ca, ["a"], ["127.0.0.1"]), "tls.key": other.key_pem}
    assert _verdict(ca, mismatched, dns=["a"]).reason == "KeyMismatch"
    assert _verdict(ca, None, dns=["a"]).reason == "Missing"


def test_bring_your_own_certificates_are_checked(ca: pki.KeyPair) -> None:
    good = _tls(ca, ["a"], [])
    assert policies.byo_cert_verdict(secret=good, secret_name="mine", now=NOW).ok
    assert policies.byo_cert_verdict(secret=None, secret_name="mine", now=NOW).reason == "SecretNotFound"
    assert (
        policies.byo_cert_verdict(secret={"tls.crt": good["tls.crt"]}, secret_name="mine", now=NOW).reason
        == "SecretIncomplete"
    )
    swapped = {**good, "tls.key": ca.key_pem}
    assert policies.byo_cert_verdict(secret=swapped, secret_name="mine", now=NOW).reason == "KeyMismatch"
    assert (
        policies.byo_cert_verdict(secret={**good, "tls.crt": b"junk"}, secret_name="mine", now=NOW).reason
        == "InvalidCertificate"
    )
    assert (
        policies.byo_cert_verdict(secret=good, secret_name="mine", now=NOW + 500 * HOUR).reason == "Expired"
    )


@pytest.mark.parametrize(
    ("spec", "phase", "reason"),
    [
        ({"storage": {"emptyDir": {}}}, None, "EmptyDir"),
        ({"storage": {"emptyDir": {}}, "replicas": 2}, None, "StorageNotShared"),
        ({"replicas": 2}, "Bound", "StorageNotShared"),
        ({"replicas": 2, "storage": {"pvc": {"accessModes": ["ReadWriteMany"]}}}, "Bound", "ClaimBound"),
        ({}, "Pending", "ClaimPending"),
        ({}, "Bound", "ClaimBound"),
        ({}, "Lost", "ClaimLost"),
    ],
)
def test_storage_verdicts(spec: dict[str, object], phase: str | None, reason: str) -> None:
    assert policies.storage_verdict(model.parse_spec(spec), pvc_phase=phase).reason == reason


def _deployment(
    *, generation: int = 2, observed: int = 2, available: int = 0, updated: int = 1
) -> dict[str, object]:
    return {
        "metadata": {"generation": generation},
        "status": {
            "observedGeneration": observed,
            "availableReplicas": available,
            "updatedReplicas": updated,
        },
    }


def test_ready_follows_the_deployment() -> None:
    assert policies.deployment_verdict(None, replicas=1).reason == "DeploymentMissing"
    assert (
        policies.deployment_verdict(_deployment(observed=1, available=1), replicas=1).reason
        == "DeploymentProgressing"
    )
    assert (
        policies.deployment_verdict(_deployment(available=0), replicas=1).reason == "DeploymentNotAvailable"
    )
    ready = policies.deployment_verdict(_deployment(available=1), replicas=1)
    assert ready.ok and ready.reason == "DeploymentAvailable"
    rolling = policies.deployment_verdict(_deployment(available=1, updated=1), replicas=2)
    assert rolling.ok and rolling.reason == "RollingOut"
    assert not policies.deployment_verdict(_deployment(), replicas=0).ok


def test_a_certificate_that_already_lasts_as_long_as_its_ca_is_not_renewed() -> None:
    short_ca = pki.new_ca(common_name="short", now=NOW, duration=2 * HOUR)
    tls = _tls(short_ca, ["a"], ["127.0.0.1"])  # capped at the CA's expiry
    verdict = _verdict(short_ca, tls, dns=["a"], now=NOW + HOUR)
    assert verdict.ok and verdict.reason == "LimitedByCA"
    assert not _verdict(short_ca, tls, dns=["a"], now=NOW + 3 * HOUR).ok  # once the CA expired: no pretending


def test_ownership_accepts_our_children_and_orphans_and_names_everyone_else() -> None:
    ours = {"metadata": {"ownerReferences": [{"uid": "u1", "controller": True}]}}
    orphan = {"metadata": {"labels": names.labels("demo", component="tls")}}
    theirs = {
        "kind": "Secret",
        "metadata": {
            "name": "demo-tls",
            "ownerReferences": [{"uid": "x", "kind": "Certificate", "name": "c", "controller": True}],
        },
    }
    stranger = {"kind": "ConfigMap", "metadata": {"name": "demo-nginx"}}
    assert policies.ownership_verdict(ours, owner_uid="u1", registry="demo").reason == "Owned"
    assert policies.ownership_verdict(orphan, owner_uid="u1", registry="demo").reason == "Adopted"
    assert not policies.ownership_verdict(orphan, owner_uid="u1", registry="other").ok
    verdict = policies.ownership_verdict(theirs, owner_uid="u1", registry="demo")
    assert not verdict.ok and "Certificate c" in verdict.message and "demo-tls" in verdict.message
    assert policies.ownership_verdict(stranger, owner_uid="u1", registry="demo").reason == "NameConflict"
