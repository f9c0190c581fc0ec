"""The client the reconciler's steps and the child writer read and write through: `get` answers from the
watch-fed `cache.Cache` where it knows (see `cache.py` for what an answer means), every write's response
feeds the cache, and a write refused as stale drops the entry so the retry reads the API.

Owns: `CachedClient`, the `Client` protocol it wraps (the part of `kube.Kube` the steps and the writer
use) and `fresh`, the block in which reads of entries not confirmed for a while go to the API (the
periodic resync).
Must not: import kopf or lightkube (it wraps `kube.Kube` and knows only its error types), or keep anything
itself: what is known lives in the `cache.Cache` it is given.
"""

from __future__ import annotations

import builtins
import contextlib
import contextvars
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from dockyard_operator import kube
from dockyard_operator.cache import CACHED_KINDS, Cache

_older_than: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "dockyard_cache_fresh", default=None
)


@contextlib.contextmanager
def fresh(*, older_than: float = 0.0) -> Iterator[None]:
    """Reads in this block (this task and what it awaits) of what the cache has not had confirmed for
    `older_than` seconds (default: all of them) go to the API; their answers refresh the cache."""
    token = _older_than.set(older_than)
    try:
        yield
    finally:
        _older_than.reset(token)


class Client(Protocol):
    """The part of `kube.Kube` the steps and the writer use."""

    async def get(
        self, *, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None: ...
    async def list(
        self,
        *,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]: ...
    async def list_namespaces(self) -> builtins.list[dict[str, Any]]: ...
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


class CachedClient:
    """`get` answers from the cache where it knows; every write's response feeds it. Everything else passes
    through to the wrapped client unchanged."""

    def __init__(
        self, client: Client, cache: Cache, *, answered: Callable[[str], None] | None = None
    ) -> None:
        """`answered`: told `memory` or `api` for every read of a cached kind (the operator's metrics)."""
        self._client = client
        self.cache = cache
        self._answered = answered or (lambda answer: None)

    async def get(self, *, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(api_version, kind, namespace, name, ours_only=False)

    async def get_ours(
        self, *, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        """`get` for a caller that acts only on our own object: once primed, no entry means none of ours."""
        return await self._get(api_version, kind, namespace, name, ours_only=True)

    async def _get(
        self, api_version: str, kind: str, namespace: str, name: str, *, ours_only: bool
    ) -> dict[str, Any] | None:
        key = (kind, namespace, name)
        cached = (api_version, kind) in CACHED_KINDS
        if cached:
            known, obj = self.cache.lookup(key, ours_only=ours_only, older_than=_older_than.get())
            if known:
                self._answered("memory")
                return obj
        request = self._client.get(api_version=api_version, kind=kind, namespace=namespace, name=name)
        if not cached:
            return await request
        self._answered("api")
        with self.cache.reading(key) as reading:
            found = await request
            touched = reading.touched
        self.cache.read(key, found, touched=touched)
        return found

    async def list(
        self,
        *,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        return await self._client.list(api_version=api_version, kind=kind, namespace=namespace, labels=labels)

    async def list_namespaces(self) -> builtins.list[dict[str, Any]]:
        return await self._client.list_namespaces()

    def _wrote(self, result: dict[str, Any]) -> dict[str, Any]:
        self.cache.observe(result)
        return result

    @contextlib.contextmanager
    def _refused(self, kind: str, namespace: str, name: str) -> Iterator[None]:
        """A write refused because the object moved on or went (its resourceVersion precondition, a JSON
        patch's test) proves the entry stale: it goes, so the writer's retry reads the API."""
        try:
            yield
        except (kube.NotFound, kube.Conflict, kube.Invalid) as exc:
            if not isinstance(exc, kube.FieldConflict):
                self.cache.drop((kind, namespace, name))
            raise

    async def apply(self, *, manifest: Mapping[str, Any], force: bool = False) -> dict[str, Any]:
        meta = manifest["metadata"]
        with self._refused(str(manifest["kind"]), str(meta["namespace"]), str(meta["name"])):
            return self._wrote(await self._client.apply(manifest=manifest, force=force))

    async def patch_json(
        self,
        *,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        operations: Sequence[Mapping[str, Any]],
    ) -> dict[str, Any]:
        with self._refused(kind, namespace, name):
            return self._wrote(
                await self._client.patch_json(
                    api_version=api_version, kind=kind, namespace=namespace, name=name, operations=operations
                )
            )

    async def create(self, *, manifest: Mapping[str, Any]) -> dict[str, Any]:
        return self._wrote(await self._client.create(manifest=manifest))

    async def replace(self, *, manifest: Mapping[str, Any]) -> dict[str, Any]:
        meta = manifest["metadata"]
        with self._refused(str(manifest["kind"]), str(meta["namespace"]), str(meta["name"])):
            return self._wrote(await self._client.replace(manifest=manifest))

    async def delete(self, *, api_version: str, kind: str, namespace: str, name: str) -> None:
        # The deletion's event removes the entry (an object with finalizers outlives this call).
        await self._client.delete(api_version=api_version, kind=kind, namespace=namespace, name=name)
