"""Which pull secret copies and hosting ConfigMaps the orphan sweep looks up (`reconcile.orphans`, pure parts;
the sweep itself runs against the real API server in tests/integration/operator/test_orphans.py).

Covers:
- a copy names its registry by the `dockyard.dev/pull-secret-registry` annotation, or, written before it, by
  its label split at the first dot; a label that may be a digest of a long name names none (left alone);
- a copy of a registry the triggers know costs no lookup; one of an unknown registry is a suspect, grouped by
  registry (one lookup for all its copies);
- namespaces the operator does not manage are never swept: neither a copy there nor a copy naming a
  registry there;
- the hosting ConfigMap is a suspect only when a registry wrote it and the triggers do not know that one.
"""

from __future__ import annotations

from typing import Any

from dockyard_operator import hosting, names, pullsecrets
from dockyard_operator.reconcile import orphans


def copy(namespace: str, *, label: str, annotation: str | None = None, name: str = "pull") -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": namespace, "name": name, "labels": {pullsecrets.FOR_LABEL: label}}
    if annotation is not None:
        meta["annotations"] = {pullsecrets.REGISTRY_ANNOTATION: annotation}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta}


def test_a_new_copy_names_its_registry_in_full_even_when_its_label_is_a_digest() -> None:
    long_name = "r" * 80
    secret = pullsecrets.secret(
        name="pull", namespace="apps", registry_namespace="team", registry=long_name, config=b"{}"
    )

    assert secret["metadata"]["labels"][pullsecrets.FOR_LABEL] != f"team.{long_name}"  # shortened
    assert pullsecrets.registry_of(secret) == ("team", long_name)


def test_an_older_copy_names_its_registry_by_its_label_split_at_the_first_dot() -> None:
    assert pullsecrets.registry_of(copy("apps", label="team.demo.v2")) == ("team", "demo.v2")


def test_a_label_that_may_be_a_digest_or_is_malformed_names_no_registry() -> None:
    hashed = names.label_value("team." + "r" * 80)
    assert pullsecrets.registry_of(copy("apps", label=hashed)) is None
    assert pullsecrets.registry_of(copy("apps", label="no-dot")) is None
    assert pullsecrets.registry_of(copy("apps", label="team.demo", annotation="not-a-key")) is None


def test_copies_of_known_registries_cost_no_lookup_and_unknown_ones_group_by_registry() -> None:
    copies = [
        copy("apps", label="team.live"),
        copy("apps", label="team.gone", annotation="team/gone"),
        copy("web", label="team.gone"),
        copy("web", label=names.label_value("team." + "r" * 80)),
    ]

    found = orphans.suspects(copies, known={("team", "live")})

    assert sorted(found.copies) == [("team", "gone")]
    assert [c["metadata"]["namespace"] for c in found.copies[("team", "gone")]] == ["apps", "web"]
    assert len(found.unknown) == 1


def test_namespaces_the_operator_does_not_manage_are_never_swept() -> None:
    copies = [
        copy("elsewhere", label="team.gone"),  # a copy in an unmanaged namespace
        copy("apps", label="other.gone"),  # a copy naming a registry in an unmanaged namespace
        copy("apps", label="team.gone"),
    ]

    found = orphans.suspects(copies, known=set(), watched=("apps", "team"))

    assert list(found.copies) == [("team", "gone")]
    assert [c["metadata"]["namespace"] for c in found.copies[("team", "gone")]] == ["apps"]
    assert orphans.suspects(copies, known=set()).copies.keys() == {("team", "gone"), ("other", "gone")}


def test_the_hosting_configmap_is_a_suspect_only_when_an_unknown_registry_wrote_it() -> None:
    written = hosting.configmap(owner="team/gone", node_endpoint="localhost:30500", cluster_endpoint="x")
    users_own: dict[str, Any] = {"metadata": {"name": hosting.NAME, "namespace": hosting.NAMESPACE}}

    assert orphans.hosting_suspect(written, known=set()) == ("team", "gone")
    assert orphans.hosting_suspect(written, known={("team", "gone")}) is None
    assert orphans.hosting_suspect(written, known=set(), watched=("apps",)) is None
    assert orphans.hosting_suspect(users_own, known=set()) is None
    assert orphans.hosting_suspect(None, known=set()) is None
