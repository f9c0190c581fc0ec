"""The reconcile pass against an in-memory API (tests/operator/fakes.py), no cluster.

Covers:
- a first pass creates every child in apply order, each with a controller owner reference and our labels;
- a second pass over an unchanged registry writes nothing (no child write, no status patch);
- drift: a deleted child is recreated, a hand-edited child is reverted even though its spec-hash annotation
  still matches, server-canonicalized quantities are not drift; the watch echo of the operator's own write
  is recognised (no extra pass) but a deletion or someone else's later edit is not;
- a 409 on create is not success: the object is re-read and corrected;
- credentials: unchanged passwords keep their hashes, a changed password rehashes only that user and rolls the
  pod template; a missing Secret or key is reported (Ready=False, Degraded=True, one Warning Event naming it)
  and no child is touched; no password reaches a status, an Event or the log;
- certificates: renewal inside the renewBefore window and on a SAN change keeps the CA (one made before name
  constraints); a new CA carries name constraints of the registry's names, and a name added later is left out
  of the certificate and reported (Degraded NamesOutsideCA) instead of breaking TLS; a missing CA Secret
  while the TLS Secret still has a CA is refused, not regenerated; a bring-your-own Secret is mounted and a
  missing one is named;
- status: endpoint, CA and certificate facts, Ready follows the Deployment, observedGeneration;
- removing spec.expose.ingress deletes the Ingress we own, as going back to one replica deletes the
  PodDisruptionBudget and disabling spec.networkPolicy the NetworkPolicy (someone else's of that name stays);
  status reads the main Service, not the metrics one; a 403 is reported and asks for a retry; a namespace
  being deleted ends the pass quietly instead of fighting the namespace controller.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import logging
from typing import Any

import pytest

from dockyard_common import htpasswd, pki
from dockyard_operator import crypto, names, reconcile, settings
from dockyard_operator.reconcile import orchestrator
from tests.operator import fakes

START = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
PASSWORDS = {"alice": b"alice-secret-pw", "bob": b"bob-secret-pw"}


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def api() -> fakes.FakeKube:
    api = fakes.FakeKube()
    api.put(fakes.password_secret("alice-pw", PASSWORDS["alice"]))
    api.put(fakes.password_secret("bob-pw", PASSWORDS["bob"], key="pw"))
    return api


@pytest.fixture
def reconciler(api: fakes.FakeKube, clock: Clock) -> reconcile.Reconciler:
    return reconcile.Reconciler(
        client=api,  # type: ignore[arg-type]  # duck-typed stand-in
        config=settings.Settings(bcrypt_rounds=4, registry_image="registry:test"),
        clock=clock,
    )


USERS = [
    {"name": "alice", "access": "push", "passwordSecretRef": {"name": "alice-pw"}},
    {"name": "bob", "passwordSecretRef": {"name": "bob-pw", "key": "pw"}},
]


def create(api: fakes.FakeKube, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return api.put(fakes.registry(spec=spec if spec is not None else {"auth": {"users": USERS}}))


async def run(reconciler: reconcile.Reconciler) -> reconcile.Result:
    return await reconciler.reconcile(namespace="ns", name="demo")


def secret_data(api: fakes.FakeKube, name: str) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in api.obj("Secret", name)["data"].items()}


def conditions(api: fakes.FakeKube) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in api.obj(names.KIND, "demo")["status"]["conditions"]}


def config_hash(api: fakes.FakeKube) -> str:
    return str(
        api.obj("Deployment", "demo")["spec"]["template"]["metadata"]["annotations"][names.CONFIG_HASH]
    )


N = names.Names.of("demo")


async def test_first_pass_creates_every_child_in_apply_order_owned_by_the_registry_but_the_claim(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    body = create(api)
    await run(reconciler)
    created = [(kind, name) for verb, kind, name in api.child_writes() if verb == "create"]
    assert created == [
        ("Secret", N.ca_secret),
        ("Secret", N.tls_secret),
        ("Secret", N.htpasswd_secret),
        ("ConfigMap", N.nginx_configmap),
        ("ConfigMap", N.maintenance_configmap),
        ("PersistentVolumeClaim", N.pvc),
        ("Service", N.service),
        ("Deployment", N.deployment),
        ("Service", N.metrics_service),
    ]
    claim = api.obj("PersistentVolumeClaim", N.pvc)["metadata"]
    assert "ownerReferences" not in claim and claim["labels"][names.RETAINED_FROM] == "demo"  # Retain
    for kind, name in created:
        meta = api.obj(kind, name)["metadata"]
        assert meta["labels"][names.LABEL_MANAGED_BY] == "dockyard"
        assert meta["annotations"][names.SPEC_HASH]
        if kind == "PersistentVolumeClaim":
            continue
        assert meta["ownerReferences"] == [
            {
                "apiVersion": names.API_VERSION,
                "kind": names.KIND,
                "name": "demo",
                "uid": body["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]


async def test_a_second_pass_over_an_unchanged_registry_writes_nothing(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    create(api)
    await run(reconciler)
    before = len(api.writes)
    events = len(api.events)
    await run(reconciler)
    assert api.writes[before:] == []
    assert api.events[events:] == []


async def test_the_watch_echo_of_its_own_write_needs_no_pass_but_a_deletion_or_foreign_edit_does(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    create(api)
    await run(reconciler)
    service = api.obj("Service", N.service)
    assert reconciler.is_own_write(service, deleted=False)
    edited = {**service, "metadata": {**service["metadata"], "resourceVersion": "written-by-someone-else"}}
    assert not reconciler.is_own_write(edited, deleted=False)
    assert not reconciler.is_own_write(service, deleted=True)
    assert not reconciler.is_own_write(service, deleted=False), "a deleted object is forgotten"


async def test_a_deleted_child_is_recreated(api: fakes.FakeKube, reconciler: reconcile.Reconciler) -> None:
    create(api)
    await run(reconciler)
    api.remove("Service", N.service)
    await run(reconciler)
    assert api.has("Service", N.service)
    assert ("create", "Service", N.service) in api.writes[-3:]


async def test_a_hand_edited_child_is_reverted_although_its_spec_hash_still_matches(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    create(api)
    await run(reconciler)
    deployment = api.obj("Deployment", N.deployment)
    deployment["spec"]["replicas"] = 5
    deployment["spec"]["template"]["spec"]["containers"][1]["image"] = "evil:latest"
    configmap = api.obj("ConfigMap", N.nginx_configmap)
    configmap["data"]["nginx.conf"] = "events {}\n"
    await run(reconciler)
    deployment = api.obj("Deployment", N.deployment)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["template"]["spec"]["containers"][1]["image"] == "nginx:1.27-alpine"
    assert api.obj("ConfigMap", N.nginx_configmap)["data"]["nginx.conf"].startswith("# Rendered by")


async def test_server_defaults_and_canonical_quantities_are_not_drift(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    create(api, {"storage": {"pvc": {"size": "1024Mi"}}})
    await run(reconciler)
    assert api.obj("PersistentVolumeClaim", N.pvc)["spec"]["resources"]["requests"]["storage"] == "1Gi"
    before = len(api.writes)
    await run(reconciler)
    assert api.writes[before:] == []


async def test_a_conflict_on_create_rereads_the_object_and_corrects_it(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    body = create(api)

    def a_concurrent_writer_was_faster(manifest: dict[str, Any]) -> None:
        if manifest["kind"] == "ConfigMap" and not api.has("ConfigMap", N.nginx_configmap):
            stale = {**manifest, "data": {"nginx.conf": "stale"}}
            api.put(stale)

    api.before_create = a_concurrent_writer_was_faster
    await run(reconciler)
    configmap = api.obj("ConfigMap", N.nginx_configmap)
    assert configmap["data"]["nginx.conf"].startswith("# Rendered by")
    assert configmap["metadata"]["ownerReferences"][0]["uid"] == body["metadata"]["uid"]
    assert ("update", "ConfigMap", N.nginx_configmap) in api.writes


async def test_an_object_of_someone_else_with_a_childs_name_is_not_taken_over(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    foreign = api.put(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": N.nginx_configmap, "namespace": "ns", "labels": {"app": "theirs"}},
            "data": {"nginx.conf": "theirs"},
        }
    )
    create(api)
    await run(reconciler)
    assert api.obj("ConfigMap", N.nginx_configmap) == foreign
    conds = conditions(api)
    assert conds["Degraded"]["reason"] == "NameConflict"
    assert N.nginx_configmap in conds["Degraded"]["message"]
    assert not api.has("Deployment", N.deployment)  # its pods would mount their config
    assert api.has("Service", N.service)


async def test_a_foreign_ca_secret_is_neither_used_nor_overwritten(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler, clock: Clock
) -> None:
    theirs = pki.new_ca(common_name="theirs", now=clock.now, duration=datetime.timedelta(days=1))
    api.put(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": N.ca_secret, "namespace": "ns"},
            "data": {
                "ca.crt": base64.b64encode(theirs.cert_pem).decode(),
                "ca.key": base64.b64encode(theirs.key_pem).decode(),
            },
        }
    )
    create(api)
    await run(reconciler)
    assert conditions(api)["Degraded"]["reason"] == "NameConflict"
    assert api.child_writes() == []


async def test_an_orphan_of_this_registry_is_adopted(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    create(api)
    await run(reconciler)
    service = api.obj("Service", N.service)
    service["metadata"]["ownerReferences"] = []  # left behind by `kubectl delete --cascade=orphan`
    api.remove(names.KIND, "demo")
    for kind, _, name in [key for key in api.objects if key[0] != "Service" and key[2].startswith("demo")]:
        api.remove(kind, name)  # garbage collection took the rest
    body = create(api)  # a new registry object of the same name: a new uid
    await run(reconciler)
    refs = api.obj("Service", N.service)["metadata"]["ownerReferences"]
    assert [r["uid"] for r in refs] == [body["metadata"]["uid"]]


async def test_a_certificate_limited_by_a_short_lived_ca_is_not_reissued_on_every_pass(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler, clock: Clock
) -> None:
    create(api, {"tls": {"caDuration": "2h", "certDuration": "2160h", "renewBefore": "720h"}})
    await run(reconciler)
    first = secret_data(api, N.tls_secret)
    clock.now += datetime.timedelta(minutes=10)
    writes = len(api.child_writes())
    await run(reconciler)
    assert secret_data(api, N.tls_secret) == first
    assert api.child_writes()[writes:] == []
    assert conditions(api)["CertificateReady"]["reason"] == "LimitedByCA"


async def test_unchanged_passwords_keep_their_hashes_and_a_changed_one_rehashes_only_that_user(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    create(api)
    await run(reconciler)
    first = htpasswd.parse(secret_data(api, N.htpasswd_secret)["htpasswd"].decode())
    first_hash = config_hash(api)
    api.put(fakes.password_secret("bob-pw", b"a-new-password", key="pw"))
    await run(reconciler)
    second = htpasswd.parse(secret_data(api, N.htpasswd_secret)["htpasswd"].decode())
    assert second["alice"] == first["alice"]
    assert second["bob"] != first["bob"]
    assert crypto.verify_password(b"a-new-password", second["bob"])
    assert config_hash(api) != first_hash


async def test_htpasswd_secret_carries_the_access_rules(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    import yaml

    create(api)
    await run(reconciler)
    access = yaml.safe_load(secret_data(api, N.htpasswd_secret)["access.yaml"])
    assert access == {
        "anonymousPull": False,
        "users": {
            "alice": {"access": "push", "repositories": ["**"]},
            "bob": {"access": "pull", "repositories": ["**"]},
        },
    }


async def test_a_missing_password_secret_is_named_and_leaves_every_child_untouched(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    create(api)
    await run(reconciler)
    api.remove("Secret", "bob-pw")
    writes = len(api.child_writes())
    result = await run(reconciler)
    assert api.child_writes()[writes:] == []
    conds = conditions(api)
    assert conds["Ready"]["status"] == "False"
    assert conds["Degraded"]["status"] == "True"
    assert conds["Degraded"]["reason"] == "SecretNotFound"
    assert "bob-pw" in conds["Degraded"]["message"]
    warnings = [e for e in api.events if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == ["SecretNotFound"]
    assert result.retry_after is None  # the Secret watch brings the next attempt: no crash loop
    await run(reconciler)
    assert [e for e in api.events if e["type"] == "Warning"] == warnings  # not repeated every pass


async def test_a_missing_key_names_the_secret_and_the_key(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    api.put(fakes.password_secret("bob-pw", b"x", key="other"))
    create(api)
    await run(reconciler)
    message = conditions(api)["Degraded"]["message"]
    assert "bob-pw" in message and "'pw'" in message
    assert conditions(api)["Degraded"]["reason"] == "SecretKeyMissing"
    assert not api.has("Deployment", N.deployment)


async def test_a_password_longer_than_bcrypt_allows_is_reported_not_truncated(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    api.put(fakes.password_secret("alice-pw", b"x" * 73))
    create(api)
    await run(reconciler)
    assert conditions(api)["Degraded"]["reason"] == "InvalidPassword"
    assert "72 bytes" in conditions(api)["Degraded"]["message"]


async def test_no_password_reaches_status_events_children_metadata_or_the_log(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    create(api)
    await run(reconciler)
    api.put(fakes.password_secret("bob-pw", b"another-password1", key="pw"))
    api.remove("Secret", "alice-pw")
    await run(reconciler)
    exposed = repr(api.events) + repr(api.status_patches) + caplog.text
    exposed += repr([o for k, o in api.objects.items() if k[2] not in {"alice-pw", "bob-pw"}])
    for password in [*PASSWORDS.values(), b"another-password1"]:
        assert password.decode() not in exposed
        assert base64.b64encode(password).decode() not in exposed


async def test_the_certificate_is_renewed_in_its_window_by_the_same_ca(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler, clock: Clock
) -> None:
    create(api, {"tls": {"certDuration": "100h", "renewBefore": "10h"}})
    await run(reconciler)
    first = secret_data(api, N.tls_secret)
    clock.now = START + datetime.timedelta(hours=80)
    await run(reconciler)
    assert secret_data(api, N.tls_secret) == first  # outside the window: kept
    clock.now = START + datetime.timedelta(hours=91)
    await run(reconciler)
    renewed = secret_data(api, N.tls_secret)
    assert renewed["tls.crt"] != first["tls.crt"]
    assert renewed["ca.crt"] == first["ca.crt"]
    assert pki.signed_by(cert_pem=renewed["tls.crt"], ca_pem=first["ca.crt"])
    assert pki.inspect(renewed["tls.crt"]).not_after > START + datetime.timedelta(hours=150)
    assert any(e["reason"] == "CertificateIssued" for e in api.events)


async def test_adding_a_dns_name_reissues_the_certificate_from_the_same_ca_made_before_name_constraints(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    create(api)
    await run(reconciler)
    old_ca = pki.new_ca(common_name="an older CA", now=START, duration=datetime.timedelta(days=3650))
    api.obj("Secret", N.ca_secret)["data"] = {
        "ca.crt": base64.b64encode(old_ca.cert_pem).decode(),
        "ca.key": base64.b64encode(old_ca.key_pem).decode(),
    }
    await run(reconciler)
    first = secret_data(api, N.tls_secret)
    assert first["ca.crt"] == old_ca.cert_pem
    body = api.obj(names.KIND, "demo")
    body["spec"] = {"tls": {"dnsNames": ["registry.example.com"], "ipAddresses": ["10.1.2.3"]}}
    body["metadata"]["generation"] = 2
    await run(reconciler)
    second = secret_data(api, N.tls_secret)
    info = pki.inspect(second["tls.crt"])
    assert "registry.example.com" in info.dns_names and "10.1.2.3" in info.ip_addresses
    assert second["ca.crt"] == first["ca.crt"]
    status = api.obj(names.KIND, "demo")["status"]
    assert "registry.example.com" in status["certificate"]["dnsNames"]
    assert status["observedGeneration"] == 2


async def test_a_new_ca_vouches_only_for_the_registrys_names_and_a_name_added_later_is_left_out(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    create(api, spec={"tls": {"dnsNames": ["registry.example.com"]}})
    await run(reconciler)
    permitted = pki.inspect(secret_data(api, N.ca_secret)["ca.crt"]).permitted
    assert permitted is not None and "registry.example.com" in permitted.dns_names
    assert "localhost" in permitted.dns_names and permitted.ip_addresses == ("127.0.0.1",)
    first = secret_data(api, N.tls_secret)

    body = api.obj(names.KIND, "demo")
    body["spec"] = {
        "tls": {"dnsNames": ["registry.example.com", "mirror.example.org"], "ipAddresses": ["10.1.2.3"]}
    }
    await run(reconciler)
    writes = len(api.child_writes())
    await run(reconciler)

    assert secret_data(api, N.tls_secret) == first, "no certificate the nodes' TLS would refuse"
    assert api.child_writes()[writes:] == [], "the left-out names do not reissue on every pass"
    degraded = conditions(api)["Degraded"]
    assert (degraded["status"], degraded["reason"]) == ("True", "NamesOutsideCA")
    assert "mirror.example.org, 10.1.2.3" in degraded["message"] and "rotate-ca" in degraded["message"]


async def test_a_missing_ca_secret_is_reported_and_no_new_ca_is_generated(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    create(api)
    await run(reconciler)
    tls_before = secret_data(api, N.tls_secret)
    api.remove("Secret", N.ca_secret)
    await run(reconciler)
    assert not api.has("Secret", N.ca_secret)
    assert secret_data(api, N.tls_secret) == tls_before
    conds = conditions(api)
    assert conds["CertificateReady"]["status"] == "False"
    assert conds["CertificateReady"]["reason"] == "CAKeyMissing"
    assert conds["Degraded"]["status"] == "True"


async def test_deleting_both_tls_secrets_accepts_a_new_ca(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    create(api)
    await run(reconciler)
    old_ca = secret_data(api, N.ca_secret)["ca.crt"]
    api.remove("Secret", N.ca_secret)
    api.remove("Secret", N.tls_secret)
    await run(reconciler)
    assert secret_data(api, N.ca_secret)["ca.crt"] != old_ca
    assert conditions(api)["CertificateReady"]["status"] == "True"


def _byo_secret(api: fakes.FakeKube, clock: Clock) -> None:
    ca = pki.new_ca(common_name="their ca", now=clock.now, duration=datetime.timedelta(days=30))
    server = pki.issue_server_cert(
        ca=ca,
        common_name="reg",
        dns_names=["reg"],
        ip_addresses=[],
        now=clock.now,
        duration=datetime.timedelta(days=3),
    )
    api.put(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": "mine", "namespace": "ns"},
            "data": {
                "tls.crt": base64.b64encode(server.cert_pem).decode(),
                "tls.key": base64.b64encode(server.key_pem).decode(),
                "ca.crt": base64.b64encode(ca.cert_pem).decode(),
            },
        }
    )


async def test_a_bring_your_own_secret_is_mounted_and_no_ca_is_created(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler, clock: Clock
) -> None:
    _byo_secret(api, clock)
    create(api, {"tls": {"mode": "Secret", "secretName": "mine"}})
    await run(reconciler)
    volumes = api.obj("Deployment", N.deployment)["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": "mine"}} in volumes
    assert not api.has("Secret", N.ca_secret) and not api.has("Secret", N.tls_secret)
    assert conditions(api)["CertificateReady"]["status"] == "True"


async def test_a_missing_bring_your_own_secret_is_named(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    create(api, {"tls": {"mode": "Secret", "secretName": "absent"}})
    await run(reconciler)
    conds = conditions(api)
    assert conds["Ready"]["status"] == "False"
    assert "'absent'" in conds["Degraded"]["message"]
    assert conds["CertificateReady"]["status"] == "False"
    assert api.child_writes() == []


async def test_an_invalid_spec_that_slipped_past_the_schema_is_reported(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    create(api, {"replicas": -3, "tls": {"mode": "Secret"}})
    await run(reconciler)
    conds = conditions(api)
    assert conds["Degraded"]["reason"] == "InvalidSpec"
    assert "spec.replicas" in conds["Degraded"]["message"]
    assert api.child_writes() == []


async def test_ready_follows_the_deployment_and_status_reports_endpoint_and_ca(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    create(api)
    await run(reconciler)
    status = api.obj(names.KIND, "demo")["status"]
    assert conditions(api)["Ready"]["status"] == "False"  # no controller has observed the Deployment yet
    assert conditions(api)["Progressing"]["status"] == "True"
    assert status["endpoint"] == "demo.ns.svc:443"
    ca = pki.inspect(secret_data(api, N.tls_secret)["ca.crt"])
    assert status["ca"]["fingerprintSha256"] == ca.fingerprint_sha256
    deployment = api.obj("Deployment", N.deployment)
    deployment["status"] = {
        "observedGeneration": deployment["metadata"]["generation"],
        "availableReplicas": 1,
        "readyReplicas": 1,
        "updatedReplicas": 1,
    }
    await run(reconciler)
    conds = conditions(api)
    assert conds["Ready"]["status"] == "True"
    assert conds["Progressing"]["status"] == "False"
    assert api.obj(names.KIND, "demo")["status"]["readyReplicas"] == 1


async def test_removing_the_ingress_from_the_spec_deletes_our_ingress(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    create(api, {"expose": {"ingress": {"host": "registry.example.com"}}})
    await run(reconciler)
    assert api.has("Ingress", N.ingress)
    assert api.obj(names.KIND, "demo")["status"]["endpoint"] == "registry.example.com:443"
    body = api.obj(names.KIND, "demo")
    body["spec"] = {}
    await run(reconciler)
    assert not api.has("Ingress", N.ingress)


async def test_back_to_one_replica_deletes_the_budget_and_disabling_the_policy_deletes_it(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    spec = {"replicas": 2, "storage": {"emptyDir": {}}, "networkPolicy": {"enabled": True}}
    create(api, spec)
    await run(reconciler)
    assert api.has("PodDisruptionBudget", N.pod_disruption_budget)
    assert api.has("NetworkPolicy", N.network_policy)
    body = api.obj(names.KIND, "demo")
    body["spec"] = {"replicas": 1, "storage": {"emptyDir": {}}}
    await run(reconciler)
    assert not api.has("PodDisruptionBudget", N.pod_disruption_budget)
    assert not api.has("NetworkPolicy", N.network_policy)
    assert api.has("Service", N.metrics_service)


async def test_an_unwanted_budget_that_is_not_ours_stays(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    create(api)
    api.put(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": N.pod_disruption_budget, "namespace": "ns"},
            "spec": {"maxUnavailable": 1},
        }
    )
    await run(reconciler)
    assert api.has("PodDisruptionBudget", N.pod_disruption_budget)


async def test_a_foreign_network_policy_is_named_but_does_not_hold_back_the_deployment(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    create(api, {"auth": {"users": USERS}, "networkPolicy": {"enabled": True}})
    api.put(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": N.network_policy, "namespace": "ns"},
            "spec": {"podSelector": {}},
        }
    )
    await run(reconciler)
    assert api.has("Deployment", N.deployment)  # the pods mount nothing of it
    assert api.obj("NetworkPolicy", N.network_policy)["spec"] == {"podSelector": {}}
    conds = conditions(api)
    assert conds["Degraded"]["reason"] == "NameConflict"
    assert N.network_policy in conds["Degraded"]["message"]


async def test_status_reads_the_main_service_not_the_metrics_service(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    create(api, {"expose": {"type": "NodePort"}})
    await run(reconciler)
    assert api.has("Service", N.metrics_service)
    status = api.obj(names.KIND, "demo")["status"]
    assert status["nodeEndpoint"] == "localhost:31000"  # the metrics Service (ClusterIP) has no node port
    assert status["endpoint"] == f"{N.service}.ns.svc:443"


async def test_a_forbidden_write_is_reported_and_asks_for_a_retry(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    api.forbidden_kinds.add("Deployment")
    create(api)
    result = await run(reconciler)
    assert result.retry_after is not None
    conds = conditions(api)
    assert conds["Degraded"]["reason"] == "Forbidden"
    assert "Deployment" in conds["Degraded"]["message"]


async def test_a_deleted_registry_is_left_to_garbage_collection(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    assert await reconciler.reconcile(namespace="ns", name="absent") == reconcile.Result(gone=True)
    assert api.writes == []


async def test_a_terminating_namespace_ends_the_pass_quietly(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    create(api)
    await run(reconciler)
    api.remove("Service", N.service)  # the namespace controller deletes children before the registry
    api.terminating = True
    patches = len(api.status_patches)
    assert await run(reconciler) == reconcile.Result()
    assert len(api.status_patches) == patches
    assert not any(e["reason"] == "Forbidden" for e in api.events)


async def test_a_registry_deleted_during_the_pass_ends_it_without_an_error(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    create(api)

    def delete_the_registry(manifest: dict[str, Any]) -> None:
        if manifest["kind"] == "Deployment":
            api.remove(names.KIND, "demo")

    api.before_create = delete_the_registry
    assert await run(reconciler) == reconcile.Result()
    assert api.status_patches == []


async def test_verified_passwords_are_not_bcrypt_checked_again_on_every_pass(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    create(api)
    await run(reconciler)
    calls: list[str] = []
    original = crypto.reuse_or_hash

    def counting(**kwargs: Any) -> str:
        calls.append(kwargs["user"])
        return original(**kwargs)

    monkeypatch.setattr(crypto, "reuse_or_hash", counting)
    await run(reconciler)
    assert calls == []
    api.put(fakes.password_secret("bob-pw", b"changed-again", key="pw"))
    await run(reconciler)
    assert calls == ["bob"]
    assert crypto.verify_password(
        b"changed-again",
        htpasswd.parse(secret_data(api, N.htpasswd_secret)["htpasswd"].decode())["bob"],
    )


async def test_no_more_passes_run_at_once_than_the_setting_allows_and_every_one_runs(
    api: fakes.FakeKube, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    reconciler = reconcile.Reconciler(
        client=api,  # type: ignore[arg-type]  # duck-typed stand-in
        config=settings.Settings(bcrypt_rounds=4, registry_image="registry:test", concurrent_passes=2),
        clock=clock,
    )
    running: list[str] = []
    most = 0
    done: list[str] = []
    original = reconciler._pass

    async def observed(body: Any) -> reconcile.Result:
        nonlocal most
        running.append(body["metadata"]["name"])
        most = max(most, len(running))
        try:
            return await original(body)
        finally:
            running.remove(body["metadata"]["name"])
            done.append(body["metadata"]["name"])

    monkeypatch.setattr(reconciler, "_pass", observed)
    names_ = [f"reg-{i}" for i in range(6)]
    for name in names_:
        api.put(fakes.registry(name=name, spec={"auth": {"users": [USERS[0]]}}))
    await asyncio.gather(*(reconciler.reconcile(namespace="ns", name=name) for name in names_))
    assert most == 2
    assert sorted(done) == names_


async def test_a_pass_posts_one_event_per_reason_naming_everything_it_did(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    create(api)
    await run(reconciler)
    created = [e for e in api.events if e["reason"] == "Created"]
    assert len(created) == 1
    for kind, name in (("Secret", N.htpasswd_secret), ("Service", N.service), ("Deployment", N.deployment)):
        assert f"created {kind} {name}" in created[0]["message"]
    assert len(created[0]["message"]) <= 1024


async def test_a_new_registry_gets_two_events_the_new_ca_and_what_was_created(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    # Its first serving certificate is the new CA's consequence, named by `Created` (the TLS Secret): no
    # third Event saying the same. A reissue later is a transition of its own (the renewal test).
    create(api)
    await run(reconciler)
    assert sorted(e["reason"] for e in api.events) == ["CACreated", "Created"]
    (created,) = [e for e in api.events if e["reason"] == "Created"]
    assert f"created Secret {N.tls_secret}" in created["message"]
    assert f"created Secret {N.ca_secret}" in created["message"]


async def test_the_periodic_pass_skips_a_registry_that_had_a_pass_within_half_a_resync_period(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    create(api)
    now = [1000.0]
    monkeypatch.setattr(orchestrator.time, "monotonic", lambda: now[0])
    passes: list[bool] = []
    original = reconciler._pass
    retry = [False]

    async def counted(body: Any) -> reconcile.Result:
        passes.append(True)
        result = await original(body)
        return reconcile.Result(retry_after=5.0, message="try again") if retry[0] else result

    monkeypatch.setattr(reconciler, "_pass", counted)
    await run(reconciler)
    assert len(passes) == 1
    now[0] += 29.0  # resync_seconds is 60
    assert await reconciler.reconcile(namespace="ns", name="demo", periodic=True) == reconcile.Result()
    assert len(passes) == 1
    await run(reconciler)  # an event's pass always runs
    assert len(passes) == 2
    now[0] += 31.0
    await reconciler.reconcile(namespace="ns", name="demo", periodic=True)
    assert len(passes) == 3
    now[0] += 60.0
    retry[0] = True  # a pass that asks for a retry is not done: the timer's retry 5 s later runs
    assert (await reconciler.reconcile(namespace="ns", name="demo", periodic=True)).retry_after == 5.0
    now[0] += 5.0
    await reconciler.reconcile(namespace="ns", name="demo", periodic=True)
    assert len(passes) == 5


async def test_a_password_secret_many_registries_reference_is_bcrypt_hashed_once_per_namespace(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Registries created together that share one password Secret wait for one hash instead of each making
    one; a registry in another namespace (whose Secret happens to hold the same password) gets its own."""
    calls: list[str] = []
    original = crypto.reuse_or_hash

    def counting(**kwargs: Any) -> str:
        calls.append(kwargs["user"])
        return original(**kwargs)

    monkeypatch.setattr(crypto, "reuse_or_hash", counting)
    spec = {"auth": {"users": [USERS[0]]}}
    registries = [("ns", f"reg-{i}") for i in range(5)] + [("other", "reg-0")]
    api.put(fakes.password_secret("alice-pw", PASSWORDS["alice"], namespace="other"))
    for namespace, name in registries:
        api.put(fakes.registry(name=name, namespace=namespace, spec=spec))
    await asyncio.gather(*(reconciler.reconcile(namespace=ns, name=name) for ns, name in registries))
    assert calls == ["alice", "alice"]
    lines = {
        (ns, name): htpasswd.parse(
            base64.b64decode(
                api.obj("Secret", names.Names.of(name).htpasswd_secret, namespace=ns)["data"]["htpasswd"]
            ).decode()
        )["alice"]
        for ns, name in registries
    }
    assert len({lines[("ns", f"reg-{i}")] for i in range(5)}) == 1
    assert lines[("other", "reg-0")] != lines[("ns", "reg-0")]
    assert all(crypto.verify_password(PASSWORDS["alice"], line) for line in lines.values())
    api.put(fakes.password_secret("alice-pw", b"alice-changed-pw"))
    await asyncio.gather(*(reconciler.reconcile(namespace="ns", name=f"reg-{i}") for i in range(5)))
    assert calls == ["alice", "alice", "alice"]  # the new password is hashed once for all five
    changed = {
        htpasswd.parse(
            base64.b64decode(
                api.obj("Secret", names.Names.of(f"reg-{i}").htpasswd_secret)["data"]["htpasswd"]
            ).decode()
        )["alice"]
        for i in range(5)
    }
    assert len(changed) == 1 and crypto.verify_password(b"alice-changed-pw", changed.pop())


