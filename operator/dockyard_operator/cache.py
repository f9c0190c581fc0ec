"""What the operator knows of its children and of the Secrets its registries read, kept by the watches kopf
already runs, so a pass reads them from memory instead of GETting each one.

Owns: `Cache`, the store, and its compact entries (each object as JSON compressed, with a preset dictionary
shared by the children of one shape). `cached_client.CachedClient`, the client the reconciler's steps and the
child writer use, answers reads from it (what its answers mean is below).

The store is fed by kopf's watch events (`observe` for an added or changed object, `forget` for a deleted
one; `handlers.py`) and by the writer's own write responses (`cached_client.CachedClient`). It keeps, per
(kind, namespace, name), only objects of the kinds the operator watches that are the operator's (its
`app.kubernetes.io/managed-by` label, or an owner reference to a PrivateRegistry), and the Secrets a registry
references by name (`refer`: user passwords, a bring-your-own TLS Secret, object storage's credentials), as
compact entries: `managedFields` dropped, the rest as compressed JSON (a thousand registries' dozen children
each would otherwise be a large tree of dicts).

What an answer means:
- an entry: the object as the last event or write showed it. It may be stale (an event still queued), which
  is safe where it is used: the writer applies a change with the entry's `resourceVersion` as a
  precondition (a conflict reads it afresh), and the event of a change someone made is observed before the
  pass it triggers begins (`handlers.py` feeds the cache first), so a stale "nothing to do" is followed by a
  pass that sees the change.
- no entry for a referenced Secret the cache has read once: it does not exist (every Secret event is
  observed, so a referenced one's creation would have been).
- no entry otherwise: unknown. `get` asks the API (and keeps the answer unless an event about that object
  arrived meanwhile: that event is then at least as new, or the one for what the GET saw is still to come).
  A name someone else's object holds (no label, no owner reference) is never cached, so creating a child
  always reads first: apply cannot create only if absent.
- `get_ours`: the caller only acts on the operator's own object (deleting an optional child it owns, reading
  one of its Secrets before deciding to create it); once `mark_primed` says kopf has delivered its initial
  listing of every kind, no entry means none of ours. For Secrets it means none at all: the cache remembers
  (as hashes) the names other Secrets hold and asks the API for those, so a caller that blocks on someone
  else's Secret sees it. The writer still reads a child before creating it (`get`).

A `cached_client.fresh` block (the periodic resync) reads from the API every entry the cache has not had
confirmed for `RECHECK_PERIODS` resync periods and refreshes the cache with the answers: the one thing a
lost event can hide is a deletion (a watch that re-lists delivers every object that exists again, but not
the ones deleted meanwhile), and that is still corrected within that many periods.

Must not: import kopf, lightkube or `kube.py` (kopf calls in through `handlers.py`, reads through
`cached_client`), decide anything about the objects, or keep a Secret nobody references or owns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
import zlib
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

from dockyard_operator import names

CACHED_KINDS: frozenset[tuple[str, str]] = frozenset(
    {
        ("v1", "Secret"),
        ("v1", "ConfigMap"),
        ("v1", "Service"),
        ("v1", "PersistentVolumeClaim"),
        ("apps/v1", "Deployment"),
        ("networking.k8s.io/v1", "Ingress"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
        ("policy/v1", "PodDisruptionBudget"),
    }
)
"""The kinds whose every event `handlers.py` hands to the cache (kopf watches them all)."""

Key = tuple[str, str, str]  # kind, namespace, name

RECHECK_PERIODS = 5
"""The periodic pass re-reads from the API what the cache has not had confirmed (by an event, a write or a
read) for this many resync periods."""

_DICTIONARIES = 64  # at most this many shapes get a preset dictionary (each at most 32 KiB)
_WINDOW = 32 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class _Entry:
    uid: str
    own: bool
    """Labelled or owned by a registry: kept whether or not a registry references it by name."""
    blob: bytes
    seen: float
    """When an event, a write or a read last showed it (the cache's clock)."""
    zdict: bytes = b""
    """The preset dictionary `blob` was compressed with (shared by every entry of its shape)."""

    def load(self) -> dict[str, Any]:
        if self.zdict:
            inflate = zlib.decompressobj(zdict=self.zdict)
            data = inflate.decompress(self.blob) + inflate.flush()
        else:
            data = zlib.decompress(self.blob)
        loaded: dict[str, Any] = json.loads(data)
        return loaded


@dataclasses.dataclass(slots=True)
class _Reading:
    """GETs of one key in flight, and whether an event or write about it arrived meanwhile."""

    count: int = 0
    touched: bool = False


def _key(obj: Mapping[str, Any]) -> Key | None:
    if (str(obj.get("apiVersion")), str(obj.get("kind"))) not in CACHED_KINDS:
        return None
    meta = obj.get("metadata") or {}
    if not meta.get("namespace") or not meta.get("name"):
        return None
    return str(obj["kind"]), str(meta["namespace"]), str(meta["name"])


def is_ours(obj: Mapping[str, Any]) -> bool:
    """Carries the operator's label or an owner reference to a PrivateRegistry."""
    meta = obj.get("metadata") or {}
    if (meta.get("labels") or {}).get(names.LABEL_MANAGED_BY) == names.MANAGED_BY:
        return True
    return any(
        ref.get("apiVersion") == names.API_VERSION and ref.get("kind") == names.KIND
        for ref in meta.get("ownerReferences") or []
    )


def compact(obj: Mapping[str, Any], *, zdict: bytes = b"") -> bytes:
    """The object without `managedFields`, as JSON compressed (with `zdict` as preset dictionary)."""
    data = _json(obj)
    deflate = zlib.compressobj(1, zdict=zdict) if zdict else zlib.compressobj(1)
    return deflate.compress(data) + deflate.flush()


def _json(obj: Mapping[str, Any]) -> bytes:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return json.dumps({**obj, "metadata": meta}, separators=(",", ":")).encode()


def _shape(key: Key, obj: Mapping[str, Any]) -> tuple[str, str] | None:
    """Which children look alike: the kind and the name after the owning registry's (`-nginx`). None for
    Secrets: a dictionary made of one would keep its data after the Secret is gone."""
    if key[0] == "Secret":
        return None
    meta = obj.get("metadata") or {}
    owners = [r.get("name") for r in meta.get("ownerReferences") or [] if r.get("kind") == names.KIND]
    owner = str(owners[0] if owners else (meta.get("labels") or {}).get(names.LABEL_INSTANCE) or "")
    return key[0], key[2][len(owner) :] if owner and key[2].startswith(owner) else ""


class Cache:
    """The store (see the module docstring). Not thread-safe: one event loop feeds and reads it."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[Key, _Entry] = {}
        self._absent: set[Key] = set()
        # Hashes of the keys of the Secrets that are not ours (every Secret event is observed): "none of
        # ours" for a Secret then means no Secret of that name at all. A collision only costs a GET.
        self._foreign: set[int] = set()
        """Referenced Secrets read or watched as absent (no entry, yet known)."""
        self._refs: dict[tuple[str, str], frozenset[str]] = {}
        self._referenced: Counter[tuple[str, str]] = Counter()
        self._reading: dict[Key, _Reading] = {}
        self._primed = False
        # The first object of each shape, as JSON: a preset dictionary for the others (a thousand registries'
        # nginx ConfigMaps differ in a few names, so each one compresses to a few hundred bytes).
        self._dictionaries: dict[tuple[str, str], bytes] = {}

    # ------------------------------------------------------------------ feeding

    def mark_primed(self) -> None:
        """kopf has delivered its initial listing of every cached kind (`handlers.py` knows when)."""
        self._primed = True

    @property
    def primed(self) -> bool:
        return self._primed

    def _referenced_key(self, key: Key) -> bool:
        return key[0] == "Secret" and self._referenced[key[1], key[2]] > 0

    def _touch(self, key: Key) -> None:
        reading = self._reading.get(key)
        if reading is not None:
            reading.touched = True

    def observe(self, obj: Mapping[str, Any]) -> None:
        """An added or changed object (a watch event, a write's response): kept if it is one we keep."""
        key = _key(obj)
        if key is None:
            return
        self._touch(key)
        own = is_ours(obj)
        if not own and not self._referenced_key(key):
            self._entries.pop(key, None)  # lost our label (or never had it): not ours to keep
            if key[0] == "Secret":
                self._foreign.add(hash(key))
            return
        self._foreign.discard(hash(key))
        uid = str((obj.get("metadata") or {}).get("uid") or "")
        shape = _shape(key, obj)
        zdict = self._dictionaries.get(shape, b"") if shape is not None else b""
        if shape is not None and not zdict and len(self._dictionaries) < _DICTIONARIES:
            zdict = self._dictionaries[shape] = _json(obj)[-_WINDOW:]
        blob = compact(obj, zdict=zdict)
        self._entries[key] = _Entry(uid=uid, own=own, blob=blob, seen=self._clock(), zdict=zdict)
        self._absent.discard(key)

    def forget(self, obj: Mapping[str, Any]) -> None:
        """A deleted object (a watch event). Another object of that name seen meanwhile stays."""
        key = _key(obj)
        if key is None:
            return
        self._touch(key)
        entry = self._entries.get(key)
        uid = str((obj.get("metadata") or {}).get("uid") or "")
        if entry is not None and uid and entry.uid and entry.uid != uid:
            return  # the deletion of an older object of that name, processed after its successor's event
        self._entries.pop(key, None)
        self._foreign.discard(hash(key))
        if self._referenced_key(key):
            self._absent.add(key)

    def refer(self, *, namespace: str, registry: str, secrets: Collection[str]) -> None:
        """The Secrets `registry` references by name now (empty: none, or it is gone). A Secret no registry
        references any more leaves the cache unless it is one of ours."""
        before = self._refs.pop((namespace, registry), frozenset())
        after = frozenset(secrets)
        if after:
            self._refs[namespace, registry] = after
        for name in after - before:
            self._referenced[namespace, name] += 1
        for name in before - after:
            self._referenced[namespace, name] -= 1
            if self._referenced[namespace, name] <= 0:
                del self._referenced[namespace, name]
                key = ("Secret", namespace, name)
                self._absent.discard(key)
                entry = self._entries.get(key)
                if entry is not None and not entry.own:
                    del self._entries[key]
                    self._foreign.add(hash(key))

    # ------------------------------------------------------------------ reading

    def lookup(
        self, key: Key, *, ours_only: bool = False, older_than: float | None = None
    ) -> tuple[bool, dict[str, Any] | None]:
        """(known, object): known False means ask the API. `older_than`: an entry last confirmed longer ago
        than this many seconds is not known. Absences need no confirming: a watch that re-lists delivers
        every object that exists again, but says nothing of one deleted meanwhile."""
        entry = self._entries.get(key)
        if entry is not None:
            if older_than is not None and entry.seen <= self._clock() - older_than:
                return False, None
            return True, entry.load()
        if key in self._absent:
            return True, None
        # A Secret someone else holds the name of: the caller must see it (it blocks on it).
        return (ours_only and self._primed and hash(key) not in self._foreign), None

    @contextlib.contextmanager
    def reading(self, key: Key) -> Iterator[_Reading]:
        """Around a GET of `key`: `touched` tells whether an event or write about it arrived meanwhile."""
        reading = self._reading.setdefault(key, _Reading())
        reading.count += 1
        try:
            yield reading
        finally:
            reading.count -= 1
            if reading.count == 0:
                del self._reading[key]

    def read(self, key: Key, obj: Mapping[str, Any] | None, *, touched: bool) -> None:
        """What a GET of `key` answered; ignored when an event or write about it arrived during the GET."""
        if touched:
            return
        if obj is not None:
            self.observe(obj)
            return
        entry = self._entries.get(key)
        if entry is not None:  # deleted, and the event has not come yet (or was lost)
            del self._entries[key]
        if self._referenced_key(key):
            self._absent.add(key)

    def drop(self, key: Key) -> None:
        """Forget what is known of `key` (a write proved it stale): the next read asks the API."""
        self._touch(key)
        self._entries.pop(key, None)
        self._absent.discard(key)

    def footprint(self) -> int:
        """Bytes of compressed entries and preset dictionaries kept (for tests)."""
        return sum(len(e.blob) for e in self._entries.values()) + sum(map(len, self._dictionaries.values()))

    def size(self) -> int:
        """Entries kept (for tests and metrics)."""
        return len(self._entries)
