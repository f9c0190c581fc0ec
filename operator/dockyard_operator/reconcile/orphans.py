"""The orphan sweep: what a registry deleted while no operator watched left outside its namespace.

A registry carries no finalizer of ours, so one deleted while the operator is down (or whose DELETED event a
watch re-list lost) is gone before `forget` could run. Once per resync period (`triggers`' loop, from its
first round on) this lists the pull secret copies (Secrets with the `pullsecrets.FOR_LABEL` label, in the
namespaces the operator manages) and reads `kube-public/local-registry-hosting`, finds the registry each
belongs to (`pullsecrets.registry_of`, the ConfigMap's owner annotation), and:
- skips, with no request, every one whose registry the triggers know (watched, not being deleted), and every
  one whose registry lives in a namespace the operator does not manage (another operator's business);
- GETs each remaining registry once, and only when the API server answers 404 removes its copies (with
  their ServiceAccount entry, `exposure.Exposure.remove_copy`) and its hosting ConfigMap. Any other answer
  (an error, a registry that exists, even one being deleted) keeps everything: a registry that dropped
  `pullSecrets` from its spec withdraws its copies in its own pass, a deletion in progress in `forget`;
- leaves alone a copy that cannot tell its registry (a label shortened to a digest, written before the
  `pullsecrets.REGISTRY_ANNOTATION` annotation), logged once.
Cost per period with nothing to remove: one list of labelled Secrets (one per watched namespace in a
namespace-scoped install) and one GET of the ConfigMap (when kube-public is managed).
Must not: remove anything whose registry was not reported missing (404), or write except through
`writer.Writer` and `exposure.Exposure`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from dockyard_operator import hosting, kube, names, pullsecrets, settings, writer

log = logging.getLogger(__name__)

Key = tuple[str, str]
_HOSTING = {"api_version": "v1", "kind": "ConfigMap", "namespace": hosting.NAMESPACE, "name": hosting.NAME}


class Client(Protocol):
    """The reads the sweep makes (`kube.Kube`)."""

    async def get(
        self, *, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None: ...
    async def list(
        self,
        *,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        labels: Mapping[str, str | None] | None = None,
    ) -> list[dict[str, Any]]: ...


class Copies(Protocol):
    """Removing a pull secret copy with its ServiceAccount entry (`exposure.Exposure`)."""

    async def remove_copy(self, copy: Mapping[str, Any]) -> None: ...


@dataclasses.dataclass(frozen=True)
class Suspects:
    """What one sweep must look up: copies by the registry they name, and copies that cannot name one."""

    copies: dict[Key, list[dict[str, Any]]]
    unknown: list[dict[str, Any]]


def managed_by(watched: Iterable[str]) -> Callable[[str], bool]:
    """Whether a namespace is the operator's: every one when `watched` is empty, else those listed."""
    listed = frozenset(watched)
    return lambda namespace: not listed or namespace in listed


def suspects(
    copies: Iterable[Mapping[str, Any]], *, known: set[Key], watched: Iterable[str] = ()
) -> Suspects:
    """The copies whose registry may be gone: in a managed namespace, naming a registry in a managed
    namespace that the triggers do not know."""
    managed = managed_by(watched)
    found: dict[Key, list[dict[str, Any]]] = {}
    unknown: list[dict[str, Any]] = []
    for copy in copies:
        if not managed(str((copy.get("metadata") or {}).get("namespace") or "")):
            continue
        owner = pullsecrets.registry_of(copy)
        if owner is None:
            unknown.append(dict(copy))
        elif owner not in known and managed(owner[0]):
            found.setdefault(owner, []).append(dict(copy))
    return Suspects(copies=found, unknown=unknown)


