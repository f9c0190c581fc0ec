"""Per-mirror status and MirrorsReady, from the registry pods' `/status` (pure) and through the reconciler.

Covers:
- a document's `mirrors` becomes status entries (upstream, reachable, last error with reason and time, last
  answered request), malformed entries are skipped, a document without `mirrors` gives none;
- several pods: the newest error and the newest success win per prefix, reachability from the newer;
- MirrorsReady: True while no upstream's last word was a failure; False naming the upstream, the Secret to
  check and the registry's message for refused credentials; False for an unreachable upstream; an error
  older than the last success does not count; the wired-node count per image host is in the message;
  a wired mirror nodes cannot pull through (its anonymous pull off) is named, with what to set;
- a CA bundle the registry cannot load (`caError`): kept per mirror (from any pod), named in MirrorsReady
  with the Secret and key to fix while MirrorsReady stays True (MirrorCABundleInvalid: the previous bundle
  is in use), its note in lastError is no upstream failure, a real failure keeps its reason and False;
- the reconciler: status.mirrors and MirrorsReady from the override URL; Unknown before any pod answered;
  without an answer the previous status.mirrors stays; no mirrors in the spec removes both; a caError
  reaches status.mirrors and MirrorsReady, and leaves both once the registry loads a bundle again.
"""

from __future__ import annotations

from typing import Any

from dockyard_operator import mirror_status, model, names, observations, reconcile, settings
from tests.operator import fakes

T0 = 1_780_000_000.0
HUB = {"upstream": "https://registry-1.docker.io", "prefix": "hub", "nodeHost": "docker.io"}


def entry(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "prefix": "hub",
        "upstream": "https://registry-1.docker.io",
        "reachable": True,
        "lastError": None,
        "lastErrorAt": None,
        "lastErrorReason": None,
        "lastSuccessAt": T0,
        "staleServes": 0,
    }
    return {**base, **fields}


def mirror(**fields: Any) -> model.Mirror:
    return model.Mirror.model_validate({**HUB, **fields})


def statuses(*docs: dict[str, Any]) -> tuple[model.MirrorStatus, ...]:
    reading = observations.combine([observations.parse({"mirrors": [d]}) for d in docs])
    assert reading.mirrors is not None
    return reading.mirrors


def test_a_mirrors_entry_becomes_a_status_entry_and_junk_is_skipped() -> None:
    doc = {"mirrors": [entry(lastError="boom", lastErrorAt=T0 - 5, lastErrorReason="other"), "junk", {}]}
    (found,) = observations.parse(doc).mirrors or ()
    assert (found.prefix, found.upstream, found.reachable) == ("hub", "https://registry-1.docker.io", True)
    assert (found.last_error, found.last_error_reason) == ("boom", "other")
    assert found.last_success_time is not None and found.last_error_time is not None
    assert found.last_success_time.timestamp() == T0
    assert observations.parse({"storage": {}}).mirrors is None


def test_pods_combine_to_the_newest_error_and_the_newest_success() -> None:
    failed = entry(reachable=False, lastError="down", lastErrorAt=T0 + 10, lastErrorReason="unavailable")
    (combined,) = statuses(entry(lastSuccessAt=T0), failed)
    assert (combined.reachable, combined.last_error) == (False, "down")
    (recovered,) = statuses(failed, entry(lastSuccessAt=T0 + 20))
    assert recovered.reachable is True and recovered.last_error == "down"


def test_refused_credentials_make_mirrors_ready_false_naming_the_secret() -> None:
    spec = [mirror(credentialsSecretRef={"name": "hub-login"})]
    shown = statuses(
        entry(
            reachable=True,
            lastError="upstream refused the credentials (HTTP 401)",
            lastErrorAt=T0 + 1,
            lastErrorReason="auth",
            lastSuccessAt=None,
        )
    )
    verdict = mirror_status.mirrors_verdict(spec, shown, observed=True)
    assert (verdict.ok, verdict.reason) == (False, "MirrorUpstreamAuthFailed")
    assert "hub-login" in verdict.message and "HTTP 401" in verdict.message
    assert "https://registry-1.docker.io" in verdict.message


def test_an_unreachable_upstream_makes_mirrors_ready_false() -> None:
    shown = statuses(
        entry(reachable=False, lastError="connect refused", lastErrorAt=T0 + 1, lastErrorReason="unavailable")
    )
    verdict = mirror_status.mirrors_verdict([mirror()], shown, observed=True)
    assert (verdict.ok, verdict.reason) == (False, "MirrorUpstreamUnreachable")
    assert "connect refused" in verdict.message


