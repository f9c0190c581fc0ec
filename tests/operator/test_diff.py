"""Drift detection, the spec hash, and the list repairs server-side apply cannot make.

Covers: server-added fields are not drift; a changed, missing or removed owned field is; equal quantities in
different spellings are not drift; the spec hash ignores key order and the hash annotation itself; a matching
hash does not hide drift; list entries another field manager added to a list we set are found for removal
(nested lists and escaped keys addressed by JSON pointer, owner references left alone) while server-filled
fields of our entries stay; a renumbered entry under our name is set back. (What server-side apply itself
keeps, foreign labels, allocated ports, restartedAt, is tested against a real API server in
tests/integration/operator/test_writer.py.)
"""

from __future__ import annotations

import decimal

from dockyard_operator import diff, names


def test_server_added_fields_are_not_drift() -> None:
    desired = {"spec": {"ports": [{"port": 443}], "type": "ClusterIP"}}
    live = {
        "spec": {"ports": [{"port": 443, "nodePort": None}], "type": "ClusterIP", "clusterIP": "10.0.0.1"}
    }
    assert diff.drift(desired, live) == []


def test_changed_and_missing_owned_fields_are_drift() -> None:
    desired = {"spec": {"replicas": 2, "template": {"volumes": [{"name": "d", "emptyDir": {}}]}}}
    assert diff.drift(
        desired, {"spec": {"replicas": 3, "template": {"volumes": [{"name": "d", "emptyDir": {}}]}}}
    ) == ["spec.replicas"]
    assert diff.drift(
        desired, {"spec": {"replicas": 2, "template": {"volumes": [{"name": "d", "secret": {}}]}}}
    ) == ["spec.template.volumes.0.emptyDir"]
    assert diff.drift({"a": [1, 2]}, {"a": [1]}) == ["a"]


def test_equal_quantities_in_different_spellings_are_not_drift() -> None:
    assert (
        diff.drift(
            {"resources": {"requests": {"storage": "1024Mi"}}},
            {"resources": {"requests": {"storage": "1Gi"}}},
        )
        == []
    )
    assert diff.drift({"limits": {"cpu": "1000m"}}, {"limits": {"cpu": "1"}}) == []
    assert diff.drift({"limits": {"cpu": "2"}}, {"limits": {"cpu": "1"}}) == ["limits.cpu"]
    assert diff.drift({"image": "1Gi"}, {"image": "1024Mi"}) == [
        "image"
    ]  # only quantity fields compare numerically
    assert diff.quantity("1.5Gi") == decimal.Decimal(1.5 * 2**30)
    assert diff.quantity("1e3") == 1000
    assert diff.quantity("lots") is None


def test_the_spec_hash_ignores_key_order_and_its_own_annotation() -> None:
    a = {"metadata": {"name": "x"}, "data": {"a": "1", "b": "2"}}
    b = {"data": {"b": "2", "a": "1"}, "metadata": {"name": "x", "annotations": {names.SPEC_HASH: "old"}}}
    assert diff.spec_hash(a) == diff.spec_hash(b)
    assert diff.spec_hash(a) != diff.spec_hash({**a, "data": {"a": "1"}})


def test_the_spec_hash_of_an_object_is_the_one_earlier_versions_wrote() -> None:
    # A different digest for the same desired object would rewrite every child of every registry once after
    # an upgrade (and roll nothing, but cost a write each): these values were written by the previous version.
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "r",
            "namespace": "ns",
            "labels": {"a": "b"},
            "annotations": {names.SPEC_HASH: "old", "x": "y"},
            "ownerReferences": [{"uid": "u", "name": "r"}],
        },
        "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "c", "args": ["--a", "b"]}]}}},
    }
    assert diff.spec_hash(deployment) == "59e481b4224bd86667a4fa3f61d48ac1"
    only_hash = {
        "kind": "ConfigMap",
        "metadata": {"name": "x", "annotations": {names.SPEC_HASH: "o"}},
        "data": {"k": "v"},
    }
    no_annotations = {"kind": "ConfigMap", "metadata": {"name": "x", "annotations": {}}, "data": {"k": "v"}}
    assert diff.spec_hash(only_hash) == diff.spec_hash(no_annotations) == "dfa8b4fb6e62d49ffadb671fdb084430"


