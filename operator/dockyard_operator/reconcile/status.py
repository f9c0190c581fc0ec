"""Step: status (conditions, endpoint, CA, certificate, node trust) and the Events of a pass.

Owns: turning what the steps found into conditions (Ready from the Deployment, Progressing, Degraded naming
every problem, CertificateReady, StorageReady from the claim and then from what the registry reports about its
volume, NodeTrustReady), status.storage (where the data lives, and the volume as observed) and
status.maintenance as observed, the blocked status (Ready=False,
Degraded=True, children left as they are), writing status only when it changed, and posting the pass's Events
plus a Warning when Degraded changes and a Recovered when it clears. In two halves: `settle` keeps what the
pass found (`Settled`: verdicts and status parts, no API objects), `report` adds node trust's view; a status
refresh after a node trust change calls `report` again with the registry's last `Settled` and the new view.
Must not: touch children; Events are best effort (the condition already says it).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import pydantic

from dockyard_operator import conditions, kube, mirror_status, model, names, policies
from dockyard_operator.conditions import Reason
from dockyard_operator.reconcile import context

log = logging.getLogger(__name__)


class Client(Protocol):
    """Status and Events: the only writes outside the child writer."""

    async def patch_registry_status(
        self, *, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None: ...
    async def emit_event(
        self, *, involved: Mapping[str, Any], type_: str, reason: Reason, message: str, now: datetime.datetime
    ) -> None: ...


def previous_conditions(body: Mapping[str, Any]) -> tuple[model.Condition, ...]:
    parsed: list[model.Condition] = []
    for raw in (body.get("status") or {}).get("conditions") or []:
        try:
            parsed.append(model.Condition.model_validate(raw))
        except pydantic.ValidationError:
            continue  # a hand-edited condition we cannot read is rewritten from scratch
    return tuple(parsed)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settled:
    """What a finished pass found that status reports, apart from node trust's view.

    `report` turns it and a node trust view into status: the pass does, and so does a refresh when only node
    trust's view of a registry changed (the reconciler keeps each registry's last `Settled` for that). Small
    on purpose, one per registry: verdicts and status parts, never API objects."""

    spec: model.PrivateRegistrySpec
    names: names.Names
    namespace: str
    generation: int | None
    ready: policies.Verdict
    """The Deployment's verdict (Ready, Progressing)."""
    ready_replicas: int
    storage: policies.Verdict
    problems: tuple[context.Problem, ...]
    """Degraded's problems."""
    certificate: policies.Verdict | None
    ca: model.CaStatus | None
    cert: model.CertificateStatus | None
    node_endpoint: str | None
    observed: context.Observed
    """What the registry reported about itself (without the pass's findings)."""


