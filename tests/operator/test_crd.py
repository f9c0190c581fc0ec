"""The generated CustomResourceDefinition.

Covers: the committed crds/ file is exactly what `make crds` generates; the schema is structural (no `$ref`,
no `anyOf` carrying types except int-or-string, every property typed and described); enums, patterns, bounds,
defaults and CEL rules reach the schema; users are a map list keyed by name; status and scale subresources;
short name `preg`; the printer columns.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import yaml

from dockyard_operator import crd

COMMITTED = pathlib.Path(__file__).resolve().parents[2] / "crds" / "privateregistries.dockyard.dev.yaml"


def _version() -> dict[str, Any]:
    versions = crd.crd()["spec"]["versions"]
    assert len(versions) == 1
    return versions[0]  # type: ignore[no-any-return]


def _schema() -> dict[str, Any]:
    return _version()["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for name, prop in (node.get("properties") or {}).items():
            yield from _walk(prop, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            yield from _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_the_committed_crd_is_what_make_crds_generates() -> None:
    assert COMMITTED.read_text() == crd.render(), "crds/ is stale: run `make crds`"


def test_the_rendered_yaml_round_trips_to_the_same_dict() -> None:
    assert yaml.safe_load(crd.render()) == crd.crd()


def test_the_schema_is_structural() -> None:
    text = crd.render()
    assert "$ref" not in text and "$defs" not in text and "title:" not in text
    for path, node in _walk(_schema()):
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
            continue
        assert "type" in node, f"{path} has no type"
        assert "anyOf" not in node and "oneOf" not in node, path
        assert node.get("additionalProperties") is not False, path


def test_every_spec_and_status_property_is_described() -> None:
    for root in ("spec", "status"):
        for path, node in _walk(_schema()["properties"][root], root):
            if path.endswith("[]") or path.endswith("{}"):
                continue
            assert node.get("description"), f"{path} has no description"


def test_validation_lives_in_the_schema() -> None:
    spec = _schema()["properties"]["spec"]["properties"]
    assert spec["replicas"]["minimum"] == 0 and spec["replicas"]["default"] == 1
    assert spec["expose"]["properties"]["type"]["enum"] == ["ClusterIP", "NodePort", "LoadBalancer"]
    assert spec["expose"]["properties"]["nodePort"]["maximum"] == 32767
    assert spec["tls"]["properties"]["mode"]["enum"] == ["SelfSigned", "Secret"]
    assert spec["tls"]["properties"]["certDuration"]["pattern"]
    users = spec["auth"]["properties"]["users"]
    assert users["x-kubernetes-list-type"] == "map" and users["x-kubernetes-list-map-keys"] == ["name"]
    assert users["items"]["properties"]["access"]["enum"] == ["pull", "push", "admin"]
    assert users["items"]["required"] == ["name", "passwordSecretRef"]
    rules = [r["rule"] for r in spec["tls"]["x-kubernetes-validations"]]
    assert any("renewBefore" in r for r in rules)
    assert spec["storage"]["x-kubernetes-validations"]
    assert spec["nginx"]["properties"]["clientMaxBodySize"]["default"] == "0"


def test_nested_sections_default_to_empty_objects_so_the_server_fills_them() -> None:
    spec = _schema()["properties"]["spec"]
    assert spec["default"] == {}
    for section in ("storage", "auth", "tls", "expose", "nginx", "nodeTrust"):
        assert spec["properties"][section]["default"] == {}


def test_names_subresources_and_printer_columns() -> None:
    spec = crd.crd()["spec"]
    assert spec["names"]["shortNames"] == ["preg"]
    assert spec["scope"] == "Namespaced"
    version = _version()
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert list(columns) == ["Endpoint", "Ready", "Replicas", "CA Expiry", "Age"]
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["CA Expiry"] == ".status.ca.notAfter"