def test_with_spec_hash_annotates_a_new_object_and_leaves_the_desired_one_as_it_was() -> None:
    desired = {
        "kind": "ConfigMap",
        "metadata": {"name": "x", "annotations": {"keep": "1"}},
        "data": {"k": "v"},
    }
    hashed = diff.with_spec_hash(desired)
    assert hashed["metadata"]["annotations"] == {"keep": "1", names.SPEC_HASH: diff.spec_hash(desired)}
    assert desired == {
        "kind": "ConfigMap",
        "metadata": {"name": "x", "annotations": {"keep": "1"}},
        "data": {"k": "v"},
    }
    assert diff.spec_hash(hashed) == diff.spec_hash(desired)


def test_a_matching_hash_does_not_hide_drift() -> None:
    desired = diff.with_spec_hash({"kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"k": "v"}})
    live = {
        "kind": "ConfigMap",
        "metadata": {"name": "x", "annotations": dict(desired["metadata"]["annotations"])},
        "data": {"k": "edited"},
    }
    assert diff.needs_update(desired, live) == ["data.k"]
    live["data"]["k"] = "v"
    assert diff.needs_update(desired, live) == []


def test_a_missing_owner_reference_or_label_needs_an_update() -> None:
    desired = diff.with_spec_hash(
        {"metadata": {"name": "x", "labels": {"a": "1"}, "ownerReferences": [{"uid": "u"}]}}
    )
    live = {
        "metadata": {
            "name": "x",
            "labels": {"a": "1", "other": "2"},
            "annotations": desired["metadata"]["annotations"],
        }
    }
    assert diff.needs_update(desired, live) == ["metadata.ownerReferences"]
    live["metadata"]["ownerReferences"] = [{"uid": "u"}]
    live["metadata"]["labels"] = {}
    assert diff.needs_update(desired, live) == ["metadata.labels.a"]


def test_list_entries_another_manager_added_are_dropped_keeping_server_fields() -> None:
    desired = {"spec": {"ports": [{"name": "https", "port": 443}]}}
    live = {
        "metadata": {"ownerReferences": [{"uid": "other"}, {"uid": "u"}]},
        "spec": {
            "ports": [{"name": "extra", "port": 80}, {"name": "https", "port": 443, "nodePort": 31001}],
            "clusterIPs": ["10.0.0.9"],
        },
    }
    assert diff.owned_foreign_entries(desired, live) == [
        {"op": "replace", "path": "/spec/ports", "value": [{"name": "https", "port": 443, "nodePort": 31001}]}
    ]
    assert diff.owned_foreign_entries(desired, {"spec": {"ports": [{"name": "https", "port": 443}]}}) == []


def test_nested_lists_and_escaped_keys_are_addressed_by_json_pointer() -> None:
    desired = {"spec": {"template": {"a/b": {"containers": [{"name": "c", "env": [{"name": "E"}]}]}}}}
    live = {
        "spec": {"template": {"a/b": {"containers": [{"name": "c", "env": [{"name": "E"}, {"name": "F"}]}]}}}
    }
    assert diff.owned_foreign_entries(desired, live) == [
        {"op": "replace", "path": "/spec/template/a~1b/containers/0/env", "value": [{"name": "E"}]}
    ]


def test_a_renumbered_entry_under_our_name_is_set_back_keeping_what_the_server_filled_in() -> None:
    desired = {"spec": {"ports": [{"name": "https", "port": 443}]}}
    live = {"spec": {"ports": [{"name": "https", "port": 8443, "nodePort": 31001}]}}
    assert diff.owned_foreign_entries(desired, live) == []  # unmatched: apply's business first
    assert diff.owned_list_repairs(desired, live) == [
        {"op": "replace", "path": "/spec/ports", "value": [{"name": "https", "port": 443, "nodePort": 31001}]}
    ]
    assert diff.owned_list_repairs(desired, {"spec": {"ports": [{"name": "https", "port": 443}]}}) == []