class Status:
    def __init__(self, *, client: Client) -> None:
        self._client = client

    def of(
        self,
        run: context.Pass,
        *,
        tls: context.Tls,
        applied: context.Applied,
        trust: context.Trust,
        observed: context.Observed,
        findings: context.Findings,
    ) -> tuple[model.PrivateRegistryStatus, context.Findings]:
        """The status a finished pass reports, and its findings plus the storage problem if any."""
        settled, findings = self.settle(run, tls=tls, applied=applied, observed=observed, findings=findings)
        return self.report(settled, trust=trust, previous=run.previous, now=run.now), findings

    def settle(
        self,
        run: context.Pass,
        *,
        tls: context.Tls,
        applied: context.Applied,
        observed: context.Observed,
        findings: context.Findings,
    ) -> tuple[Settled, context.Findings]:
        """What a finished pass found that status reports, apart from node trust, and its findings plus the
        storage problem if any."""
        spec = run.spec
        deployment = applied.get("Deployment")
        ready = policies.deployment_verdict(deployment, replicas=spec.replicas)
        pvc_phase = ((applied.get("PersistentVolumeClaim") or {}).get("status") or {}).get("phase")
        storage = policies.storage_verdict(spec, pvc_phase=pvc_phase)
        if applied.storage_problem is not None:
            storage = policies.Verdict(False, applied.storage_problem.reason, applied.storage_problem.message)
        elif storage.ok and observed.verdict is not None:
            storage = observed.verdict  # the claim is fine: what the registry measured on it decides
        if storage.reason in conditions.STORAGE_DEGRADING:
            findings += context.problem(storage.reason, storage.message)
        settled = Settled(
            spec=spec,
            names=run.names,
            namespace=run.namespace,
            generation=run.generation,
            ready=ready,
            ready_replicas=(((deployment or {}).get("status") or {}).get("readyReplicas") or 0),
            storage=storage,
            problems=findings.problems,
            certificate=tls.certificate,
            ca=tls.ca_status,
            cert=tls.cert_status,
            node_endpoint=context.node_endpoint(spec, applied.get("Service")),
            observed=dataclasses.replace(observed, findings=context.Findings()),
        )
        return settled, findings

    def report(
        self,
        settled: Settled,
        *,
        trust: context.Trust,
        previous: Sequence[model.Condition],
        now: datetime.datetime,
    ) -> model.PrivateRegistryStatus:
        """The status to report from what a pass settled and node trust's view (a pass, or a refresh when
        only node trust's view changed: the same function, so both report alike)."""
        spec, observed, ready, storage = settled.spec, settled.observed, settled.ready, settled.storage
        conds = list(previous)

        def put(type_: str, ok: bool, reason: Reason, message: str) -> None:
            nonlocal conds
            conds = conditions.put(conds, type_, ok, reason, message, now=now, generation=settled.generation)

        put(conditions.READY, ready.ok, ready.reason, ready.message)
        progressing = not ready.ok or ready.reason == Reason.ROLLING_OUT
        put(
            conditions.PROGRESSING,
            progressing and ready.reason != Reason.SCALED_TO_ZERO,
            ready.reason if progressing else Reason.RECONCILE_COMPLETE,
            ready.message if progressing else "all children are up to date",
        )
        if settled.problems:
            put(conditions.DEGRADED, True, settled.problems[0].reason, _joined(settled.problems))
        else:
            put(conditions.DEGRADED, False, Reason.AS_EXPECTED, "no problems found")
        if settled.certificate is not None:
            certificate = settled.certificate
            put(conditions.CERTIFICATE_READY, certificate.ok, certificate.reason, certificate.message)
        put(conditions.STORAGE_READY, storage.ok, storage.reason, storage.message)
        if trust.verdict is not None:
            put(conditions.NODE_TRUST_READY, trust.verdict.ok, trust.verdict.reason, trust.verdict.message)
        elif not spec.node_trust.enabled:
            conds = [c for c in conds if c.type != conditions.NODE_TRUST_READY]
        mirrors: list[model.MirrorStatus] | None = None
        if spec.mirrors:
            mirrors = mirror_status.mirror_statuses(
                spec.mirrors,
                observed=observed.mirrors if observed.mirrors_observed else None,
                previous=observed.mirrors,
                wiring=trust.mirror_wiring,
            )
            wiring_desired = trust.status.desired if trust.status is not None else None
            mirrors_verdict = mirror_status.mirrors_verdict(
                spec.mirrors,
                mirrors,
                observed=observed.mirrors_observed or observed.mirrors is not None,
                wiring_desired=wiring_desired,
                anonymous_pull=spec.auth.anonymous_pull,
            )
            conds = conditions.set_condition(
                conds,
                type_=conditions.MIRRORS_READY,
                status=(
                    conditions.UNKNOWN
                    if mirrors_verdict.reason == Reason.MIRRORS_UNOBSERVED
                    else conditions.TRUE
                    if mirrors_verdict.ok
                    else conditions.FALSE
                ),
                reason=mirrors_verdict.reason,
                message=mirrors_verdict.message,
                now=now,
                generation=settled.generation,
            )
        else:
            conds = [c for c in conds if c.type != conditions.MIRRORS_READY]
        return model.PrivateRegistryStatus(
            observed_generation=settled.generation,
            conditions=conds,
            endpoint=context.endpoint(spec, settled.names, settled.namespace),
            ca=settled.ca,
            certificate=settled.cert,
            replicas=spec.replicas,
            ready_replicas=settled.ready_replicas,
            node_endpoint=settled.node_endpoint,
            node_trust=trust.status,
            storage=(observed.storage or model.StorageStatus()).model_copy(
                update={"location": policies.storage_location(spec, claim=settled.names.pvc)}
            ),
            maintenance=observed.maintenance,
            # Only while the spec names token issuers: dropping them clears what the registry reported.
            identities=list(observed.identities) if observed.identities and _token_issuers(spec) else None,
            mirrors=mirrors,
        )

    def blocked(
        self,
        body: Mapping[str, Any],
        previous: Sequence[model.Condition],
        problems: Sequence[context.Problem],
        *,
        now: datetime.datetime,
    ) -> model.PrivateRegistryStatus:
        """Ready=False, Degraded=True naming the problems; the rest of status stays as it was."""
        generation = body["metadata"].get("generation")
        message = _joined(problems)
        reason = problems[0].reason
        conds = list(previous)
        for type_, ok, text in (
            (conditions.READY, False, message),
            (conditions.PROGRESSING, False, "waiting for the problem to be fixed"),
            (conditions.DEGRADED, True, message),
        ):
            conds = conditions.put(conds, type_, ok, reason, text, now=now, generation=generation)
        if (
            reason in conditions.BLOCKING_TLS_SECRET
            and problems[0].condition is None
            and (body.get("spec") or {}).get("tls", {}).get("mode") == "Secret"
        ):
            conds = conditions.put(
                conds, conditions.CERTIFICATE_READY, False, reason, message, now=now, generation=generation
            )
        for type_ in dict.fromkeys(p.condition for p in problems if p.condition is not None):
            concerned = [p for p in problems if p.condition == type_]
            conds = conditions.put(
                conds, type_, False, concerned[0].reason, _joined(concerned), now=now, generation=generation
            )
        old_status = body.get("status") or {}
        return model.PrivateRegistryStatus.model_validate(
            {**{k: v for k, v in old_status.items() if k != "conditions"}, "observedGeneration": generation}
        ).model_copy(update={"conditions": conds})

    async def write(
        self,
        body: Mapping[str, Any],
        status: model.PrivateRegistryStatus,
        *,
        previous: Sequence[model.Condition],
        now: datetime.datetime,
        events: Sequence[context.Event],
    ) -> None:
        """Patch status when it changed, then post the pass's Events (and Degraded's transitions)."""
        meta = body["metadata"]
        rendered = status.model_dump(by_alias=True, exclude_none=True, mode="json")
        patch = dict(rendered)
        for key in ("nodeTrust", "identities", "mirrors"):
            if key not in rendered and (body.get("status") or {}).get(key):
                patch[key] = None  # a merge patch only removes what it names
        for key in ("storage", "maintenance"):  # observed documents: a field the registry dropped goes too
            before = (body.get("status") or {}).get(key)
            if isinstance(before, Mapping):
                patch[key] = _with_removals(before, rendered.get(key))
        events = [*events, *_degraded_events(previous, status.conditions or [])]
        if rendered != _comparable(body.get("status") or {}):
            try:
                await self._client.patch_registry_status(
                    namespace=meta["namespace"], name=meta["name"], status=patch
                )
            except kube.NotFound:
                return  # deleted during the pass: no status to write, no one to tell
        involved = {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": meta["uid"],
        }
        for item in merged_events(events):
            try:
                await self._client.emit_event(
                    involved=involved, type_=item.type, reason=item.reason, message=item.message, now=now
                )
            except kube.KubeError as exc:
                log.warning("could not post event %s: %s", item.reason, exc)


