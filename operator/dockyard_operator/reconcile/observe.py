"""Step: what the registry reports about its storage, its online gc and its mirrors (status.storage,
status.maintenance, the registry's half of status.mirrors).

Reads `/status` from the metrics listener of each running registry pod (`http://<pod IP>:9102/status`; the
setting `metrics_url_override` replaces this for clusters without a pod network), reads it into status fields
and a StorageReady verdict (`observations`), and adds one GarbageCollected Event per gc run status did not
show yet. Pods are listed only when the Deployment reports any. Pods that are running but unready are read
too: a full volume is exactly what makes them unready. Without any answer the previous
status.storage/maintenance are kept and no verdict is given, so a pod restart does not make status flap.
Must not: write anything (status and Events are the status step's), or fail a pass because a pod did not
answer (a refused Pod list is reported as Degraded/Forbidden: the operator's RBAC lacks it).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from typing import Any, Protocol

import pydantic

from dockyard_operator import kube, model, names, observations, settings
from dockyard_operator.conditions import Reason
from dockyard_operator.reconcile import context


class Fetch(Protocol):
    async def read_all(self, urls: list[str]) -> list[Any]: ...


class Observe:
    def __init__(self, *, reader: context.Reader, fetch: Fetch, config: settings.Settings) -> None:
        self._reader = reader
        self._fetch = fetch
        self._override = config.metrics_url_override

    async def registry(self, run: context.Pass, *, applied: context.Applied) -> context.Observed:
        previous = _previous(run.body)
        try:
            urls = await self._urls(run, applied=applied)
        except (
            kube.Forbidden
        ) as exc:  # a hand-made Role without `list` on Pods: say so, keep what status shows
            return dataclasses.replace(
                previous,
                findings=context.problem(Reason.FORBIDDEN, f"cannot list the registry's Pods: {exc}"),
            )
        except kube.KubeError:
            urls = []  # the next pass tries again; status keeps what it showed
        documents = await self._fetch.read_all(urls) if urls else []
        if not documents:
            return previous
        reading = observations.combine([observations.parse(doc) for doc in documents])
        verdict = observations.storage_verdict(reading, storage=run.spec.storage)
        maintenance = observations.keep_last_run(previous.maintenance, reading.maintenance)
        findings = context.Findings()
        if observations.new_run(previous.maintenance, reading.maintenance):
            assert maintenance is not None and maintenance.last_run is not None  # new_run checked it
            last = maintenance.last_run
            findings = context.event(
                Reason.GARBAGE_COLLECTED,
                observations.describe_run(last),
                type_="Warning" if observations.run_failed(last) else "Normal",
            )
        for issuer in observations.unreachable_issuers(reading):
            findings += context.problem(
                Reason.ISSUER_UNREACHABLE,
                f"the registry cannot read the keys of token issuer {issuer.name}: "
                f"{issuer.error or 'unknown error'}",
            )
        return context.Observed(
            storage=reading.storage or previous.storage,
            maintenance=maintenance,
            identities=reading.identities if reading.identities is not None else previous.identities,
            verdict=verdict,
            mirrors=reading.mirrors if reading.mirrors is not None else previous.mirrors,
            mirrors_observed=reading.mirrors is not None,
            findings=findings,
        )

    async def _urls(self, run: context.Pass, *, applied: context.Applied) -> list[str]:
        if self._override:
            return [self._override.format(namespace=run.namespace, name=run.name)]
        if not ((applied.get("Deployment") or {}).get("status") or {}).get("replicas"):
            return []  # no pod exists (scaled to zero, or not created yet): no need to list them
        pods = await self._reader.list(
            api_version="v1", kind="Pod", namespace=run.namespace, labels=names.selector_labels(run.name)
        )
        return [url for pod in pods if (url := _status_url(pod)) is not None]


def _status_url(pod: Mapping[str, Any]) -> str | None:
    status = pod.get("status") or {}
    ip = status.get("podIP")
    if status.get("phase") != "Running" or not ip or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return None
    try:
        host = f"[{ip}]" if ipaddress.ip_address(ip).version == 6 else ip
    except ValueError:
        return None
    return f"http://{host}:{names.METRICS_PORT}/status"


def _previous(body: Mapping[str, Any]) -> context.Observed:
    status = body.get("status") or {}
    try:
        storage = model.StorageStatus.model_validate(status["storage"]) if status.get("storage") else None
    except pydantic.ValidationError:
        storage = None
    try:
        maintenance = (
            model.MaintenanceStatus.model_validate(status["maintenance"])
            if status.get("maintenance")
            else None
        )
    except pydantic.ValidationError:
        maintenance = None
    try:
        identities = tuple(
            model.IdentityIssuerStatus.model_validate(i) for i in status.get("identities") or []
        )
    except pydantic.ValidationError:
        identities = ()
    mirrors: list[model.MirrorStatus] = []
    for raw in status.get("mirrors") or []:
        try:
            mirrors.append(model.MirrorStatus.model_validate(raw))
        except pydantic.ValidationError:
            continue
    return context.Observed(
        storage=storage,
        maintenance=maintenance,
        identities=identities or None,
        mirrors=tuple(mirrors) or None,
    )
