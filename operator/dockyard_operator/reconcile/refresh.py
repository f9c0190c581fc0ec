"""Status refreshes after node trust publishes: what each registry's last pass settled, and the status
report made from it when only node trust's view of the registry changed.

A refresh reports `status.nodeTrust`, NodeTrustReady and mirror wiring through the status step's own
`report`, from the registry's last `status.Settled`: one status patch at most, no reads, no second pass over
the children.

Owns: `Refreshes`, the per-registry memory of the last settled pass (`remember`, `forget`) and the refresh
from it (`report`); `Settled`, the record kept per registry.
Must not: run a pass, read the API or decide when a registry gets a pass instead (a registry with nothing
settled: the orchestrator's `refresh` runs one), or keep anything but the small record per registry.
"""

from __future__ import annotations

import dataclasses
import datetime
import pickle
from collections.abc import Callable

from dockyard_operator import metrics, model
from dockyard_operator.reconcile import status, trust

Key = tuple[str, str]  # namespace, name


@dataclasses.dataclass(frozen=True)
class Settled:
    """A registry's last settled pass, the status it reported (or a refresh since), and its uid (Events).

    Pickled: one ~5 KB bytes object per registry instead of a ~26 KB tree of pydantic models and dataclasses
    (1,000 registries: ~21 MB less resident memory). Only this process writes and reads it."""

    blob: bytes

    @classmethod
    def of(cls, settled: status.Settled, reported: model.PrivateRegistryStatus, *, uid: str) -> Settled:
        return cls(pickle.dumps((settled, reported, uid), protocol=pickle.HIGHEST_PROTOCOL))

    def load(self) -> tuple[status.Settled, model.PrivateRegistryStatus, str]:
        # Bytes this process pickled itself (`of`), never anything read from outside.
        loaded: tuple[status.Settled, model.PrivateRegistryStatus, str] = pickle.loads(self.blob)  # noqa: S301
        return loaded


class Refreshes:
    """Each registry's last settled pass, and the status refresh from it. One event loop uses it."""

    def __init__(
        self,
        *,
        reports: status.Status,
        views: trust.NodeTrustHandOff,
        measures: metrics.OperatorMetrics,
        clock: Callable[[], datetime.datetime],
    ) -> None:
        self._status = reports
        self._trust = views
        self._metrics = measures
        self._clock = clock
        self._settled: dict[Key, Settled] = {}

    def remember(
        self, key: Key, settled: status.Settled, reported: model.PrivateRegistryStatus, *, uid: str
    ) -> None:
        """What a finished pass (or a refresh) settled and reported."""
        self._settled[key] = Settled.of(settled, reported, uid=uid)

    def forget(self, key: Key) -> None:
        """Nothing settled for this registry: a pass is under way, or it is gone."""
        self._settled.pop(key, None)

    async def report(self, key: Key) -> bool:
        """Report node trust's current view in the registry's status, from its last settled pass (as a pass
        does). False, and nothing written, when nothing is settled: the caller runs a pass instead."""
        last = self._settled.get(key)
        if last is None:
            return False
        namespace, name = key
        settled, before, uid = last.load()
        now = self._clock()
        nodes = self._trust.view(settled.spec, namespace=namespace, name=name)
        previous = tuple(before.conditions or ())
        reported = self._status.report(settled, trust=nodes, previous=previous, now=now)
        body = {
            "metadata": {"namespace": namespace, "name": name, "uid": uid},
            "status": before.model_dump(by_alias=True, exclude_none=True, mode="json"),
        }
        with self._metrics.step("status"):
            await self._status.write(body, reported, previous=previous, now=now, events=())
        self.remember(key, settled, reported, uid=uid)
        self._metrics.observe(namespace=namespace, name=name, status=reported)
        return True
