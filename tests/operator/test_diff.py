"""Drift detection and the replacement object.

Covers: server-added fields are not drift; a changed, missing or removed owned field is; equal quantities in
different spellings are not drift; the spec hash ignores key order and the hash annotation itself; a matching
hash does not hide drift; replacement keeps resourceVersion, foreign labels/annotations/owners, allocated
ClusterIP and node ports, a claim's immutable fields and a Deployment's restartedAt annotation.
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


def test_replacement_keeps_what_the_server_and_others_own() -> None:
    desired = {
        "kind": "Service",
        "metadata": {
            "name": "s",
            "labels": {"a": "1"},
            "annotations": {"h": "2"},
            "ownerReferences": [{"uid": "u"}],
        },
        "spec": {"type": "NodePort", "ports": [{"name": "https", "port": 443}]},
    }
    live = {
        "metadata": {
            "name": "s",
            "resourceVersion": "7",
            "labels": {"team": "x", "a": "0"},
            "annotations": {"note": "y"},
            "ownerReferences": [{"uid": "other"}, {"uid": "u"}],
        },
        "spec": {
            "clusterIP": "10.0.0.9",
            "clusterIPs": ["10.0.0.9"],
            "ports": [{"name": "https", "port": 443, "nodePort": 31001}],
        },
    }
    out = diff.replacement(desired, live)
    assert out["metadata"]["resourceVersion"] == "7"
    assert out["metadata"]["labels"] == {"team": "x", "a": "1"}
    assert out["metadata"]["annotations"] == {"note": "y", "h": "2"}
    assert out["metadata"]["ownerReferences"] == [{"uid": "other"}, {"uid": "u"}]
    assert out["spec"]["clusterIP"] == "10.0.0.9"
    assert out["spec"]["ports"][0]["nodePort"] == 31001


def test_replacement_keeps_a_claims_immutable_fields_and_a_restart_annotation() -> None:
    claim = diff.replacement(
        {
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "c"},
            "spec": {"resources": {"requests": {"storage": "2Gi"}}},
        },
        {
            "metadata": {"resourceVersion": "1"},
            "spec": {"volumeName": "pv-1", "resources": {"requests": {"storage": "1Gi"}}},
        },
    )
    assert claim["spec"] == {"volumeName": "pv-1", "resources": {"requests": {"storage": "2Gi"}}}
    dep = diff.replacement(
        {
            "kind": "Deployment",
            "metadata": {"name": "d"},
            "spec": {"template": {"metadata": {"annotations": {"h": "2"}}}},
        },
        {
            "metadata": {},
            "spec": {
                "template": {
                    "metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "t", "h": "1"}}
                }
            },
        },
    )
    assert dep["spec"]["template"]["metadata"]["annotations"] == {
        "kubectl.kubernetes.io/restartedAt": "t",
        "h": "2",
    }
