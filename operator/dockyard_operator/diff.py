"""Pure comparison of a desired child with the live object: which fields we own have drifted?

Owns: the "fields we own" rule (every field the builder sets must be present with the same value; fields the
API server adds by defaulting are ignored), Kubernetes quantity equivalence (`1024Mi` == `1Gi`, because the
API server canonicalizes quantities and a textual comparison would rewrite the object on every pass), the
spec-hash of a desired object, and the JSON-patch repairs of lists that server-side apply cannot make (it
keeps entries other managers added to a list we set; see `writer.py`). What others legitimately own
(allocated ClusterIPs and node ports, a bound claim's volume, foreign labels) the API server keeps for us.
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
    """Digest of the desired object (without the hash annotation itself), stable across dict orderings.

    The canonical JSON of a view that leaves the annotation out (an object whose only annotation it is
    hashes as one without annotations); nothing is copied but the metadata and annotations mappings."""
    clean = dict(desired)
    if "metadata" in desired:
        meta = dict(desired["metadata"])
        if "annotations" in meta:
            annotations = {k: v for k, v in meta["annotations"].items() if k != names.SPEC_HASH}
            if annotations:
                meta["annotations"] = annotations
            else:
                del meta["annotations"]
        clean["metadata"] = meta
    text = json.dumps(clean, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def with_spec_hash(desired: Mapping[str, Any]) -> dict[str, Any]:
    """`desired` carrying its spec-hash annotation: a new object with new metadata and annotations mappings;
    everything else is shared with `desired`, which is left as it is (neither may be changed in place)."""
    meta = dict(desired.get("metadata") or {})
    meta["annotations"] = {**(meta.get("annotations") or {}), names.SPEC_HASH: spec_hash(desired)}
    return {**desired, "metadata": meta}


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


def _pointer(path: tuple[str, ...]) -> str:
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in path)


def _match(want: Any, live: list[Any], *, used: set[int]) -> int | None:
    """The live entry standing for `want`: the first unused one carrying all its fields, else the one of the
    same name (list entries the operator sets are keyed by name where they have one)."""
    index = next((i for i, have in enumerate(live) if i not in used and not drift(want, have)), None)
    if index is None and isinstance(want, Mapping) and "name" in want:
        index = next(
            (
                i
                for i, have in enumerate(live)
                if i not in used and isinstance(have, Mapping) and have.get("name") == want["name"]
            ),
            None,
        )
    return index


def foreign_entries(desired: Any, live: Any, path: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """JSON-patch operations that drop list entries `live` holds beyond those `desired` sets.

    Server-side apply keeps entries another field manager added to a list the operator sets (a hand-added
    Service port, a sidecar container, an env var in our container); the operator's lists are its own, so
    those entries go. Each desired entry is matched by the first unused live entry carrying all its fields,
    else by name (so what the server fills in, an allocated nodePort, stays), and matched entries are
    searched in turn; a list whose entries all match but sit in another order is put in order. No operation
    for a list with an unmatched entry: that is drift the apply itself failed to correct.
    """
    if isinstance(desired, Mapping) and isinstance(live, Mapping):
        ops: list[dict[str, Any]] = []
        for key, value in desired.items():
            if key in live:
                ops += foreign_entries(value, live[key], (*path, str(key)))
        return ops
    if not isinstance(desired, list) or not isinstance(live, list):
        return []
    order: list[int] = []
    for want in desired:
        index = _match(want, live, used=set(order))
        if index is None:
            return []
        order.append(index)
    if order != list(range(len(live))):
        return [{"op": "replace", "path": _pointer(path), "value": [copy.deepcopy(live[i]) for i in order]}]
    ops = []
    for index, want in enumerate(desired):
        ops += foreign_entries(want, live[index], (*path, str(index)))
    return ops


def list_repairs(desired: Any, live: Any, path: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """JSON-patch operations setting every drifted list `desired` sets to its desired entries.

    For when an apply is rejected because entries another manager put in our list clash with ours (a
    hand-edited Service port that kept our port's name: apply keys ports by number, so it would add ours
    beside it). Each desired entry is merged over the live entry it matches, or else the one of the same
    name, so what the server filled in (an allocated nodePort) stays.
    """
    if isinstance(desired, Mapping) and isinstance(live, Mapping):
        ops: list[dict[str, Any]] = []
        for key, value in desired.items():
            if key in live:
                ops += list_repairs(value, live[key], (*path, str(key)))
        return ops
    if not isinstance(desired, list) or not isinstance(live, list) or not drift(desired, live):
        return []
    repaired: list[Any] = []
    used: set[int] = set()
    for want in desired:
        index = _match(want, live, used=used)
        if index is None:
            repaired.append(copy.deepcopy(want))
            continue
        used.add(index)
        repaired.append(_deep_merge(live[index], want))
    return [{"op": "replace", "path": _pointer(path), "value": repaired}]


def owned_list_repairs(desired: Mapping[str, Any], live: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`list_repairs` outside metadata."""
    return list_repairs(_owned_body(desired), _owned_body(live))


def owned_foreign_entries(desired: Mapping[str, Any], live: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`foreign_entries` outside metadata (owner references and finalizers of others are theirs)."""
    return foreign_entries(_owned_body(desired), _owned_body(live))


def _deep_merge(base: Any, overlay: Any) -> Any:
    if isinstance(base, Mapping) and isinstance(overlay, Mapping):
        merged = dict(base)
        for key, value in overlay.items():
            merged[key] = _deep_merge(base.get(key), value)
        return merged
    return copy.deepcopy(overlay)
