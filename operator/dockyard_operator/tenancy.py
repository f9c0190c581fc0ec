"""What a tenant's `PrivateRegistry` may make the operator do outside the registry itself: pure checks.

Why: the operator runs with more rights than whoever may create a `PrivateRegistry` in a namespace, so every
spec field that reaches beyond the registry's own children is a way to borrow them. Two such fields are
screened here (node trust hostnames are `nodetrust.claims`); docs/security.md states the whole model:
- `spec.expose.ingress.annotations` are read by the Ingress controller, which acts for the whole cluster:
  ingress-nginx's `*-snippet` annotations paste raw nginx configuration into the shared controller (read any
  Secret it can, route other hosts). Only keys the installer allows (`DOCKYARD_INGRESS_ANNOTATIONS_ALLOWED`,
  chart value `tenancy.ingressAnnotations.allowed`) are copied, and a key containing `snippet` never is;
- `spec.pullSecrets.namespaces` / `namespaceSelector` make the operator write a Secret, and patch a
  ServiceAccount, in other namespaces. Only the registry's own namespace and namespaces that opted in for
  this source namespace (label `pull-secrets-from.dockyard.dev/<source namespace>: "true"`, set by whoever
  controls the target namespace) get one.
The chart's ValidatingAdmissionPolicy (charts/dockyard/templates/admission-policy.yaml) refuses the same
annotations at admission time, from the same chart values; these checks are what holds where the policy is
switched off, or for objects admitted before it existed.

Must not: perform I/O, or import kopf/lightkube.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dockyard_operator import names
from dockyard_operator.conditions import Reason

DEFAULT_INGRESS_ANNOTATIONS: tuple[str, ...] = (
    "cert-manager.io/*",
    "nginx.ingress.kubernetes.io/proxy-body-size",
    "nginx.ingress.kubernetes.io/proxy-connect-timeout",
    "nginx.ingress.kubernetes.io/proxy-read-timeout",
    "nginx.ingress.kubernetes.io/proxy-send-timeout",
    "nginx.ingress.kubernetes.io/proxy-request-buffering",
    "nginx.ingress.kubernetes.io/proxy-buffering",
    "nginx.ingress.kubernetes.io/ssl-redirect",
    "nginx.ingress.kubernetes.io/force-ssl-redirect",
    "nginx.ingress.kubernetes.io/whitelist-source-range",
    "nginx.ingress.kubernetes.io/limit-connections",
    "nginx.ingress.kubernetes.io/limit-rps",
)
"""Ingress annotation keys a tenant may set unless the installer says otherwise (the chart's default
`tenancy.ingressAnnotations.allowed` is this list; a test keeps them equal). `prefix*` allows every key
starting with `prefix`. None of them makes the controller run tenant-written configuration or fetch a
tenant-chosen URL."""

FORBIDDEN_FRAGMENT = "snippet"
"""A key containing this (any case) is never copied, whatever the allowlist says: ingress-nginx's
`configuration-snippet`, `server-snippet`, `auth-snippet`, `stream-snippet`, ... inject raw nginx config."""

PULL_SECRETS_FROM = f"pull-secrets-from.{names.GROUP}"
"""Label prefix of the pull-secret opt-in: `pull-secrets-from.dockyard.dev/<source namespace>: "true"` on a
namespace lets registries of that source namespace put pull Secrets there."""


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The outcome of one check: a `conditions.Reason` and a message for humans (never contains secrets)."""

    ok: bool
    reason: Reason
    message: str


# --------------------------------------------------------------------------------- ingress annotations


def annotation_allowed(key: str, allowed: Iterable[str]) -> bool:
    """Whether an annotation key may reach the Ingress: never a `snippet` key; else an exact allowlist
    entry or an entry `prefix*` with `key` starting with `prefix`."""
    if FORBIDDEN_FRAGMENT in key.lower():
        return False
    return any(key.startswith(p[:-1]) if p.endswith("*") else key == p for p in allowed)


def ingress_annotations(
    requested: Mapping[str, str] | None, *, allowed: Sequence[str]
) -> tuple[dict[str, str], Verdict]:
    """(the annotations to copy onto the Ingress, whether any were refused and which)."""
    kept = {k: v for k, v in (requested or {}).items() if annotation_allowed(k, allowed)}
    refused = sorted(set(requested or {}) - set(kept))
    if not refused:
        return kept, Verdict(True, Reason.ANNOTATIONS_ALLOWED, "every ingress annotation is allowed")
    return kept, Verdict(
        False,
        Reason.INGRESS_ANNOTATIONS_REFUSED,
        f"spec.expose.ingress.annotations {', '.join(refused)} not applied: keys containing "
        f"{FORBIDDEN_FRAGMENT!r} never are, others only when the operator's allowed ingress annotations "
        "name them",
    )


# ------------------------------------------------------------------------------------- pull secrets


def opt_in_label(source_namespace: str) -> str:
    """The label a namespace carries (value "true") to accept pull Secrets from `source_namespace`."""
    return f"{PULL_SECRETS_FROM}/{source_namespace}"


def accepts_pull_secrets(namespace: Mapping[str, Any], *, source_namespace: str) -> bool:
    """Whether a Namespace object accepts pull Secrets from registries of `source_namespace`: it is that
    namespace, or it carries the opt-in label for it."""
    meta = namespace.get("metadata") or {}
    if meta.get("name") == source_namespace:
        return True
    return (meta.get("labels") or {}).get(opt_in_label(source_namespace)) == "true"


def pull_secret_targets(
    namespaces: Iterable[Mapping[str, Any]],
    *,
    source_namespace: str,
    listed: Sequence[str],
    match_labels: Mapping[str, str] | None,
) -> tuple[list[str], Verdict]:
    """(the namespaces that get a copy, and a verdict naming the listed ones that did not opt in).

    Chosen: listed by name or matching `match_labels`, not terminating, and accepting pull Secrets from
    `source_namespace`. The selector only ever chooses among namespaces that opted in, so a namespace it
    matches without opting in is left out silently: naming it would tell the tenant which namespaces exist.
    A listed namespace that does not exist is not reported either (it may come later; the resync loop
    retries).
    """
    chosen: list[str] = []
    refused: list[str] = []
    for ns in namespaces:
        meta = ns.get("metadata") or {}
        if (ns.get("status") or {}).get("phase") == "Terminating" or meta.get("deletionTimestamp"):
            continue
        name = str(meta.get("name"))
        labels = meta.get("labels") or {}
        wanted = name in listed or bool(match_labels and match_labels.items() <= labels.items())
        if not wanted:
            continue
        if accepts_pull_secrets(ns, source_namespace=source_namespace):
            chosen.append(name)
        elif name in listed:
            refused.append(name)
    chosen.sort()
    if not refused:
        return chosen, Verdict(
            True, Reason.PULL_SECRET_TARGETS_ACCEPTED, "every pull secret namespace opted in"
        )
    return chosen, Verdict(
        False,
        Reason.PULL_SECRET_NAMESPACE_NOT_OPTED_IN,
        f"no pull secret in namespace(s) {', '.join(sorted(refused))}: a namespace accepts them from "
        f"{source_namespace} only with the label {opt_in_label(source_namespace)}=true",
    )
