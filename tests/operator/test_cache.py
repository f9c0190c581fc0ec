"""The watch-fed cache (`cache.py`, read through `cached_client.py`): what it keeps, what its answers mean,
and a pass reading from it.

Pure: the store is fed here as `handlers.py` feeds it from kopf (`observe`, `forget`, `mark_primed`), and the
client it wraps is `fakes.FakeKube`, counting the GETs that reach it.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
from typing import Any

import kopf
import pytest

from dockyard_operator import cache, cached_client, names, reconcile, settings
from dockyard_operator import handlers as operator_handlers
from tests.operator import fakes

OURS = {names.LABEL_MANAGED_BY: names.MANAGED_BY}


def configmap(
    name: str, *, labels: dict[str, str] | None = None, uid: str = "u1", data: str = "x"
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": uid,
            "resourceVersion": "1",
            "labels": dict(labels if labels is not None else OURS),
            "managedFields": [{"manager": "dockyard-operator", "fieldsV1": {"f:data": {}}}],
        },
        "data": {"k": data},
    }


def secret(name: str, *, uid: str = "s1", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "ns", "uid": uid, "labels": labels or {}},
        "data": {"password": "cHc="},
    }


KEY = ("ConfigMap", "ns", "demo-nginx")


def test_keeps_our_objects_without_managed_fields_and_hands_out_copies() -> None:
    store = cache.Cache()
    store.observe(configmap("demo-nginx"))
    known, found = store.lookup(KEY)
    assert known and found is not None
    assert found["data"] == {"k": "x"}
    assert "managedFields" not in found["metadata"]
    found["data"]["k"] = "changed by a caller"
    assert store.lookup(KEY)[1] == {**found, "data": {"k": "x"}}


def nginx_configmap(registry: str) -> dict[str, Any]:
    body = configmap(f"{registry}-nginx", uid=registry, data="server { listen 5443 ssl; } " * 40 + registry)
    body["metadata"]["ownerReferences"] = [
        {"apiVersion": names.API_VERSION, "kind": names.KIND, "name": registry}
    ]
    return body


def test_children_of_one_shape_share_a_dictionary_and_read_back_whole() -> None:
    store = cache.Cache()
    store.observe(nginx_configmap("alpha"))
    first = store.footprint()
    store.observe(nginx_configmap("beta"))
    assert store.footprint() - first < len(cache.compact(nginx_configmap("beta"))) / 2
    for registry in ("alpha", "beta"):
        found = store.lookup(("ConfigMap", "ns", f"{registry}-nginx"))[1]
        expected = nginx_configmap(registry)
        del expected["metadata"]["managedFields"]
        assert found == expected


def test_a_secret_never_becomes_a_dictionary_so_its_data_leaves_with_it() -> None:
    store = cache.Cache()
    own = secret("alpha-tls", labels=OURS)
    store.observe(own)
    assert store.footprint() == len(cache.compact(own))
    store.forget(own)
    assert store.footprint() == 0


def test_an_object_owned_by_a_registry_is_kept_without_the_label() -> None:
    store = cache.Cache()
    owned = configmap("demo-nginx", labels={})
    owned["metadata"]["ownerReferences"] = [
        {"apiVersion": names.API_VERSION, "kind": names.KIND, "name": "demo"}
    ]
    store.observe(owned)
    assert store.lookup(KEY)[1] is not None


def test_someone_elses_object_is_not_kept_and_a_child_losing_our_label_leaves() -> None:
    store = cache.Cache()
    store.observe(configmap("foreign", labels={"app": "theirs"}))
    assert store.lookup(("ConfigMap", "ns", "foreign")) == (False, None)
    store.observe(configmap("demo-nginx"))
    store.observe(configmap("demo-nginx", labels={}))  # someone removed our label
    assert store.lookup(KEY) == (False, None)  # unknown: the next read asks the API
    assert store.size() == 0


def test_kinds_the_operator_does_not_watch_are_never_kept() -> None:
    store = cache.Cache()
    store.observe({**configmap("demo"), "apiVersion": "v1", "kind": "ServiceAccount"})
    assert store.size() == 0


def test_a_deletion_removes_the_entry_but_not_its_successors() -> None:
    store = cache.Cache()
    store.observe(configmap("demo-nginx", uid="old"))
    store.forget(configmap("demo-nginx", uid="old"))
    assert store.lookup(KEY) == (False, None)
    store.observe(configmap("demo-nginx", uid="new", data="y"))
    store.forget(configmap("demo-nginx", uid="old"))  # the old object's deletion, processed late
    found = store.lookup(KEY)[1]
    assert found is not None and found["data"] == {"k": "y"}


def test_no_entry_means_none_of_ours_only_once_primed() -> None:
    store = cache.Cache()
    assert store.lookup(KEY, ours_only=True) == (False, None)
    store.mark_primed()
    assert store.lookup(KEY, ours_only=True) == (True, None)
    assert store.lookup(KEY) == (False, None)  # someone else's object of that name is never cached


def test_a_referenced_secret_is_kept_only_while_a_registry_references_it() -> None:
    store = cache.Cache()
    key = ("Secret", "ns", "pw")
    store.observe(secret("pw"))
    assert store.size() == 0  # nobody references it yet
    store.refer(namespace="ns", registry="a", secrets={"pw"})
    store.refer(namespace="ns", registry="b", secrets={"pw"})
    store.observe(secret("pw"))
    assert store.lookup(key)[1] is not None
    store.refer(namespace="ns", registry="a", secrets=())
    assert store.lookup(key)[1] is not None  # b still references it
    store.refer(namespace="ns", registry="b", secrets={"other"})
    assert store.lookup(key) == (False, None)
    assert store.size() == 0


def test_an_owned_secret_stays_when_no_registry_references_it_by_name() -> None:
    store = cache.Cache()
    store.refer(namespace="ns", registry="a", secrets={"demo-htpasswd"})
    store.observe(secret("demo-htpasswd", labels=OURS))
    store.refer(namespace="ns", registry="a", secrets=())
    assert store.lookup(("Secret", "ns", "demo-htpasswd"))[1] is not None


def test_a_referenced_secret_read_or_deleted_as_absent_is_known_absent() -> None:
    store = cache.Cache()
    key = ("Secret", "ns", "pw")
    store.refer(namespace="ns", registry="a", secrets={"pw"})
    assert store.lookup(key) == (False, None)  # never seen: ask
    store.read(key, None, touched=False)
    assert store.lookup(key) == (True, None)
    store.observe(secret("pw"))
    assert store.lookup(key)[1] is not None
    store.forget(secret("pw"))
    assert store.lookup(key) == (True, None)


def test_an_event_during_a_get_wins_over_the_gets_answer() -> None:
    store = cache.Cache()
    with store.reading(KEY) as reading:
        store.forget(configmap("demo-nginx"))  # deleted while the GET was on its way
        touched = reading.touched
    store.read(KEY, configmap("demo-nginx"), touched=touched)
    assert store.lookup(KEY) == (False, None)
    with store.reading(KEY) as reading:
        touched = reading.touched
    store.read(KEY, configmap("demo-nginx"), touched=touched)
    assert store.lookup(KEY)[1] is not None


def test_a_get_answering_absent_drops_a_stale_entry() -> None:
    store = cache.Cache()
    store.observe(configmap("demo-nginx"))
    store.read(KEY, None, touched=False)  # its deletion's event was lost (a watch that re-listed)
    assert store.lookup(KEY) == (False, None)


# ---------------------------------------------------------------------------------- the client


@dataclasses.dataclass
class CountingKube(fakes.FakeKube):
    gets: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    async def get(self, *, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.gets.append((kind, name))
        return await super().get(api_version=api_version, kind=kind, namespace=namespace, name=name)


REF = {"api_version": "v1", "kind": "ConfigMap", "namespace": "ns", "name": "demo-nginx"}


async def test_the_client_reads_a_known_child_from_memory_and_its_own_writes_feed_it() -> None:
    api = CountingKube()
    client = cached_client.CachedClient(api, cache.Cache())
    assert await client.get(**REF) is None
    assert await client.get(**REF) is None
    assert len(api.gets) == 2  # absent: a child someone else holds the name of is not cached, so ask
    manifest = {k: v for k, v in configmap("demo-nginx").items()}
    manifest["metadata"] = {
        k: v for k, v in manifest["metadata"].items() if k in ("name", "namespace", "labels")
    }
    written = await client.apply(manifest=manifest)
    found = await client.get(**REF)
    assert (
        found is not None and found["metadata"]["resourceVersion"] == written["metadata"]["resourceVersion"]
    )
    assert len(api.gets) == 2


async def test_the_client_asks_once_for_a_child_it_has_not_seen() -> None:
    api = CountingKube()
    api.put(configmap("demo-nginx"))
    client = cached_client.CachedClient(api, cache.Cache())
    assert (await client.get(**REF) or {})["data"] == {"k": "x"}
    assert (await client.get(**REF) or {})["data"] == {"k": "x"}
    assert api.gets == [("ConfigMap", "demo-nginx")]


async def test_fresh_reads_go_to_the_api_and_refresh_the_cache() -> None:
    api = CountingKube()
    store = cache.Cache()
    client = cached_client.CachedClient(api, store)
    store.observe(configmap("demo-nginx"))
    api.put(configmap("demo-nginx", data="edited"))  # nobody told the cache
    assert (await client.get(**REF) or {})["data"] == {"k": "x"}
    with cached_client.fresh():
        assert (await client.get(**REF) or {})["data"] == {"k": "edited"}
    assert (await client.get(**REF) or {})["data"] == {"k": "edited"}
    assert len(api.gets) == 1


async def test_a_fresh_block_rereads_only_entries_not_confirmed_for_a_while() -> None:
    now = [1000.0]
    api = CountingKube()
    api.put(configmap("demo-nginx"))
    store = cache.Cache(clock=lambda: now[0])
    store.mark_primed()
    client = cached_client.CachedClient(api, store)
    store.observe(configmap("demo-nginx"))
    pdb = {"api_version": "policy/v1", "kind": "PodDisruptionBudget", "namespace": "ns", "name": "demo"}
    now[0] += 100
    with cached_client.fresh(older_than=300):
        assert await client.get(**REF) is not None
        assert await client.get_ours(**pdb) is None  # a re-list would have brought one: no need to ask
    assert api.gets == []
    now[0] += 300
    api.remove("ConfigMap", "demo-nginx")  # its deletion event was lost
    with cached_client.fresh(older_than=300):
        assert await client.get(**REF) is None
    assert api.gets == [("ConfigMap", "demo-nginx")]
    assert store.lookup(KEY) == (False, None)


async def test_get_ours_asks_only_until_kopf_listed_everything() -> None:
    api = CountingKube()
    store = cache.Cache()
    client = cached_client.CachedClient(api, store)
    ref = {"api_version": "policy/v1", "kind": "PodDisruptionBudget", "namespace": "ns", "name": "demo"}
    assert await client.get_ours(**ref) is None
    store.mark_primed()
    assert await client.get_ours(**ref) is None
    assert len(api.gets) == 1


async def test_get_ours_shows_a_secret_someone_else_holds_the_name_of() -> None:
    api = CountingKube()
    store = cache.Cache()
    client = cached_client.CachedClient(api, store)
    foreign = api.put(secret("demo-ca", labels={"app": "theirs"}))
    store.observe(foreign)  # kopf delivers every Secret: the cache remembers the name is taken
    store.mark_primed()
    ref = {"api_version": "v1", "kind": "Secret", "namespace": "ns"}
    assert await client.get_ours(**ref, name="demo-tls") is None
    assert api.gets == []
    found = await client.get_ours(**ref, name="demo-ca")
    assert found is not None and found["metadata"]["labels"] == {"app": "theirs"}
    store.forget(foreign)
    assert await client.get_ours(**ref, name="demo-ca") is None
    assert api.gets == [("Secret", "demo-ca")]


async def test_kinds_outside_the_cache_always_go_to_the_api() -> None:
    api = CountingKube()
    client = cached_client.CachedClient(api, cache.Cache())
    ref = {"api_version": "v1", "kind": "ServiceAccount", "namespace": "ns", "name": "default"}
    await client.get(**ref)
    await client.get(**ref)
    assert len(api.gets) == 2


# ---------------------------------------------------------------------------------- a pass on the cache


NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
USERS = [{"name": "alice", "access": "push", "passwordSecretRef": {"name": "alice-pw"}}]


@pytest.fixture
def api() -> CountingKube:
    api = CountingKube()
    api.put(fakes.password_secret("alice-pw", b"correct horse battery"))
    api.put(fakes.registry(spec={"auth": {"users": USERS}}))
    return api


@pytest.fixture
def store() -> cache.Cache:
    store = cache.Cache()
    store.mark_primed()
    return store


@pytest.fixture
def reconciler(api: CountingKube, store: cache.Cache) -> reconcile.Reconciler:
    return reconcile.Reconciler(
        client=api,  # type: ignore[arg-type]  # duck-typed stand-in
        # No resync period: a periodic pass right after another is not skipped as recent.
        config=settings.Settings(bcrypt_rounds=4, registry_image="registry:test", resync_seconds=0.0),
        clock=lambda: NOW,
        watched=store,
    )


def child_gets(api: CountingKube) -> list[tuple[str, str]]:
    return [g for g in api.gets if g[0] != names.KIND]


async def test_a_converged_registry_is_reconciled_from_memory(
    api: CountingKube, reconciler: reconcile.Reconciler
) -> None:
    await reconciler.reconcile(namespace="ns", name="demo")
    assert api.has("Deployment", "demo")
    api.gets.clear()
    api.writes.clear()
    await reconciler.reconcile(namespace="ns", name="demo")
    assert child_gets(api) == []  # every child and the password Secret came from the cache
    assert api.child_writes() == []


async def test_the_periodic_pass_reads_the_api_and_corrects_drift_no_event_told(
    api: CountingKube, reconciler: reconcile.Reconciler
) -> None:
    await reconciler.reconcile(namespace="ns", name="demo")
    api.remove("ConfigMap", "demo-nginx")  # its deletion event was lost
    await reconciler.reconcile(namespace="ns", name="demo")
    assert not api.has("ConfigMap", "demo-nginx")  # the cache still shows it: nothing to do
    await reconciler.reconcile(namespace="ns", name="demo", periodic=True)
    assert api.has("ConfigMap", "demo-nginx")
    assert ("ConfigMap", "demo-nginx") in child_gets(api)


async def test_a_deleted_child_is_restored_by_the_pass_its_event_brings(
    api: CountingKube, reconciler: reconcile.Reconciler, store: cache.Cache
) -> None:
    await reconciler.reconcile(namespace="ns", name="demo")
    deleted = copy.deepcopy(api.obj("Service", "demo"))
    api.remove("Service", "demo")
    store.forget(deleted)  # handlers.py: the DELETED event reaches the cache before the pass it triggers
    await reconciler.reconcile(namespace="ns", name="demo")
    assert api.has("Service", "demo")


async def test_a_stale_entry_costs_a_retry_not_a_lost_edit(
    api: CountingKube, reconciler: reconcile.Reconciler, store: cache.Cache
) -> None:
    """The writer applies with the cached resourceVersion as precondition: a newer object fails it and is
    read and decided again."""
    await reconciler.reconcile(namespace="ns", name="demo")
    live = api.obj("ConfigMap", "demo-nginx")
    live["data"]["nginx.conf"] = "edited by hand"
    stale = copy.deepcopy(live)
    api.put(live)  # a newer resourceVersion the cache has not seen
    stale["metadata"]["resourceVersion"] = "1"
    store.observe(stale)
    await reconciler.reconcile(namespace="ns", name="demo")
    assert api.obj("ConfigMap", "demo-nginx")["data"]["nginx.conf"] != "edited by hand"


async def test_someone_elses_secret_of_a_childs_name_blocks_the_pass_and_stays(
    api: CountingKube, reconciler: reconcile.Reconciler, store: cache.Cache
) -> None:
    store.observe(api.put(secret("demo-htpasswd", labels={"app": "theirs"})))
    await reconciler.reconcile(namespace="ns", name="demo")
    degraded = {c["type"]: c for c in api.obj(names.KIND, "demo")["status"]["conditions"]}["Degraded"]
    assert degraded["status"] == "True" and degraded["reason"] == "NameConflict"
    assert api.obj("Secret", "demo-htpasswd")["metadata"]["labels"] == {"app": "theirs"}
    assert not api.has("Deployment", "demo")


async def test_a_deleted_registry_stops_referencing_its_password_secret(
    api: CountingKube, reconciler: reconcile.Reconciler, store: cache.Cache
) -> None:
    await reconciler.reconcile(namespace="ns", name="demo")
    assert store.lookup(("Secret", "ns", "alice-pw"))[1] is not None
    api.remove(names.KIND, "demo")
    await reconciler.reconcile(namespace="ns", name="demo")
    assert store.lookup(("Secret", "ns", "alice-pw")) == (False, None)


# ---------------------------------------------------------------------------------- kopf's side


class _Memo:
    """What handlers.py finds in kopf's memo: the cache, and a reconciler that sees only its own writes."""

    def __init__(self) -> None:
        self.cache = cache.Cache()
        self.reconciler = self
        self.triggers = self

    def is_own_write(self, body: Any, *, deleted: bool) -> bool:
        return True  # no pass: only the feeding is under test

    def seen(self, *, event: str | None, body: Any) -> None:
        """A registry's event (`triggers.Triggers.seen`): no pass either."""


