"""Step: the staged CA rotation, driven by what node trust published (see `nodetrust.rotation`).

A new value of the `dockyard.dev/rotate-ca` annotation creates a next CA in `<name>-ca-next`; node trust
publishes it beside the current one; once every node trusts it the serving certificate is issued from it;
once every pod serves that certificate it is promoted into `<name>-ca` (recording the request it satisfied),
and the staged Secret, now a copy of the CA, means "no rotation" (so the operator needs no right to delete
Secrets).
Clients get `ca.crt` with both CAs meanwhile. Without node trust there is nobody to stage for: the request
waits.
Must not: decide the rotation policy (that is `nodetrust.rotation`, read here as node trust's latest plan), or
replace a staged next CA it did not see (one request, one next CA).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from dockyard_common import pki
from dockyard_operator import builders, model, writer
from dockyard_operator.builders import inputs
from dockyard_operator.conditions import Reason
from dockyard_operator.nodetrust import builders as nt_builders
from dockyard_operator.nodetrust import layout, rotation
from dockyard_operator.reconcile import context


class Plans(Protocol):
    """Node trust's latest rotation plan per registry."""

    def plan_for(self, namespace: str, name: str) -> rotation.Plan | None: ...


def _same(a: pki.KeyPair, b: pki.KeyPair) -> bool:
    return layout.fingerprint(a.cert_pem.decode()) == layout.fingerprint(b.cert_pem.decode())


class CaRotation:
    def __init__(self, *, reader: context.Reader, writes: writer.Writer, plans: Plans | None) -> None:
        self._reader = reader
        self._writer = writes
        self._plans = plans

    async def stage(self, run: context.Pass, choice: context.CaChoice) -> context.Staged:
        """Which CA is current, which signs the serving certificate, and the bundle clients trust."""
        ca, handled, requested = choice.ca, choice.handled, run.requested_rotation
        stable = context.Staged(ca=ca, signer=ca, bundle=ca.cert_pem, handled=handled)
        if self._plans is None or not run.spec.node_trust.enabled:
            return stable
        next_name = nt_builders.next_ca_name(run.name)
        staged_object = await context.own_secret_object(self._reader, owner=run.owner, name=next_name)
        staged, staged_for = _keypair(staged_object)
        if staged is not None and _same(staged, ca):
            staged = None  # already promoted: the staged Secret stays as an identical copy of the CA
        findings = context.Findings()
        if staged is None:
            if not requested or requested == handled:
                return stable
            staged = await asyncio.to_thread(
                pki.new_ca,
                common_name=f"Dockyard CA {run.namespace}/{run.name} ({requested})"[:64],
                now=run.now,
                duration=model.parse_duration(run.spec.tls.ca_duration),
                permitted=choice.permitted,
            )
            manifest = nt_builders.next_ca_secret(
                registry=run.name, cert_pem=staged.cert_pem, key_pem=staged.key_pem
            )
            manifest["metadata"]["annotations"] = {context.ROTATE_CA: requested}
            staged_for = requested
            adopted = builders.adopt(manifest, owner=run.owner)
            found = None
            if staged_object is None:
                found, findings = await self._create(adopted, owner=run.owner, current=ca)
            if found is None:
                # created, or replaces the promoted copy of the CA
                written = await self._writer.apply(adopted, ours=context.owned_by(run.owner))
                if written.created:
                    findings += context.event(Reason.CREATED, f"created Secret {next_name}")
                elif written.changed:
                    findings += context.event(
                        Reason.UPDATED, f"updated Secret {next_name}: {', '.join(written.changed[:3])}"
                    )
                findings += context.event(
                    Reason.CA_ROTATION_STARTED, f"staged a next CA for rotation {requested!r}"
                )
                reused: frozenset[str] = frozenset()
            else:
                staged, staged_for = found
                reused = frozenset({next_name})
        else:
            reused = frozenset({next_name})
        plan = self._plans.plan_for(run.namespace, run.name)
        staged_pem = staged.cert_pem.decode()
        publishes_staged = plan is not None and any(
            layout.fingerprint(pem) == layout.fingerprint(staged_pem) for pem in plan.publish
        )
        if plan is not None and publishes_staged and plan.promote:
            findings += context.event(
                Reason.CA_ROTATED, "the next CA is now the CA; the previous one is retired"
            )
            return context.Staged(
                ca=staged,
                signer=staged,
                bundle=staged.cert_pem,
                handled=staged_for or requested,
                reused=reused,
                findings=findings,
            )
        signer = staged if plan is not None and publishes_staged and plan.serve_with_next else ca
        return context.Staged(
            ca=ca,
            signer=signer,
            bundle=ca.cert_pem + staged.cert_pem,
            handled=handled,
            next_ca_pem=staged.cert_pem,
            reused=reused,
            findings=findings,
        )

    async def _create(
        self, adopted: dict[str, Any], *, owner: inputs.Owner, current: pki.KeyPair
    ) -> tuple[tuple[pki.KeyPair, str | None] | None, context.Findings]:
        """Create the staged next CA Secret that this pass read as absent; never replace one that exists.

        It can exist unseen: an earlier create whose answer was lost was still in flight at the API server
        when this pass read. Its CA may already be published to the nodes, so overwriting it would stage a
        second next CA for one request. Returns that Secret's CA and the request it was staged for, or None
        when ours was created or the Secret found is only the promoted copy of the current CA (then the
        caller applies over it as usual).
        """
        written = await self._writer.create(adopted)
        if written.created:
            return None, context.event(Reason.CREATED, f"created Secret {adopted['metadata']['name']}")
        why = context.owned_by(owner)(written.live)
        if why is not None:
            raise context.Blocked([context.Problem(Reason.NAME_CONFLICT, why)])
        kept, staged_for = _keypair(written.live)
        if kept is None or _same(kept, current):
            return None, context.Findings()
        return (kept, staged_for), context.Findings()


def _keypair(secret: dict[str, Any] | None) -> tuple[pki.KeyPair | None, str | None]:
    """The CA in a staged Secret (None without a key) and the rotation request it was staged for."""
    data = context.decode(secret)
    pair = pki.KeyPair(data["ca.crt"], data["ca.key"]) if data and "ca.key" in data else None
    return pair, ((secret or {}).get("metadata", {}).get("annotations") or {}).get(context.ROTATE_CA)
