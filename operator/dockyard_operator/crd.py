"""The `PrivateRegistry` CustomResourceDefinition, generated from `model.py`.

Owns: turning pydantic's JSON Schema into a Kubernetes *structural* schema (every `$ref` inlined, nullable
`anyOf` branches removed, titles and `additionalProperties: false` dropped, object defaults reduced to `{}` so
the API server applies the nested defaults), and the CRD envelope: names, short name `preg`, status and scale
subresources, printer columns. `python -m dockyard_operator.crd` prints the YAML that `make crds` commits to
`crds/privateregistries.dockyard.dev.yaml`.
Must not: talk to a cluster. The operator never installs its own CRD (that would need cluster-admin at run
time); the chart ships the generated file.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import pydantic
import yaml

from dockyard_operator import model, names

CRD_NAME = f"{names.PLURAL}.{names.GROUP}"

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {
        "name": "Endpoint",
        "type": "string",
        "jsonPath": ".status.endpoint",
        "description": "host:port of the registry",
    },
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "description": "Whether the registry serves requests",
    },
    {
        "name": "Replicas",
        "type": "integer",
        "jsonPath": ".status.readyReplicas",
        "description": "Ready registry pods",
    },
    # A string, not a date: kubectl renders future dates of a `date` column as "<invalid>".
    {
        "name": "CA Expiry",
        "type": "string",
        "jsonPath": ".status.ca.notAfter",
        "description": "When the CA expires",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

_DROP_KEYS = {"title"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Return `node` with `$ref`s inlined and pydantic-only constructs rewritten, recursively."""
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").rsplit("/", 1)[-1]])
        # Siblings of $ref (a field's description, its default) win over the referenced model's own.
        target.update(node)
        node = target
    any_of = node.get("anyOf")
    if isinstance(any_of, list) and any(branch == {"type": "null"} for branch in any_of):
        # `X | None` means "may be omitted"; Kubernetes expresses that by not listing it as required.
        rest = [branch for branch in any_of if branch != {"type": "null"}]
        del node["anyOf"]
        if len(rest) != 1:
            raise ValueError(f"cannot express a union of {len(rest)} types in a structural schema")
        merged = dict(rest[0])
        merged.update(node)
        node = merged
        if "$ref" in node:
            return _resolve(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "additionalProperties" and value is False:
            continue  # structural schemas prune unknown fields instead
        if key == "default" and value is None:
            continue
        if key == "description" and isinstance(value, str):
            value = " ".join(value.split())  # docstrings wrap; `kubectl explain` reflows anyway
        if key == "properties":
            out[key] = {name: _resolve(prop, defs) for name, prop in value.items()}
        elif key in {"items", "additionalProperties", "anyOf", "allOf", "oneOf"}:
            out[key] = _resolve(value, defs)
        else:
            out[key] = value
    if isinstance(out.get("default"), dict) and out.get("type") == "object" and "properties" in out:
        out["default"] = {}  # the API server then applies every nested default itself
    return out


def structural_schema(model_cls: type[pydantic.BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a pydantic model, as Kubernetes accepts it."""
    raw = model_cls.model_json_schema(by_alias=True, mode="serialization")
    defs = raw.pop("$defs", {})
    resolved = _resolve(raw, defs)
    assert isinstance(resolved, dict)
    return resolved


def _users_as_map(spec: dict[str, Any]) -> None:
    # `listType: map` keyed by name makes the API server itself reject two users with one name.
    users = spec["properties"]["auth"]["properties"]["users"]
    users["x-kubernetes-list-type"] = "map"
    users["x-kubernetes-list-map-keys"] = ["name"]


def crd() -> dict[str, Any]:
    """The full CustomResourceDefinition as a dict."""
    spec_schema = structural_schema(model.PrivateRegistrySpec)
    _users_as_map(spec_schema)
    status_schema = structural_schema(model.PrivateRegistryStatus)
    status_schema["properties"]["conditions"]["x-kubernetes-list-type"] = "map"
    status_schema["properties"]["conditions"]["x-kubernetes-list-map-keys"] = ["type"]
    spec_schema["default"] = {}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {names.LABEL_PART_OF: names.PART_OF, names.LABEL_MANAGED_BY: names.MANAGED_BY},
        },
        "spec": {
            "group": names.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": names.KIND,
                "listKind": f"{names.KIND}List",
                "plural": names.PLURAL,
                "singular": names.SINGULAR,
                "shortNames": list(names.SHORT_NAMES),
                "categories": ["dockyard"],
            },
            "versions": [
                {
                    "name": names.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                        },
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": (
                                "A private OCI registry (TLS, htpasswd users with per-repository access) "
                                "run and kept in shape by the Dockyard operator."
                            ),
                            "properties": {
                                "apiVersion": {
                                    "type": "string",
                                    "description": "Versioned schema of this object.",
                                },
                                "kind": {"type": "string", "description": "PrivateRegistry."},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


class _Dumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    # Long descriptions as folded-free block scalars would reflow; keep plain/quoted but never wrap.
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str_presenter)


def render() -> str:
    """The CRD as YAML, byte-for-byte what is committed under crds/."""
    header = "# Generated by `make crds` (python -m dockyard_operator.crd) from model.py. Do not edit.\n"
    return header + yaml.dump(crd(), Dumper=_Dumper, sort_keys=False, width=1 << 16, allow_unicode=True)


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
