"""The child writer (`writer.Writer`) against a real kube-apiserver: server-side apply and its conflicts.

Covers:
- an absent object is created by apply; applying it again unchanged writes nothing (same resourceVersion);
- a field another field manager changed (a hand edit) is taken back: the unforced apply meets the conflict,
  the writer forces, and the field is the operator's again;
- what other managers own and the operator does not set (their labels, an allocated nodePort) is kept;
- a Service port someone added is dropped, and a port renumbered under the operator's port name (which apply
  alone cannot fix: it keys ports by number) is set back, keeping the allocated nodePort;
- a write that lost a race (the object changed between read and apply) is decided again on the newer version;
- an object the caller already read costs no GET; a stale one (changed since) fails the write's precondition
  and is read and decided again;
- an object that fails the caller's ownership check is never written; an absent object that may not be
  created raises `Vanished` and stays absent; create-only leaves an existing object untouched;
- an owner reference another manager set is dropped (others stay); dropping from a stale read whose list has
  changed fails (the guarded patch) instead of removing someone else's reference.
"""

from __future__ import annotations

import collections.abc
from typing import Any

import lightkube
import lightkube.resources.core_v1
import pytest
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.types import PatchType

from dockyard_operator import kube as operator_kube
from dockyard_operator import names, writer
from tests.support import kube

pytestmark = pytest.mark.integration

core = lightkube.resources.core_v1
MANAGER = "dockyard-operator"


@pytest.fixture
async def client(control_plane: kube.ControlPlane) -> collections.abc.AsyncIterator[operator_kube.Kube]:
    async_client = lightkube.AsyncClient(
        config=lightkube.KubeConfig.from_file(control_plane.kubeconfig), field_manager=MANAGER
    )
    api = operator_kube.Kube(async_client, field_manager=MANAGER)
    yield api
    await api.close()


def configmap(namespace: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "child", "namespace": namespace, "labels": {"app.kubernetes.io/name": "x"}},
        "data": dict(data),
    }


def service(namespace: str, *ports: tuple[str, int]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "child", "namespace": namespace},
        "spec": {
            "type": "NodePort",
            "selector": {"app": "x"},
            "ports": [{"name": n, "port": p, "targetPort": p} for n, p in ports],
        },
    }


def managers_of(obj: Any, field: str) -> set[str]:
    """Field managers whose managedFields entry mentions `field` (e.g. `f:a`)."""
    return {
        entry.manager
        for entry in obj.metadata.managedFields or []
        if field in str(entry.fieldsV1 or {}) and entry.manager
    }


async def test_an_unchanged_object_is_written_once(client: operator_kube.Kube, namespace: str) -> None:
    writes = writer.Writer(client)
    first = await writes.apply(configmap(namespace, a="1"))
    again = await writes.apply(configmap(namespace, a="1"))
    assert first.created and not again.created and again.changed == ()
    assert again.live["metadata"]["resourceVersion"] == first.live["metadata"]["resourceVersion"]
    assert first.live["metadata"]["annotations"][names.SPEC_HASH]
    assert writes.is_own_write(first.live, deleted=False)


