"""The one way the operator writes an object it owns or touches: server-side apply as one field manager.

Callers say *what* they want: the desired manifest, how to tell whether a live object of that name is theirs,
and whether it may be created. The writer reads the live object through its client (in the operator
`cached_client.CachedClient`, which answers from the watch-fed cache for an object it has seen; a refused
write drops that entry, so the retry reads the API), or takes the one the caller read earlier in its pass,
and skips the write when the spec-hash annotation and every field the manifest sets already match (a
resync of an unchanged registry costs at most one read per child and no write). Otherwise it applies the
manifest server-side as the operator's field manager, with the live `resourceVersion` as a precondition (the
decision was made on that version; a newer one is read and decided again). Fields others own (an allocated
nodePort, a bound claim's volume, `kubectl rollout restart`'s annotation, foreign labels) stay theirs without
being copied by hand.

Conflicts are handled, not forced blindly: the first apply is unforced; a `FieldConflict` means another
manager (a `kubectl edit`, an older operator's update) set a field the operator sets, which on an object the
caller vouched for is the operator's to set, so it is logged naming the managers and applied again with force.
Apply never removes what another manager added to a list the operator sets (a hand-added Service port, a
sidecar container): the writer drops such entries with a JSON patch (`diff.owned_foreign_entries`), and when
they clash with ours so that the apply is rejected (a hand-edited port number under our port's name) it sets
those lists whole (`diff.owned_list_repairs`) and applies again; a hand edit is reverted as it was when
children were replaced whole.

Also here: create-only (a Secret whose key material must never be replaced unseen), a read-modify-write of a
list someone else owns (a ServiceAccount's `imagePullSecrets`), deletion, and the memory of this process's
own writes, so the watch echo of a write needs no pass.

Must not: decide what is desired or whose an object is (callers pass the check), or import kopf.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from dockyard_operator import diff, kube

log = logging.getLogger(__name__)

Ownership = Callable[[Mapping[str, Any]], str | None]
"""Given a live object of the desired name: None when it is the caller's, else why it is not (a message)."""


