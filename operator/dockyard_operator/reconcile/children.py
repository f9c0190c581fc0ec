"""Step: every child in apply order through the child writer, and optional children removed when unwanted.

Owns: adopting each child (controller owner reference), the order rules (a key Secret read this pass may not
be recreated from memory once deleted; the Deployment is left as it runs while another child's name belongs
to someone else, since its pods would mount that object), and turning what the API said about one child into
a problem without stopping the others (a name conflict, a rejected child, a rejected claim update that storage
reports, missing RBAC, a lost race), deleting our optional children the spec no longer wants (Ingress,
PodDisruptionBudget, NetworkPolicy), releasing a child that must outlive the registry (a claim with
deletionPolicy Retain) from an owner reference an earlier pass or operator version gave it, and which live
object is "the" one of its kind that status and the later steps read: `Applied.live` holds the main Service
(`<registry>`), never the `<registry>-metrics` one, and the nginx ConfigMap, never the maintenance one.
Must not: build manifests (that is `builders`), or write except through `writer.Writer`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dockyard_operator import builders, kube, names, writer
from dockyard_operator.builders import inputs
from dockyard_operator.conditions import Reason
from dockyard_operator.reconcile import context

_NEEDS_ALL_CHILDREN = {"Deployment"}


def _is_main(kind: str, name: str, child_names: names.Names) -> bool:
    """Whether a child is the one of its kind the later steps read (Services and ConfigMaps come in two)."""
    if kind == "Service":
        return name == child_names.service
    if kind == "ConfigMap":
        return name == child_names.nginx_configmap
    return True


class Children:
    def __init__(self, *, reader: context.Reader, writes: writer.Writer) -> None:
        self._reader = reader
        self._writer = writes

    async def apply(
        self,
        run: context.Pass,
        desired: inputs.Inputs,
        *,
        reused: frozenset[str],
        read: context.Read | None = None,
    ) -> context.Applied:
        """Ensure every child in apply order; the live objects by kind (for status and what follows).

        `read`: our Secrets as earlier steps read them this pass; the writer decides on those reads instead
        of reading them again (a stale one fails the write's precondition and is read afresh)."""
        read = read or {}
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
                if current is not None and _is_main(kind, name, run.names):
                    live[kind] = current
                continue
            # A key Secret deleted while this pass ran must be decided afresh (reissue, or refuse for the CA)
            # by the next pass, not silently restored from what this pass happened to read before.
            may_create = not (kind == "Secret" and name in reused)
            try:
                written = await self._writer.apply(
                    adopted,
                    ours=context.owned_by(run.owner),
                    may_create=may_create,
                    read=read.get(name) if kind == "Secret" else None,
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
                applied: Mapping[str, Any] = written.live
                if builders.retained(adopted):
                    applied, dropped = await self._release(run, written.live)
                    findings += dropped
                if _is_main(kind, name, run.names):
                    live[kind] = applied
                if written.created:
                    findings += context.event(Reason.CREATED, f"created {kind} {name}")
                elif written.changed:
                    findings += context.event(
                        Reason.UPDATED, f"updated {kind} {name}: {', '.join(written.changed[:3])}"
                    )
        for optional in builders.optional_children(desired):
            if not optional.wanted:
                findings += await self._remove(run, optional)
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

    async def _remove(self, run: context.Pass, child: builders.OptionalChild) -> context.Findings:
        """Delete an optional child the spec no longer wants (only if we own it; someone else's stays)."""
        ref = {
            "api_version": child.api_version,
            "kind": child.kind,
            "namespace": run.namespace,
            "name": child.name,
        }
        try:
            live = await self._reader.get_ours(**ref)  # only our own object is deleted
            if live is None:
                return context.Findings()
            owners = live.get("metadata", {}).get("ownerReferences") or []
            if any(o.get("uid") == run.owner.uid for o in owners):
                await self._writer.delete(**ref)
                return context.event(Reason.DELETED, f"deleted {child.kind} {child.name}")
        except kube.Forbidden as exc:
            return context.problem(Reason.FORBIDDEN, str(exc))
        return context.Findings()
