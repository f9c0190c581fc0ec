"""Step: every child in apply order through the child writer, and the Ingress removed when unwanted.

Owns: adopting each child (controller owner reference), the order rules (a key Secret read this pass may not
be recreated from memory once deleted; the Deployment is left as it runs while another child's name belongs
to someone else, since its pods would mount that object), and turning what the API said about one child into
a problem without stopping the others (a name conflict, a rejected child, a rejected claim update that storage
reports, missing RBAC, a lost race), and releasing a child that must outlive the registry (a claim with
deletionPolicy Retain) from an owner reference an earlier pass or operator version gave it.
Must not: build manifests (that is `builders`), or write except through `writer.Writer`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dockyard_operator import builders, kube, writer
from dockyard_operator.builders import inputs
from dockyard_operator.conditions import Reason
from dockyard_operator.reconcile import context

_NEEDS_ALL_CHILDREN = {"Deployment"}


class Children:
    def __init__(self, *, reader: context.Reader, writes: writer.Writer) -> None:
        self._reader = reader
        self._writer = writes

    async def apply(
        self, run: context.Pass, desired: inputs.Inputs, *, reused: frozenset[str]
    ) -> context.Applied:
        """Ensure every child in apply order; the live objects by kind (for status and what follows)."""
        live: dict[str, Mapping[str, Any]] = {}
        findings = context.Findings()
        storage_problem = None
        conflicts = False
        for child in builders.desired_children(desired):
            adopted = builders.adopt(child, owner=run.owner)
            kind, name = adopted["kind"], adopted["metadata"]["name"]
            if conflicts and kind in _NEEDS_ALL_CHILDREN:
                # Its pods would mount someone else's object: leave the running Deployment as it is.
                current = await self._reader.get(
                    api_version=adopted["apiVersion"], kind=kind, namespace=run.namespace, name=name
                )
                if current is not None:
                    live[kind] = current
                continue
            # A key Secret deleted while this pass ran must be decided afresh (reissue, or refuse for the CA)
            # by the next pass, not silently restored from what this pass happened to read before.
            may_create = not (kind == "Secret" and name in reused)
            try:
                written = await self._writer.apply(
                    adopted, ours=context.owned_by(run.owner), may_create=may_create
                )
            except writer.NotOurs as exc:
                findings += context.problem(Reason.NAME_CONFLICT, str(exc))
                conflicts = True
            except writer.Vanished:
                findings += context.Findings(retry_after=1.0)
            except kube.Invalid as exc:
                if kind == "PersistentVolumeClaim":
                    storage_problem = context.Problem(Reason.CLAIM_UPDATE_REJECTED, str(exc))
                else:
                    findings += context.problem(Reason.CHILD_REJECTED, str(exc))
            except kube.Forbidden as exc:
                findings += context.problem(Reason.FORBIDDEN, str(exc), retry_after=60.0)
            except (kube.Conflict, kube.Unavailable) as exc:
                findings += context.problem(Reason.APPLY_FAILED, str(exc), retry_after=5.0)
            else:
                live[kind] = written.live
                if builders.retained(adopted):
                    live[kind], dropped = await self._release(run, written.live)
                    findings += dropped
                if written.created:
                    findings += context.event(Reason.CREATED, f"created {kind} {name}")
                elif written.changed:
                    findings += context.event(
                        Reason.UPDATED, f"updated {kind} {name}: {', '.join(written.changed[:3])}"
                    )
        if run.spec.expose.ingress is None:
            findings += await self._remove_ingress(run)
        return context.Applied(live=live, storage_problem=storage_problem, findings=findings)

    async def _release(
        self, run: context.Pass, live: Mapping[str, Any]
    ) -> tuple[Mapping[str, Any], context.Findings]:
        """A child that must outlive the registry (a retained claim) loses its owner reference to it."""
        try:
            released = await self._writer.drop_owner_reference(live, uid=run.owner.uid)
        except (kube.Invalid, kube.Conflict, kube.Unavailable) as exc:  # its references changed meanwhile
            return live, context.problem(Reason.APPLY_FAILED, str(exc), retry_after=5.0)
        except kube.Forbidden as exc:
            return live, context.problem(Reason.FORBIDDEN, str(exc), retry_after=60.0)
        return released, context.Findings()

    async def _remove_ingress(self, run: context.Pass) -> context.Findings:
        """Delete our Ingress when spec.expose.ingress was removed (only if we own it)."""
        ref = {
            "api_version": "networking.k8s.io/v1",
            "kind": "Ingress",
            "namespace": run.namespace,
            "name": run.names.ingress,
        }
        try:
            live = await self._reader.get(**ref)
            if live is None:
                return context.Findings()
            owners = live.get("metadata", {}).get("ownerReferences") or []
            if any(o.get("uid") == run.owner.uid for o in owners):
                await self._writer.delete(**ref)
                return context.event(Reason.DELETED, f"deleted Ingress {run.names.ingress}")
        except kube.Forbidden as exc:
            return context.problem(Reason.FORBIDDEN, str(exc))
        return context.Findings()