def test_an_error_older_than_the_last_success_does_not_count() -> None:
    shown = statuses(entry(lastError="old", lastErrorAt=T0 - 60, lastErrorReason="auth"))
    verdict = mirror_status.mirrors_verdict([mirror()], shown, observed=True)
    assert (verdict.ok, verdict.reason) == (True, "MirrorsOK")


def test_the_message_counts_nodes_wired_to_each_image_host() -> None:
    wiring = {"docker.io": mirror_status.Wiring(nodes=2, desired=3, not_wired=("n1: docker: not wired",))}
    shown = mirror_status.mirror_statuses(
        [mirror()], observed=statuses(entry()), previous=None, wiring=wiring
    )
    assert (shown[0].node_host, shown[0].nodes_wired) == ("docker.io", 2)
    assert shown[0].runtimes_not_wired == ["n1: docker: not wired"]
    verdict = mirror_status.mirrors_verdict([mirror()], shown, observed=True, wiring_desired=3)
    assert verdict.ok and "docker.io wired on 2/3 nodes (n1: docker: not wired)" in verdict.message
    unwired = mirror_status.mirror_statuses(
        [mirror(wireNodes=False)], observed=statuses(entry()), previous=None, wiring=wiring
    )
    assert (unwired[0].node_host, unwired[0].nodes_wired) == (None, None)


def test_the_message_names_a_wired_mirror_closed_to_anonymous_pulls() -> None:
    closed = mirror(credentialsSecretRef={"name": "hub-login"})  # with credentials: closed by default
    verdict = mirror_status.mirrors_verdict([closed], statuses(entry()), observed=True)
    assert verdict.ok and "mirror 'hub': anonymousPull is off" in verdict.message
    assert "containerd nodes pull docker.io through it with a node credential" in verdict.message
    assert "CRI-O and podman (no credentials) from the upstream itself" in verdict.message
    for opened, registry_wide in ((closed, True), (mirror(credentialsSecretRef={"name": "hub-login"},
                                  anonymousPull=True), False), (mirror(), False)):  # fmt: skip
        verdict = mirror_status.mirrors_verdict(
            [opened], statuses(entry()), observed=True, anonymous_pull=registry_wide
        )
        assert "anonymousPull is off" not in verdict.message, verdict.message


CA_ERROR = (
    "cannot load the CA bundle of upstream https://registry-1.docker.io: no certificate in "
    "/etc/dockyard/mirrors/hub/ca.crt; the previously loaded CA bundle is still used"
)


def ca_broken(**fields: Any) -> dict[str, Any]:
    """What the registry reports after the CA file changed to one it cannot load: the note in caError and
    (once) as lastError, and the request that followed answered with the previous bundle, the same second."""
    noted = {"caError": CA_ERROR, "lastError": CA_ERROR, "lastErrorAt": T0 + 0.2, "lastErrorReason": "other"}
    return entry(**{**noted, "lastSuccessAt": T0 + 0.7, **fields})


def test_a_ca_error_is_kept_per_mirror_and_from_any_pod() -> None:
    (found,) = statuses(ca_broken())
    assert found.ca_error == CA_ERROR and found.reachable is True
    (clean,) = statuses(entry(caError=None))
    assert clean.ca_error is None
    assert statuses(entry(caError=["not", "text"]))[0].ca_error is None
    for pods in ((entry(lastSuccessAt=T0 + 9), ca_broken()), (ca_broken(), entry(lastSuccessAt=T0 + 9))):
        (combined,) = statuses(*pods)
        assert combined.ca_error == CA_ERROR and combined.reachable is True


def test_a_ca_error_is_named_but_the_mirror_stays_ready() -> None:
    spec = [mirror(caSecretRef={"name": "hub-ca"})]
    for shown in (statuses(ca_broken()), statuses(ca_broken(), entry(caError=None, lastSuccessAt=T0))):
        verdict = mirror_status.mirrors_verdict(spec, shown, observed=True)
        assert (verdict.ok, verdict.reason) == (True, "MirrorCABundleInvalid"), verdict
        assert (
            "mirror 'hub': the CA bundle in Secret 'hub-ca' (key 'ca.crt') cannot be loaded"
            in verdict.message
        )
        assert "still trusts the previous one" in verdict.message and CA_ERROR in verdict.message
    fixed = mirror_status.mirrors_verdict(spec, statuses(entry(caError=None)), observed=True)
    assert (fixed.ok, fixed.reason) == (True, "MirrorsOK")