@pytest.mark.parametrize("handler", ["child", "secret", "registry"])
async def test_any_event_handler_marks_the_cache_primed_even_for_an_echo_of_our_own_write(
    handler: str,
) -> None:
    # kopf runs event handlers only after every indexed kind's listing went through `cached`. Before, only a
    # handler that asked for a pass primed it, and our own writes' echoes ask for none: a new registry's first
    # pass then GOT each of its Secrets from the API (4 GETs) although none could exist.
    memo = _Memo()
    assert not memo.cache.primed
    if handler == "child":
        await operator_handlers.child_changed(
            body=kopf.Body(configmap("demo-nginx")), namespace="ns", memo=memo, type="MODIFIED"
        )
    elif handler == "secret":
        await operator_handlers.secret_changed(
            body=kopf.Body(secret("pw")),
            namespace="ns",
            name="pw",
            memo=memo,
            type="ADDED",
            registries_by_secret={},
        )
    else:
        await operator_handlers.registry_event(body=kopf.Body({"metadata": {}}), memo=memo, type="ADDED")
    assert memo.cache.primed


async def test_kopfs_handlers_feed_the_cache_with_its_bodies_and_deletions() -> None:
    memo = _Memo()
    body = kopf.Body(configmap("demo-nginx"))
    operator_handlers.cached(body=body, memo=memo)
    assert memo.cache.lookup(KEY)[1] is not None
    await operator_handlers.child_changed(body=body, namespace="ns", memo=memo, type="MODIFIED")
    assert memo.cache.lookup(KEY)[1] is not None
    await operator_handlers.child_changed(body=body, namespace="ns", memo=memo, type="DELETED")
    assert memo.cache.lookup(KEY) == (False, None)
    memo.cache.refer(namespace="ns", registry="demo", secrets={"pw"})
    password = kopf.Body(secret("pw"))
    operator_handlers.cached(body=password, memo=memo)
    assert memo.cache.lookup(("Secret", "ns", "pw"))[1] is not None
    await operator_handlers.secret_changed(
        body=password, namespace="ns", name="pw", memo=memo, type="DELETED", registries_by_secret={}
    )
    assert memo.cache.lookup(("Secret", "ns", "pw")) == (True, None)
