"""Pure comparison of a desired child with the live object: which fields we own have drifted?

Owns: the "fields we own" rule (every field the builder sets must be present with the same value; fields the
API server adds by defaulting are ignored), Kubernetes quantity equivalence (`1024Mi` == `1Gi`, because the
API server canonicalizes quantities and a textual comparison would rewrite the object on every pass), the
spec-hash of a desired object, and the merge that turns a desired object into a full replacement of the live
one without dropping what others legitimately own (resourceVersion, allocated ClusterIPs and node ports, a
bound claim's volume, foreign labels/annotations/owner references).
Must not: perform I/O.
"""

from __future__ import annotations

import copy
import decimal
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from dockyard_operator import names

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$")
_SUFFIX = {
    "": decimal.Decimal(1),
    "n": decimal.Decimal("1e-9"),
    "u": decimal.Decimal("1e-6"),
    "m": decimal.Decimal("1e-3"),
    "k": decimal.Decimal("1e3"),
    "M": decimal.Decimal("1e6"),
    "G": decimal.Decimal("1e9"),
    "T": decimal.Decimal("1e12"),
    "P": decimal.Decimal("1e15"),
    "E": decimal.Decimal("1e18"),
    "Ki": decimal.Decimal(2**10),
    "Mi": decimal.Decimal(2**20),
    "Gi": decimal.Decimal(2**30),
    "Ti": decimal.Decimal(2**40),
    "Pi": decimal.Decimal(2**50),
    "Ei": decimal.Decimal(2**60),
}
_QUANTITY_PARENTS = {"limits", "requests", "capacity"}
_QUANTITY_KEYS = {"sizeLimit", "storage"}


def quantity(value: str | int | float) -> decimal.Decimal | None:
    """The numeric value of a Kubernetes quantity, or None when it is not one."""
    match = _QUANTITY.match(str(value))
    if match is None:
        return None
    number, suffix = match.groups()
    try:
        base = decimal.Decimal(number)
    except decimal.InvalidOperation:
        return None
    if suffix and suffix[0] in "eE":
        return base * (decimal.Decimal(10) ** int(suffix[1:]))
    return base * _SUFFIX[suffix or ""]


def _is_quantity_path(path: tuple[str, ...]) -> bool:
    return bool(path) and (path[-1] in _QUANTITY_KEYS or (len(path) > 1 and path[-2] in _QUANTITY_PARENTS))


def _empty(value: Any) -> bool:
    return value is None or value == [] or value == ""


def drift(desired: Any, live: Any, path: tuple[str, ...] = ()) -> list[str]:
    """Dotted paths where `live` differs from `desired` in a field `desired` sets; empty when in sync."""
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return [".".join(path) or "<root>"]
        found: list[str] = []
        for key, value in desired.items():
            if _empty(value) and _empty(live.get(key)):
                continue
            found += drift(value, live.get(key), (*path, str(key)))
        return found
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return [".".join(path)]
        found = []
        for index, (want, have) in enumerate(zip(desired, live, strict=True)):
            found += drift(want, have, (*path, str(index)))
        return found
    if desired == live:
        return []
    if _is_quantity_path(path) and live is not None:
        want, have = quantity(desired), quantity(live)
        if want is not None and want == have:
            return []
    return [".".join(path)]


