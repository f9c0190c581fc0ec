"""The one value every builder reads: a registry's parsed spec plus the material reconcile gathered.

Owns: `Inputs` (what builders may depend on), `Owner` (the registry as an owner reference), and the digests
that make the pod template change when configuration or secrets change.
Must not: gather anything itself (that is the `reconcile/` steps).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from collections.abc import Mapping

from dockyard_common import pki
from dockyard_operator import model, names, tenancy


@dataclasses.dataclass(frozen=True, kw_only=True)
class Owner:
    """The `PrivateRegistry` that owns the children."""

    name: str
    namespace: str
    uid: str
    api_version: str = names.API_VERSION
    kind: str = names.KIND


@dataclasses.dataclass(frozen=True, kw_only=True)
class TlsMaterial:
    """The serving certificate, its key and the CA bundle clients should trust."""

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes


@dataclasses.dataclass(frozen=True, kw_only=True)
class ObjectStorage:
    """What the reconcile step checked about spec.storage.s3's references (never a credential's value)."""

    digest: str
    """Changes when the credentials Secret or the CA bundle changes, so pods (which read both only at
    start) roll: the Secret's uid and resourceVersion, never its values, and the CA bundle's bytes."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Inputs:
    """Everything the builders need for one registry."""

    registry: str
    namespace: str
    spec: model.PrivateRegistrySpec
    names: names.Names
    registry_image: str
    nginx_image: str
    htpasswd: str
    access_yaml: str
    tls_secret_name: str
    """The Secret the nginx sidecar mounts: <registry>-tls, or the user's Secret in mode Secret."""
    tls_digest: str
    """Digest of the served certificate and key, so a renewal rolls the pods."""
    tls: TlsMaterial | None = None
    """Set when the operator renders <registry>-tls (SelfSigned mode and a usable CA)."""
    ca: pki.KeyPair | None = None
    """Set when the operator renders <registry>-ca."""
    ca_annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Annotations of <registry>-ca (the CA rotation request it satisfies)."""
    ingress_annotations_allowed: tuple[str, ...] = tenancy.DEFAULT_INGRESS_ANNOTATIONS
    """Which spec.expose.ingress.annotations keys reach the Ingress (the operator's setting)."""
    object_storage: ObjectStorage | None = None
    """Set with spec.storage.s3, once its credentials Secret (and CA, if any) were found usable."""
    operator_namespace: str = "dockyard-system"
    """The operator's namespace: its NetworkPolicy rule lets it read the registry's /status."""
    token_key: str = ""
    """The registry token key (short-lived pull secrets, the token flow's tokens shared by replicas); ""
    when none is used."""


def digest(*parts: str | bytes) -> str:
    """A short, stable digest of several values (length-prefixed, so boundaries cannot shift)."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()[:32]


def b64(data: str | bytes) -> str:
    """Secret `data` encoding."""
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def metadata(inputs: Inputs, *, name: str, component: str) -> dict[str, object]:
    """Common child metadata: name and the recommended labels."""
    return {"name": name, "labels": names.labels(inputs.registry, component=component)}