class Client(Protocol):
    """The part of `kube.Kube` the writer uses."""

    async def get(
        self, *, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None: ...
    async def apply(self, *, manifest: Mapping[str, Any], force: bool = False) -> dict[str, Any]: ...
    async def patch_json(
        self,
        *,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        operations: Sequence[Mapping[str, Any]],
    ) -> dict[str, Any]: ...
    async def create(self, *, manifest: Mapping[str, Any]) -> dict[str, Any]: ...
    async def replace(self, *, manifest: Mapping[str, Any]) -> dict[str, Any]: ...
    async def delete(self, *, api_version: str, kind: str, namespace: str, name: str) -> None: ...


class NotOurs(Exception):
    """An object with the desired name exists and belongs to someone else (the message says whom)."""


class Vanished(Exception):
    """The object was deleted while it may not be created again (key material read, not generated)."""


@dataclasses.dataclass(frozen=True)
class Written:
    """The live object after `apply`, and what the writer did to it."""

    live: dict[str, Any]
    created: bool = False
    changed: tuple[str, ...] = ()
    """Why an existing object was rewritten (empty when it was not)."""


def _ref(manifest: Mapping[str, Any]) -> dict[str, str]:
    meta = manifest["metadata"]
    return {
        "api_version": str(manifest["apiVersion"]),
        "kind": str(manifest["kind"]),
        "namespace": str(meta["namespace"]),
        "name": str(meta["name"]),
    }


class Writer:
    """Writes through one client (one field manager); remembers the versions it wrote."""

    def __init__(self, client: Client) -> None:
        self._client = client
        # uid -> resourceVersion of every object this process last wrote: the watch echo of our own write
        # carries exactly that version and needs no new pass.
        self._written: dict[str, str] = {}

    def is_own_write(self, body: Mapping[str, Any], *, deleted: bool) -> bool:
        """Whether a watch event only echoes this process's last write of that object.

        A deletion is never an echo (the object must be restored), and any later change by someone else
        carries another resourceVersion.
        """
        meta = body.get("metadata", {})
        uid = meta.get("uid")
        if deleted:
            self._written.pop(uid, None)
            return False
        return uid is not None and self._written.get(uid) == meta.get("resourceVersion")

    def _remember(self, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata", {})
        if meta.get("uid") and meta.get("resourceVersion"):
            self._written[meta["uid"]] = meta["resourceVersion"]

    async def apply(
        self,
        desired: Mapping[str, Any],
        *,
        ours: Ownership | None = None,
        may_create: bool = True,
        read: Mapping[str, Any] | None = None,
    ) -> Written:
        """Make the object carry `desired`; no write when it already does.

        `read`: the live object as the caller read it earlier in its pass; the first decision is made on it
        instead of a second GET. A stale one costs nothing but a retry: a write carries its
        `resourceVersion` as a precondition, the API refuses it, and the object is read and decided again.
        (A stale read that already matches means no write, as a GET just before someone's edit would: the
        edit reaches the operator as a watch event, which brings a pass of its own.)
        None (not read, or read as absent) makes the writer read it: apply cannot create only-if-absent, so
        an object someone created since the caller's read must be seen before anything is applied.

        Raises `NotOurs` when a live object of that name fails `ours`, `Vanished` when it is absent and
        `may_create` is False, and `kube` errors for everything else (after one retry of a lost race).
        """
        want = diff.with_spec_hash(desired)
        ref = _ref(want)
        repaired = False
        for attempt in range(3):
            live = dict(read) if read is not None else await self._client.get(**ref)
            read = None  # a retry reads afresh
            if live is None and not may_create:
                raise Vanished(kube.describe(want))
            changed: list[str] = []
            body = {**want, "metadata": dict(want["metadata"])}  # the precondition is this attempt's
            if live is not None:
                why = ours(live) if ours is not None else None
                if why is not None:
                    raise NotOurs(why)
                changed = diff.needs_update(want, live)
                if not changed:
                    return Written(live)
                body["metadata"]["resourceVersion"] = live["metadata"].get("resourceVersion")
            try:
                result = await self._apply(body)
            except kube.Invalid:
                repairs = diff.owned_list_repairs(want, live) if live is not None and not repaired else []
                if not repairs:
                    raise
                # Entries another manager put in one of our lists clash with ours: set those lists whole.
                log.info("%s: rewriting lists whose entries clash with ours", kube.describe(want))
                await self._client.patch_json(**ref, operations=repairs)
                repaired = True
                continue
            except (kube.NotFound, kube.Conflict) as exc:
                if isinstance(exc, kube.FieldConflict) or attempt == 2:
                    raise
                continue  # moved on or deleted since it was read: read again and decide again
            if live is None and ours is not None and (why := ours(result)) is not None:
                raise NotOurs(why)  # created by someone else between our read and our apply
            foreign = diff.owned_foreign_entries(want, result)
            if foreign:
                log.info("%s: dropping list entries another manager added", kube.describe(want))
                result = await self._client.patch_json(**ref, operations=foreign)
            self._remember(result)
            if live is not None:
                log.info("updated %s (%s)", kube.describe(want), ", ".join(changed[:5]))
            return Written(result, created=live is None, changed=tuple(changed))
        raise AssertionError("unreachable")

    async def _apply(self, body: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return await self._client.apply(manifest=body, force=False)
        except kube.FieldConflict as exc:
            log.warning(
                "%s: taking back fields another manager set (%s)",
                kube.describe(body),
                "; ".join(exc.managers),
            )
            return await self._client.apply(manifest=body, force=True)

    async def create(self, desired: Mapping[str, Any]) -> Written:
        """Create the object unless one of that name exists, which is returned untouched (`created` False)."""
        want = diff.with_spec_hash(desired)
        try:
            result = await self._client.create(manifest=want)
        except kube.AlreadyExists:
            live = await self._client.get(**_ref(want))
            if live is None:
                raise kube.Conflict(f"{kube.describe(want)} appeared and vanished", status=409) from None
            return Written(live)
        self._remember(result)
        return Written(result, created=True)

    async def update(
        self, *, ref: Mapping[str, str], change: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> None:
        """Read-modify-write of an object someone else owns: `change` returns the new object or None (no
        write). A write lost to a concurrent one is decided again on the newer version."""
        for attempt in range(3):
            live = await self._client.get(**ref)
            updated = change(live) if live is not None else None
            if updated is None:
                return
            try:
                self._remember(await self._client.replace(manifest=updated))
                return
            except kube.Conflict:
                if attempt == 2:
                    raise

    async def drop_owner_reference(self, live: Mapping[str, Any], *, uid: str) -> dict[str, Any]:
        """Remove the owner reference to `uid` from an object that must no longer be garbage-collected with
        that owner; returns the object as it is afterwards (unchanged when it carries no such reference).

        An apply without the reference removes it only when this field manager alone set it; one an older
        operator's update (or anyone else) recorded would stay and garbage collection would still delete the
        object. So the entry is removed by a JSON patch, guarded by a `test` of that very entry: a list that
        changed since it was read fails the patch instead of losing someone else's reference.
        """
        refs = list((live.get("metadata") or {}).get("ownerReferences") or [])
        index = next((i for i, ref in enumerate(refs) if ref.get("uid") == uid), None)
        if index is None:
            return dict(live)
        path = f"/metadata/ownerReferences/{index}"
        result = await self._client.patch_json(
            **_ref(live),
            operations=[{"op": "test", "path": path, "value": refs[index]}, {"op": "remove", "path": path}],
        )
        self._remember(result)
        log.info("%s: dropped the owner reference to %s", kube.describe(live), uid)
        return result

    async def delete(self, *, api_version: str, kind: str, namespace: str, name: str) -> None:
        """Delete an object; an already missing one is fine."""
        await self._client.delete(api_version=api_version, kind=kind, namespace=namespace, name=name)