def spec_hash(desired: Mapping[str, Any]) -> str:
    """Digest of the desired object (without the hash annotation itself), stable across dict orderings."""
    clean = copy.deepcopy(dict(desired))
    meta = clean.get("metadata", {})
    meta.get("annotations", {}).pop(names.SPEC_HASH, None)
    if meta.get("annotations") == {}:
        del meta["annotations"]
    text = json.dumps(clean, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def with_spec_hash(desired: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `desired` carrying its spec-hash annotation."""
    result = copy.deepcopy(dict(desired))
    annotations = result.setdefault("metadata", {}).setdefault("annotations", {})
    annotations[names.SPEC_HASH] = spec_hash(desired)
    return result


def _owned_body(manifest: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in manifest.items() if k not in {"metadata", "status", "apiVersion", "kind"}}


def needs_update(desired: Mapping[str, Any], live: Mapping[str, Any]) -> list[str]:
    """Why `live` must be rewritten (empty: no write). A matching hash alone never hides drift."""
    reasons: list[str] = []
    want_meta = desired.get("metadata", {})
    have_meta = live.get("metadata", {})
    have_annotations = have_meta.get("annotations") or {}
    if have_annotations.get(names.SPEC_HASH) != want_meta.get("annotations", {}).get(names.SPEC_HASH):
        reasons.append("spec changed")
    reasons += [
        f"metadata.labels.{p}" for p in drift(want_meta.get("labels", {}), have_meta.get("labels") or {})
    ]
    reasons += [
        f"metadata.annotations.{p}" for p in drift(want_meta.get("annotations", {}), have_annotations)
    ]
    have_uids = {ref.get("uid") for ref in have_meta.get("ownerReferences") or []}
    if any(ref["uid"] not in have_uids for ref in want_meta.get("ownerReferences", [])):
        reasons.append("metadata.ownerReferences")
    reasons += drift(_owned_body(desired), _owned_body(live))
    return reasons


def _deep_merge(base: Any, overlay: Any) -> Any:
    if isinstance(base, Mapping) and isinstance(overlay, Mapping):
        merged = dict(base)
        for key, value in overlay.items():
            merged[key] = _deep_merge(base.get(key), value)
        return merged
    return copy.deepcopy(overlay)


def replacement(desired: Mapping[str, Any], live: Mapping[str, Any]) -> dict[str, Any]:
    """The object to PUT: `desired`, plus what the server or other actors own on `live`."""
    result = copy.deepcopy(dict(desired))
    meta = result.setdefault("metadata", {})
    have_meta = live.get("metadata", {})
    meta["resourceVersion"] = have_meta.get("resourceVersion")
    meta["labels"] = {**(have_meta.get("labels") or {}), **meta.get("labels", {})}
    meta["annotations"] = {**(have_meta.get("annotations") or {}), **meta.get("annotations", {})}
    ours = {ref["uid"] for ref in meta.get("ownerReferences", [])}
    meta["ownerReferences"] = [
        ref for ref in have_meta.get("ownerReferences") or [] if ref.get("uid") not in ours
    ] + meta.get("ownerReferences", [])
    if have_meta.get("finalizers"):
        meta["finalizers"] = list(have_meta["finalizers"])
    kind = desired.get("kind")
    live_spec = live.get("spec") or {}
    if kind == "PersistentVolumeClaim":
        # Almost all of a claim's spec is immutable once bound: keep the live one, overlay what we set.
        result["spec"] = _deep_merge(live_spec, result.get("spec", {}))
    elif kind == "Service":
        spec = result.setdefault("spec", {})
        for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy", "healthCheckNodePort"):
            if key in live_spec and key not in spec:
                spec[key] = copy.deepcopy(live_spec[key])
        live_ports = {p.get("name"): p for p in live_spec.get("ports") or []}
        allocates = spec.get("type") in {"NodePort", "LoadBalancer"}
        for port in spec.get("ports", []):
            previous = live_ports.get(port.get("name"), {})
            if allocates and "nodePort" not in port and "nodePort" in previous:
                port["nodePort"] = previous["nodePort"]  # keep the allocated port stable for clients
    elif kind == "Deployment":
        template_meta = result.get("spec", {}).get("template", {}).setdefault("metadata", {})
        live_template_annotations = (live_spec.get("template", {}).get("metadata", {}) or {}).get(
            "annotations"
        )
        if live_template_annotations:
            # e.g. kubectl rollout restart's restartedAt: not ours to drop
            template_meta["annotations"] = {
                **live_template_annotations,
                **template_meta.get("annotations", {}),
            }
    return result