def test_a_failing_upstream_keeps_its_reason_next_to_a_ca_error() -> None:
    spec = [mirror(caSecretRef={"name": "hub-ca"}, credentialsSecretRef={"name": "hub-login"})]
    refused = ca_broken(lastError="refused (HTTP 401)", lastErrorAt=T0 + 5, lastErrorReason="auth")
    verdict = mirror_status.mirrors_verdict(spec, statuses(refused), observed=True)
    assert (verdict.ok, verdict.reason) == (False, "MirrorUpstreamAuthFailed")
    assert "hub-login" in verdict.message and "'hub-ca'" in verdict.message and CA_ERROR in verdict.message


class Fetch:
    def __init__(self) -> None:
        self.documents: list[Any] = []

    async def read_all(self, urls: list[str]) -> list[Any]:
        return list(self.documents)


def make() -> tuple[fakes.FakeKube, Fetch, Any]:
    api, fetch = fakes.FakeKube(), Fetch()
    reconciler = reconcile.Reconciler(
        client=api,  # type: ignore[arg-type]  # duck-typed stand-in
        config=settings.Settings(
            bcrypt_rounds=4, metrics_url_override="http://status.test/{namespace}/{name}"
        ),
        status_reader=fetch,
    )
    return api, fetch, reconciler


SPEC = {"storage": {"emptyDir": {}}, "mirrors": [{**HUB, "wireNodes": False}]}


def condition(api: fakes.FakeKube) -> dict[str, Any] | None:
    found = api.obj(names.KIND, "demo")["status"].get("conditions") or []
    return next((c for c in found if c["type"] == "MirrorsReady"), None)


async def test_the_reconciler_reports_status_mirrors_and_mirrors_ready() -> None:
    api, fetch, reconciler = make()
    api.put(fakes.registry(spec=SPEC))
    await reconciler.reconcile(namespace="ns", name="demo")
    first = condition(api)
    assert first is not None and (first["status"], first["reason"]) == ("Unknown", "MirrorsUnobserved")
    fetch.documents = [{"mirrors": [entry(lastError="no", lastErrorAt=T0 + 1, lastErrorReason="auth")]}]
    await reconciler.reconcile(namespace="ns", name="demo")
    shown = api.obj(names.KIND, "demo")["status"]["mirrors"]
    assert [(m["prefix"], m["lastErrorReason"]) for m in shown] == [("hub", "auth")]
    found = condition(api)
    assert found is not None and (found["status"], found["reason"]) == ("False", "MirrorUpstreamAuthFailed")
    fetch.documents = []
    await reconciler.reconcile(namespace="ns", name="demo")
    assert api.obj(names.KIND, "demo")["status"]["mirrors"] == shown
    kept = condition(api)
    assert kept is not None and kept["status"] == "False"


async def test_without_mirrors_there_is_no_status_mirrors_nor_condition() -> None:
    api, fetch, reconciler = make()
    api.put(fakes.registry(spec=SPEC))
    fetch.documents = [{"mirrors": [entry()]}]
    await reconciler.reconcile(namespace="ns", name="demo")
    assert condition(api) is not None
    body = api.obj(names.KIND, "demo")
    body["spec"] = {"storage": {"emptyDir": {}}}
    api.put(body)
    await reconciler.reconcile(namespace="ns", name="demo")
    assert condition(api) is None and not api.obj(names.KIND, "demo")["status"].get("mirrors")


async def test_a_ca_error_reaches_status_mirrors_and_mirrors_ready() -> None:
    api, fetch, reconciler = make()
    api.put(
        fakes.registry(
            spec={**SPEC, "mirrors": [{**HUB, "wireNodes": False, "caSecretRef": {"name": "hub-ca"}}]}
        )
    )
    fetch.documents = [{"mirrors": [ca_broken()]}]
    await reconciler.reconcile(namespace="ns", name="demo")
    (shown,) = api.obj(names.KIND, "demo")["status"]["mirrors"]
    assert shown["caError"] == CA_ERROR
    found = condition(api)
    assert found is not None and (found["status"], found["reason"]) == ("True", "MirrorCABundleInvalid")
    assert "'hub-ca'" in found["message"]
    fetch.documents = [{"mirrors": [entry(caError=None, lastSuccessAt=T0 + 30)]}]
    await reconciler.reconcile(namespace="ns", name="demo")
    (shown,) = api.obj(names.KIND, "demo")["status"]["mirrors"]
    assert "caError" not in shown
    found = condition(api)
    assert found is not None and (found["status"], found["reason"]) == ("True", "MirrorsOK")
