"""The child writer deciding on what its caller already read, against the in-memory API (no cluster).

Covers:
- an object handed in as read costs no GET: unchanged, nothing is written; changed, one apply;
- a stale read (someone wrote the object since) is not trusted for a write: the write's resourceVersion
  precondition fails, the writer reads the object again and decides on that, and the object ends as desired;
- a read of an absent object is not handed in: the writer reads it, so an object someone created meanwhile
  is seen (and refused when it is not ours) instead of being applied over;
- a reconcile pass reads each of its own Secrets once (the steps read them, the children step hands those
  reads to the writer), and a Secret someone edited between two passes is still set back.
"""

from __future__ import annotations

import base64
import datetime
from typing import Any

import pytest

from dockyard_operator import names, reconcile, settings, writer
from tests.operator import fakes


class CountingKube(fakes.FakeKube):
    def __init__(self) -> None:
        super().__init__()
        self.gets: list[tuple[str, str]] = []

    async def get(self, *, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.gets.append((kind, name))
        return await super().get(api_version=api_version, kind=kind, namespace=namespace, name=name)


def configmap(**data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "child", "namespace": "ns"},
        "data": dict(data),
    }


async def test_an_object_handed_in_as_read_costs_no_get() -> None:
    api = CountingKube()
    writes = writer.Writer(api)  # type: ignore[arg-type]
    live = (await writes.apply(configmap(a="1"))).live
    api.gets.clear()
    unchanged = await writes.apply(configmap(a="1"), read=live)
    assert api.gets == [] and not unchanged.changed
    writes_before = len(api.writes)
    changed = await writes.apply(configmap(a="2"), read=live)
    assert api.gets == [] and changed.changed
    assert api.writes[writes_before:] == [("update", "ConfigMap", "child")]
    assert api.obj("ConfigMap", "child")["data"] == {"a": "2"}


async def test_a_stale_read_is_read_again_and_the_object_still_ends_as_desired() -> None:
    api = CountingKube()
    writes = writer.Writer(api)  # type: ignore[arg-type]
    stale = (await writes.apply(configmap(a="1"))).live
    edited = api.obj("ConfigMap", "child")
    api.put({**edited, "data": {"a": "hand-edited"}})  # someone else's write: a newer resourceVersion
    api.gets.clear()
    written = await writes.apply(configmap(a="2"), read=stale)
    assert api.gets == [("ConfigMap", "child")]  # the precondition failed: read afresh, decided again
    assert written.changed and api.obj("ConfigMap", "child")["data"] == {"a": "2"}


async def test_an_object_created_by_someone_else_after_the_callers_read_is_seen() -> None:
    api = CountingKube()
    writes = writer.Writer(api)  # type: ignore[arg-type]
    api.put(configmap(a="theirs"))  # the caller read "absent" before this: it hands in nothing

    def not_ours(live: Any) -> str | None:
        return "belongs to someone else"

    with pytest.raises(writer.NotOurs):
        await writes.apply(configmap(a="ours"), ours=not_ours, read=None)
    assert api.obj("ConfigMap", "child")["data"] == {"a": "theirs"}


def reconciler_for(api: fakes.FakeKube) -> reconcile.Reconciler:
    return reconcile.Reconciler(
        client=api,  # type: ignore[arg-type]
        config=settings.Settings(bcrypt_rounds=4, registry_image="registry:test"),
        clock=lambda: datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    )


async def test_a_pass_reads_each_of_its_own_secrets_once_and_still_sets_an_edited_one_back() -> None:
    api = CountingKube()
    api.put(fakes.password_secret("alice-pw", b"alice-secret-pw"))
    users = [{"name": "alice", "passwordSecretRef": {"name": "alice-pw"}}]
    api.put(fakes.registry(spec={"auth": {"users": users}}))
    reconciler = reconciler_for(api)
    await reconciler.reconcile(namespace="ns", name="demo")
    child_names = names.Names.of("demo")
    own = {child_names.ca_secret, child_names.tls_secret, child_names.htpasswd_secret}
    api.gets.clear()
    await reconciler.reconcile(namespace="ns", name="demo")
    secret_gets = [name for kind, name in api.gets if kind == "Secret" and name in own]
    assert sorted(secret_gets) == sorted(own)  # each once: the steps' reads, none by the writer

    htpasswd = api.obj("Secret", child_names.htpasswd_secret)
    api.put({**htpasswd, "data": {**htpasswd["data"], "htpasswd": base64.b64encode(b"eve:x\n").decode()}})
    await reconciler.reconcile(namespace="ns", name="demo")
    restored = base64.b64decode(api.obj("Secret", child_names.htpasswd_secret)["data"]["htpasswd"])
    assert restored.startswith(b"alice:") and b"eve" not in restored
