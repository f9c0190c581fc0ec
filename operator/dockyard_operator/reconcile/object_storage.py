"""Step: spec.storage.s3's references (credentials Secret, CA bundle), checked before any child is written.

A pod whose `secretKeyRef` names a missing Secret or key never starts (CreateContainerConfigError), and one
whose CA volume is missing never leaves ContainerCreating; both are only visible on the pod. So, like a
missing password Secret, a missing credentials Secret or key, or a missing or unusable CA bundle, blocks the
pass with a problem naming it (Ready=False, Degraded=True, and StorageReady=False), and the watch on Secrets
(or the resync loop, for a ConfigMap) brings the next attempt.

Owns: those checks, and the digest that rolls the pods when the credentials or the CA change (the registry
reads both only when it starts).
Must not: write anything, or let a value of the credentials Secret leave this module: not into a problem, a
log, or even a digest. The Secret's uid and resourceVersion stand for its content (a rotation changes them;
an operator restart does not).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from dockyard_common import pki
from dockyard_operator import conditions, model
from dockyard_operator.builders import inputs
from dockyard_operator.conditions import Reason
from dockyard_operator.reconcile import context

_WHERE = "spec.storage.s3"


class ObjectStorage:
    def __init__(self, *, reader: context.Reader) -> None:
        self._reader = reader

    async def check(self, run: context.Pass) -> inputs.ObjectStorage | None:
        """None without spec.storage.s3; raises `context.Blocked` naming every unusable reference."""
        s3 = run.spec.storage.s3
        if s3 is None:
            return None
        problems: list[context.Problem] = []
        credentials = await self._reader.get(
            api_version="v1", kind="Secret", namespace=run.namespace, name=s3.credentials_secret.name
        )
        problems += credentials_problems(s3.credentials_secret, credentials)
        ca_pem, ca_problems = await self._ca(run, s3)
        problems += ca_problems
        if problems:
            raise context.Blocked(problems)
        assert credentials is not None  # credentials_problems reported it otherwise
        meta = credentials.get("metadata") or {}
        return inputs.ObjectStorage(
            digest=inputs.digest(str(meta.get("uid") or ""), str(meta.get("resourceVersion") or ""), ca_pem)
        )

    async def _ca(self, run: context.Pass, s3: model.S3Storage) -> tuple[bytes, list[context.Problem]]:
        """The CA bundle's bytes (empty without one) and what is wrong with it."""
        if s3.ca_secret is not None:
            ref, kind, field = s3.ca_secret, "Secret", "caSecret"
        elif s3.ca_config_map is not None:
            ref, kind, field = s3.ca_config_map, "ConfigMap", "caConfigMap"
        else:
            return b"", []
        live = await self._reader.get(api_version="v1", kind=kind, namespace=run.namespace, name=ref.name)
        where = f"{_WHERE}.{field}: {kind} {ref.name!r}"
        if live is None:
            missing = Reason.SECRET_NOT_FOUND if kind == "Secret" else Reason.CONFIG_MAP_NOT_FOUND
            return b"", [_problem(missing, f"{where} not found")]
        pem = _value(live, ref.key, kind=kind)
        if pem is None:
            absent = Reason.SECRET_KEY_MISSING if kind == "Secret" else Reason.CONFIG_MAP_KEY_MISSING
            return b"", [_problem(absent, f"{where} has no key {ref.key!r}")]
        try:
            pki.inspect(pem)
        except pki.PkiError as exc:
            return b"", [_problem(Reason.INVALID_CA_BUNDLE, f"{where} key {ref.key!r}: {exc}")]
        return pem, []


def _problem(reason: Reason, message: str) -> context.Problem:
    """A problem of the bucket's references: it also turns StorageReady False."""
    return context.Problem(reason, message, condition=conditions.STORAGE_READY)


def credentials_problems(ref: model.S3Credentials, secret: Mapping[str, Any] | None) -> list[context.Problem]:
    """What makes the credentials Secret unusable: absent, or a key missing or empty (values never read)."""
    where = f"{_WHERE}.credentialsSecret: Secret {ref.name!r}"
    if secret is None:
        return [_problem(Reason.SECRET_NOT_FOUND, f"{where} not found")]
    data = secret.get("data") or {}
    return [
        _problem(Reason.SECRET_KEY_MISSING, f"{where} has no key {key!r} (or it is empty)")
        for key in (ref.access_key_id_key, ref.secret_access_key_key)
        if not data.get(key)
    ]


def _value(live: Mapping[str, Any], key: str, *, kind: str) -> bytes | None:
    """A key of a Secret (`data`) or ConfigMap (`data`, `binaryData`) as bytes; None when absent."""
    if kind == "ConfigMap" and key in (live.get("data") or {}):
        return str(live["data"][key]).encode()
    encoded = (live.get("data") if kind == "Secret" else live.get("binaryData")) or {}
    if key not in encoded:
        return None
    try:
        return base64.b64decode(encoded[key], validate=True)
    except (binascii.Error, ValueError):
        return None
