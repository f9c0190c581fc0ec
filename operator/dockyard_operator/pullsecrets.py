"""Pull secrets: a `kubernetes.io/dockerconfigjson` Secret per chosen namespace, so Pods there can pull.

Owns (pure): the Secret's content (one `auths` entry per name clients pull by, each with the chosen user's
credentials), which namespaces get one (listed names plus namespaces matching a label selector, minus those
being deleted), the labels that find our copies again for clean-up (they live in other namespaces, so owner
references cannot remove them) and the annotation naming their registry (`registry_of`), and the
ServiceAccount change that makes them the default for a namespace.

Must not: perform I/O, or let a password reach anything but the Secret's data (never a label, an
annotation, a log line or a message).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from dockyard_operator import names

_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_MAYBE_DIGEST = re.compile(r"-[0-9a-f]{8}$")

FOR_LABEL = f"{names.GROUP}/pull-secret-for"
"""Label on every copy: `<namespace>.<registry>` (as a label value) of the registry it belongs to."""


ACCOUNT_ANNOTATION = f"{names.GROUP}/pull-secret-service-account"
"""Annotation on a copy: the ServiceAccount it was added to, so removing the copy removes that entry too."""

REGISTRY_ANNOTATION = f"{names.GROUP}/pull-secret-registry"
"""Annotation on a copy: `<namespace>/<registry>` it belongs to, in full (the label may be a digest), so the
orphan sweep finds the registry of a copy whose registry was deleted while no operator watched."""


def owner_label(namespace: str, registry: str) -> str:
    return names.label_value(f"{namespace}.{registry}")


def registry_of(copy: Mapping[str, Any]) -> tuple[str, str] | None:
    """(namespace, name) of the registry a copy belongs to, None when the copy cannot tell.

    From `REGISTRY_ANNOTATION`, or for a copy written before it by parsing the label: `<namespace>.<registry>`
    splits at the first dot (a namespace has none). A label that may be a digest (`label_value` shortens long
    values to a head and `-` plus 8 hex digits) cannot be parsed: None, and such a copy is left alone."""
    meta = copy.get("metadata") or {}
    annotated = str((meta.get("annotations") or {}).get(REGISTRY_ANNOTATION) or "")
    if annotated:
        namespace, _, name = annotated.partition("/")
        return (namespace, name) if _NAMESPACE.fullmatch(namespace) and _NAME.fullmatch(name) else None
    label = str((meta.get("labels") or {}).get(FOR_LABEL) or "")
    if _MAYBE_DIGEST.search(label):
        return None
    namespace, _, name = label.partition(".")
    if not _NAMESPACE.fullmatch(namespace) or not _NAME.fullmatch(name):
        return None
    return (namespace, name) if owner_label(namespace, name) == label else None


def dockerconfigjson(*, hosts: Sequence[str], username: str, password: bytes) -> bytes:
    """The `.dockerconfigjson` document: the same credentials for every host, in a stable order."""
    token = base64.b64encode(username.encode() + b":" + password).decode()
    auths = {host: {"username": username, "password": password.decode(), "auth": token} for host in hosts}
    return json.dumps({"auths": auths}, sort_keys=True, separators=(",", ":")).encode()


def secret(
    *, name: str, namespace: str, registry_namespace: str, registry: str, config: bytes
) -> dict[str, Any]:
    labels = {
        **names.labels(registry, component="pull-secret"),
        FOR_LABEL: owner_label(registry_namespace, registry),
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {REGISTRY_ANNOTATION: f"{registry_namespace}/{registry}"},
        },
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(config).decode()},
    }


def with_pull_secret(service_account: Mapping[str, Any], secret_name: str) -> dict[str, Any] | None:
    """The ServiceAccount with `secret_name` in imagePullSecrets, or None when it is already there."""
    current = [ref.get("name") for ref in service_account.get("imagePullSecrets") or []]
    if secret_name in current:
        return None
    updated = dict(service_account)
    updated["imagePullSecrets"] = [*(service_account.get("imagePullSecrets") or []), {"name": secret_name}]
    return updated


def without_pull_secret(service_account: Mapping[str, Any], secret_name: str) -> dict[str, Any] | None:
    """The ServiceAccount without `secret_name` in imagePullSecrets, or None when it is not there."""
    current = list(service_account.get("imagePullSecrets") or [])
    kept = [ref for ref in current if ref.get("name") != secret_name]
    if len(kept) == len(current):
        return None
    updated = dict(service_account)
    updated["imagePullSecrets"] = kept
    return updated