def hosting_suspect(
    live: Mapping[str, Any] | None, *, known: set[Key], watched: Iterable[str] = ()
) -> Key | None:
    """The registry `kube-public/local-registry-hosting` names, when it may be gone (as for `suspects`)."""
    annotations = ((live or {}).get("metadata") or {}).get("annotations") or {}
    namespace, slash, name = str(annotations.get(hosting.OWNER_ANNOTATION) or "").partition("/")
    if not slash or not namespace or not name:
        return None  # not written by a registry (a user's, another tool's): never ours to remove
    owner = (namespace, name)
    return owner if owner not in known and managed_by(watched)(namespace) else None


class Orphans:
    """One per operator process; `sweep` is run by the triggers' resync loop, one at a time."""

    def __init__(
        self,
        *,
        client: Client,
        writes: writer.Writer,
        exposed: Copies,
        config: settings.Settings,
    ) -> None:
        self._client = client
        self._writer = writes
        self._exposure = exposed
        self._watched = config.watch_namespaces
        self._told: set[str] = set()  # what was logged once already

    async def sweep(self, known: set[Key]) -> int:
        """Remove what registries that are gone left behind; the number of objects removed. Raises nothing
        an API error causes (each is logged, and the next period tries again)."""
        try:
            listed = await self._client.list(
                api_version="v1", kind="Secret", labels={pullsecrets.FOR_LABEL: None}
            )
        except kube.KubeError as exc:
            self._once(f"orphan sweep: listing pull secret copies: {exc}", level=logging.WARNING)
            listed = []
        found = suspects(listed, known=known, watched=self._watched)
        for copy in found.unknown:
            self._once(
                f"{kube.describe({'kind': 'Secret', **copy})}: a pull secret copy whose registry its label "
                "cannot name (a shortened label); left alone, delete it by hand if its registry is gone"
            )
        owner = await self._hosting_owner(known)
        removed = 0
        for key in sorted(set(found.copies) | ({owner} if owner else set())):
            if not await self._gone(key):
                continue
            for copy in found.copies.get(key, []):
                removed += await self._remove(copy, key)
            if key == owner:
                removed += await self._remove_hosting(key)
        return removed

    async def _hosting_owner(self, known: set[Key]) -> Key | None:
        if not managed_by(self._watched)(hosting.NAMESPACE):
            return None  # a namespace-scoped install publishes none and may not read kube-public
        try:
            live = await self._client.get(**_HOSTING)
        except kube.KubeError as exc:
            self._once(
                f"orphan sweep: reading {hosting.NAMESPACE}/{hosting.NAME}: {exc}", level=logging.WARNING
            )
            return None
        return hosting_suspect(live, known=known, watched=self._watched)

    async def _gone(self, key: Key) -> bool:
        """True only when the API server says the registry does not exist (404)."""
        try:
            live = await self._client.get(
                api_version=names.API_VERSION, kind=names.KIND, namespace=key[0], name=key[1]
            )
        except kube.KubeError as exc:
            log.warning("orphan sweep: reading registry %s/%s: %s; its copies stay", key[0], key[1], exc)
            return False
        return live is None

    async def _remove(self, copy: Mapping[str, Any], key: Key) -> int:
        what = kube.describe({"kind": "Secret", **copy})
        try:
            await self._exposure.remove_copy(copy)
        except kube.KubeError as exc:
            log.warning("orphan sweep: removing %s: %s", what, exc)
            return 0
        log.info("removed %s: its registry %s/%s is gone", what, key[0], key[1])
        return 1

    async def _remove_hosting(self, key: Key) -> int:
        try:
            await self._writer.delete(**_HOSTING)
        except kube.KubeError as exc:
            log.warning("orphan sweep: removing %s/%s: %s", hosting.NAMESPACE, hosting.NAME, exc)
            return 0
        log.info("removed %s/%s: its registry %s/%s is gone", hosting.NAMESPACE, hosting.NAME, *key)
        return 1

    def _once(self, message: str, *, level: int = logging.INFO) -> None:
        if message not in self._told:
            self._told.add(message)
            log.log(level, message)