async def test_a_field_another_manager_changed_is_taken_back(
    client: operator_kube.Kube, kube_client: lightkube.Client, namespace: str
) -> None:
    writes = writer.Writer(client)
    await writes.apply(configmap(namespace, a="1"))
    kube_client.patch(
        core.ConfigMap,
        "child",
        {"data": {"a": "hand edit", "theirs": "kept"}, "metadata": {"labels": {"team": "blue"}}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )
    written = await writes.apply(configmap(namespace, a="1"))
    assert written.changed == ("data.a",)
    live = kube_client.get(core.ConfigMap, "child", namespace=namespace)
    assert live.data == {"a": "1", "theirs": "kept"}
    assert live.metadata.labels == {"app.kubernetes.io/name": "x", "team": "blue"}
    assert managers_of(live, "f:a") == {MANAGER}


async def test_list_entries_of_other_managers_are_dropped_and_allocated_ports_kept(
    client: operator_kube.Kube, kube_client: lightkube.Client, namespace: str
) -> None:
    writes = writer.Writer(client)
    created = await writes.apply(service(namespace, ("https", 443)))
    node_port = created.live["spec"]["ports"][0]["nodePort"]
    ports = [{"name": "https", "port": 443, "targetPort": 443, "nodePort": node_port}]
    kube_client.patch(
        core.Service,
        "child",
        {"spec": {"ports": [*ports, {"name": "extra", "port": 80, "targetPort": 80}]}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )
    await writes.apply(service(namespace, ("https", 443)))
    live = kube_client.get(core.Service, "child", namespace=namespace)
    assert [(p.name, p.port, p.nodePort) for p in live.spec.ports] == [("https", 443, node_port)]

    renumbered = [{"name": "https", "port": 8443, "targetPort": 443, "nodePort": node_port}]
    kube_client.patch(
        core.Service,
        "child",
        {"spec": {"ports": renumbered}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )
    await writes.apply(service(namespace, ("https", 443)))
    live = kube_client.get(core.Service, "child", namespace=namespace)
    assert [(p.name, p.port, p.nodePort) for p in live.spec.ports] == [("https", 443, node_port)]
    assert (await writes.apply(service(namespace, ("https", 443)))).changed == ()


async def test_a_write_that_lost_a_race_is_decided_again(
    client: operator_kube.Kube, kube_client: lightkube.Client, namespace: str
) -> None:
    writes = writer.Writer(client)
    await writes.apply(configmap(namespace, a="1"))
    real_get = client.get
    raced = {"once": True}

    async def get_then_someone_writes(**ref: Any) -> dict[str, Any] | None:
        found = await real_get(**ref)
        if raced.pop("once", False):
            kube_client.patch(
                core.ConfigMap, "child", {"data": {"b": "2"}}, namespace=namespace, patch_type=PatchType.MERGE
            )
        return found

    client.get = get_then_someone_writes  # type: ignore[method-assign]
    written = await writes.apply(configmap(namespace, a="changed"))
    assert not raced
    assert written.live["data"] == {"a": "changed", "b": "2"}


async def test_a_read_handed_in_saves_the_get_and_a_stale_one_is_read_again(
    client: operator_kube.Kube, kube_client: lightkube.Client, namespace: str
) -> None:
    writes = writer.Writer(client)
    first = (await writes.apply(configmap(namespace, a="1"))).live
    real_get = client.get
    gets: list[dict[str, Any]] = []

    async def counting_get(**ref: Any) -> dict[str, Any] | None:
        gets.append(ref)
        return await real_get(**ref)

    client.get = counting_get  # type: ignore[method-assign]
    unchanged = await writes.apply(configmap(namespace, a="1"), read=first)
    assert gets == [] and unchanged.changed == ()
    kube_client.patch(
        core.ConfigMap,
        "child",
        {"data": {"a": "hand-edited"}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )
    written = await writes.apply(configmap(namespace, a="2"), read=first)  # `first` is stale now
    assert len(gets) == 1  # the API refused the write on the stale version: read again, decided again
    assert written.changed
    assert kube_client.get(core.ConfigMap, "child", namespace=namespace).data == {"a": "2"}


async def test_objects_that_are_not_ours_or_may_not_be_created_are_left_alone(
    client: operator_kube.Kube, kube_client: lightkube.Client, namespace: str
) -> None:
    writes = writer.Writer(client)
    kube_client.create(core.ConfigMap.from_dict(configmap(namespace, a="theirs")))
    with pytest.raises(writer.NotOurs, match="belongs to the tests"):
        await writes.apply(configmap(namespace, a="ours"), ours=lambda live: "belongs to the tests")
    assert kube_client.get(core.ConfigMap, "child", namespace=namespace).data == {"a": "theirs"}

    kept = await writes.create(configmap(namespace, a="ours"))
    assert not kept.created and kept.live["data"] == {"a": "theirs"}

    kube_client.delete(core.ConfigMap, "child", namespace=namespace)
    with pytest.raises(writer.Vanished):
        await writes.apply(configmap(namespace, a="ours"), may_create=False)
    assert await client.get(api_version="v1", kind="ConfigMap", namespace=namespace, name="child") is None


def owner(kube_client: lightkube.Client, namespace: str, name: str) -> dict[str, Any]:
    """A reference to a ConfigMap that exists: the control plane's garbage collector deletes a child
    whose owners are all gone, so made-up UIDs would race it."""
    made: Any = kube_client.create(
        core.ConfigMap(metadata=ObjectMeta(name=name, namespace=namespace)), namespace=namespace
    )
    return {"apiVersion": "v1", "kind": "ConfigMap", "name": name, "uid": made.metadata.uid}


async def test_an_owner_reference_another_manager_set_is_dropped_and_the_others_stay(
    client: operator_kube.Kube, kube_client: lightkube.Client, namespace: str
) -> None:
    writes = writer.Writer(client)
    created = await writes.apply(configmap(namespace, a="1"))
    ours, theirs = owner(kube_client, namespace, "a"), owner(kube_client, namespace, "b")
    # Set by someone else (an older operator's update): an apply without it would not remove it.
    kube_client.patch(
        core.ConfigMap,
        "child",
        {"metadata": {"ownerReferences": [ours, theirs]}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
        field_manager="someone-else",
    )
    live = await client.get(api_version="v1", kind="ConfigMap", namespace=namespace, name="child")
    assert live is not None and created.live["metadata"]["uid"] == live["metadata"]["uid"]

    released = await writes.drop_owner_reference(live, uid=ours["uid"])
    assert [ref["uid"] for ref in released["metadata"]["ownerReferences"]] == [theirs["uid"]]
    assert released["data"] == {"a": "1"}
    # Nothing to drop: no write.
    again = await writes.drop_owner_reference(released, uid=ours["uid"])
    assert again["metadata"]["resourceVersion"] == released["metadata"]["resourceVersion"]


async def test_dropping_from_a_stale_read_fails_instead_of_removing_another_reference(
    client: operator_kube.Kube, kube_client: lightkube.Client, namespace: str
) -> None:
    writes = writer.Writer(client)
    await writes.apply(configmap(namespace, a="1"))
    ours, theirs = owner(kube_client, namespace, "a"), owner(kube_client, namespace, "b")
    patch = {"metadata": {"ownerReferences": [ours]}}
    kube_client.patch(core.ConfigMap, "child", patch, namespace=namespace, patch_type=PatchType.MERGE)
    stale = await client.get(api_version="v1", kind="ConfigMap", namespace=namespace, name="child")
    assert stale is not None
    # Meanwhile the list changed: index 0 is now someone else's reference.
    patch = {"metadata": {"ownerReferences": [theirs, ours]}}
    kube_client.patch(core.ConfigMap, "child", patch, namespace=namespace, patch_type=PatchType.MERGE)

    with pytest.raises(operator_kube.Invalid):  # what the children step reports and retries
        await writes.drop_owner_reference(stale, uid=ours["uid"])
    live: Any = kube_client.get(core.ConfigMap, "child", namespace=namespace)
    assert [ref.uid for ref in live.metadata.ownerReferences] == [theirs["uid"], ours["uid"]]