@pytest.mark.parametrize("deleted", [N.tls_secret, N.ca_secret])
async def test_a_key_secret_deleted_during_a_pass_is_not_restored_from_memory(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler, deleted: str
) -> None:
    create(api)
    await run(reconciler)
    first = secret_data(api, N.tls_secret)
    real_get = api.get

    removed: list[dict[str, Any]] = []

    async def get_then_delete(**ref: Any) -> dict[str, Any] | None:
        found = await real_get(**ref)
        if ref["kind"] == "Secret" and ref["name"] == N.tls_secret and api.has("Secret", deleted):
            removed.append(api.obj("Secret", deleted))
            api.remove("Secret", deleted)  # deleted right after this pass read the key material
        return found

    api.get = get_then_delete  # type: ignore[method-assign]
    await run(reconciler)
    api.get = real_get  # type: ignore[method-assign]
    assert not api.has("Secret", deleted)
    # The deletion's watch event is never taken for the echo of our own write: it brings the next pass.
    assert not reconciler.is_own_write(removed[0], deleted=True)
    await run(reconciler)  # the next pass decides on what exists now
    if deleted == N.tls_secret:
        second = secret_data(api, N.tls_secret)
        assert second["tls.crt"] != first["tls.crt"] and second["ca.crt"] == first["ca.crt"]
    else:
        assert not api.has("Secret", N.ca_secret)
        assert conditions(api)["CertificateReady"]["reason"] == "CAKeyMissing"


async def test_losing_the_ca_secret_does_not_roll_the_pods(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    create(api)
    await run(reconciler)
    before = config_hash(api)
    api.remove("Secret", N.ca_secret)
    await run(reconciler)
    assert conditions(api)["Degraded"]["reason"] == "CAKeyMissing"
    assert config_hash(api) == before


async def test_after_close_no_pass_runs(api: fakes.FakeKube, reconciler: reconcile.Reconciler) -> None:
    create(api)
    await reconciler.close()
    assert await run(reconciler) == reconcile.Result()
    assert api.writes == []