_EVENT_MESSAGE_LIMIT = 1024  # what `kubectl describe` shows in full; Kubernetes caps messages at 4 KiB


def merged_events(events: Sequence[context.Event]) -> list[context.Event]:
    """One Event per type and reason of a pass (messages joined in order): a new registry's nine created
    children make one `Created` Event, not nine API writes."""
    merged: dict[tuple[str, Reason], list[str]] = {}
    for item in events:
        messages = merged.setdefault((item.type, item.reason), [])
        if item.message not in messages:
            messages.append(item.message)
    out = []
    for (type_, reason), messages in merged.items():
        text = "; ".join(messages)
        if len(text) > _EVENT_MESSAGE_LIMIT:
            text = text[: _EVENT_MESSAGE_LIMIT - 3] + "..."
        out.append(context.Event(type_, reason, text))
    return out


def _degraded_events(
    before_all: Sequence[model.Condition], after_all: Sequence[model.Condition]
) -> list[context.Event]:
    before = conditions.find(before_all, conditions.DEGRADED)
    after = conditions.find(after_all, conditions.DEGRADED)
    if after is not None and after.status == conditions.TRUE:
        if before is None or (before.status, before.reason, before.message) != (
            after.status, after.reason, after.message,
        ):  # fmt: skip
            return [context.Event("Warning", Reason(after.reason), after.message)]
    elif after is not None and before is not None and before.status == conditions.TRUE:
        return [context.Event("Normal", Reason.RECOVERED, "the registry is no longer degraded")]
    return []


def _with_removals(before: Mapping[str, Any], after: Any) -> Any:
    """`after` as a merge patch over `before`: keys only `before` has become None (merge patches remove only
    what they name)."""
    if not isinstance(after, Mapping):
        return after
    patch: dict[str, Any] = {key: None for key in before if key not in after}
    for key, value in after.items():
        old = before.get(key)
        patch[key] = _with_removals(old, value) if isinstance(old, Mapping) else value
    return patch


def _joined(problems: Sequence[context.Problem]) -> str:
    return "; ".join(p.message for p in problems)


def _comparable(status: Mapping[str, Any]) -> dict[str, Any]:
    try:
        parsed = model.PrivateRegistryStatus.model_validate(status)
    except pydantic.ValidationError:
        return {}
    return parsed.model_dump(by_alias=True, exclude_none=True, mode="json")


def _token_issuers(spec: model.PrivateRegistrySpec) -> bool:
    return spec.auth.service_accounts is not None or bool(spec.auth.oidc)
