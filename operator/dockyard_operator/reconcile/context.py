"""What the steps of a pass share: the immutable pass context, what a step adds, and reading Secrets.

Owns: `Pass` (one registry as read at the start of a pass: parsed spec, names, owner, clock reading), the
typed results steps hand on (`Findings`: problems, Events and a retry delay; `CaChoice`, `Staged`, `Tls`,
`Applied`, `Observed`), `Blocked` (material is unusable: leave every child as it is), the `Reader` the steps
read through, and the few pure facts several steps derive (endpoints, CA and certificate status, the TLS
digest).
Must not: write anything, or import a step (steps import this module, never each other).
"""

from __future__ import annotations

import base64
import builtins
import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from dockyard_common import pki
from dockyard_operator import conditions, mirror_status, model, names, policies, writer
from dockyard_operator.builders import inputs

ROTATE_CA = f"{names.GROUP}/rotate-ca"
"""Annotation requesting a staged CA rotation (any new value); on the CA Secret: the request it satisfies."""


class Reader(Protocol):
    """The reads a step may make (writes go through `writer.Writer`). In the operator:
    `cached_client.CachedClient`, whose `get` answers from the watch-fed cache where it knows the object
    and asks the API otherwise; `get_ours` is for a caller that acts only on an object carrying the
    operator's label or a registry's owner reference, for which "none of ours" (known without a request)
    is a sufficient answer."""

    async def get(
        self, *, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None: ...
    async def get_ours(
        self, *, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None: ...
    async def list(
        self,
        *,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]: ...
    async def list_namespaces(self) -> builtins.list[dict[str, Any]]: ...


@dataclasses.dataclass(frozen=True)
class Problem:
    """Something that makes the spec unusable right now (reason, message); never contains secrets."""

    reason: conditions.Reason
    message: str
    condition: str | None = None
    """A condition besides Ready and Degraded that this problem also turns False (StorageReady for object
    storage's references); None: only those two."""


@dataclasses.dataclass(frozen=True)
class Event:
    type: str
    reason: conditions.Reason
    message: str


@dataclasses.dataclass(frozen=True)
class Findings:
    """What a step reports besides its result: problems (Degraded), Events, and when to try again."""

    problems: tuple[Problem, ...] = ()
    events: tuple[Event, ...] = ()
    retry_after: float | None = None

    def __add__(self, later: Findings) -> Findings:
        return Findings(
            problems=(*self.problems, *later.problems),
            events=(*self.events, *later.events),
            retry_after=later.retry_after if later.retry_after is not None else self.retry_after,
        )


def problem(reason: conditions.Reason, message: str, *, retry_after: float | None = None) -> Findings:
    return Findings(problems=(Problem(reason, message),), retry_after=retry_after)


def event(reason: conditions.Reason, message: str, *, type_: str = "Normal") -> Findings:
    return Findings(events=(Event(type_, reason, message),))


def total(findings: Sequence[Findings]) -> Findings:
    result = Findings()
    for item in findings:
        result += item
    return result


class Blocked(Exception):
    """Material gathering found problems: keep children untouched and report them."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = tuple(problems)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Pass:
    """One registry as this pass read it; never changed during the pass."""

    body: Mapping[str, Any]
    spec: model.PrivateRegistrySpec
    owner: inputs.Owner
    names: names.Names
    now: datetime.datetime
    previous: tuple[model.Condition, ...]

    @property
    def namespace(self) -> str:
        return self.owner.namespace

    @property
    def name(self) -> str:
        return self.owner.name

    @property
    def generation(self) -> int | None:
        generation = self.body["metadata"].get("generation")
        return int(generation) if generation is not None else None

    @property
    def requested_rotation(self) -> str | None:
        return (self.body["metadata"].get("annotations") or {}).get(ROTATE_CA)

    @property
    def created(self) -> str:
        return str(self.body["metadata"].get("creationTimestamp") or "")


Read = Mapping[str, Mapping[str, Any]]
"""Our Secrets as a step read them this pass, by name (absent ones left out): the children step hands each
to the child writer, which decides on it instead of reading it a second time."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Users:
    htpasswd: str
    access_yaml: str
    token_key: str = ""
    """The key signing short-lived pull-secret tokens (in `<registry>-htpasswd`); "" when none is used."""
    read: Read = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CaChoice:
    """The CA a SelfSigned registry keeps or creates, before any staged rotation."""

    ca: pki.KeyPair
    handled: str | None
    """The rotation request the CA already satisfies (from its Secret's annotation)."""
    permitted: pki.Constraints
    dns: tuple[str, ...]
    ips: tuple[str, ...]
    tls_data: Mapping[str, bytes] | None
    reused: frozenset[str]
    findings: Findings
    read: Read = dataclasses.field(default_factory=dict)
    created: bool = False
    """The CA was created by this pass (its CACreated Event also stands for its first certificate)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Staged:
    """The CAs of one pass: the current one, the one that signs the serving certificate, the bundle."""

    ca: pki.KeyPair
    signer: pki.KeyPair
    bundle: bytes
    handled: str | None
    next_ca_pem: bytes | None = None
    """A staged next CA (rotation in progress), published to nodes beside the current one."""
    reused: frozenset[str] = frozenset()
    findings: Findings = Findings()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Tls:
    """Everything the TLS steps decided: what the builders render and what status reports."""

    secret_name: str
    """The Secret the nginx sidecar mounts: <registry>-tls, or the user's Secret in mode Secret."""
    digest: str
    material: inputs.TlsMaterial | None = None
    ca: pki.KeyPair | None = None
    ca_annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    certificate: policies.Verdict | None = None
    ca_status: model.CaStatus | None = None
    cert_status: model.CertificateStatus | None = None
    ca_pem: bytes | None = None
    """The CA clients should trust (for node trust), when one is known."""
    next_ca_pem: bytes | None = None
    server_cert_pem: bytes | None = None
    reused: frozenset[str] = frozenset()
    """Secrets whose key material this pass read instead of generating: never recreated from memory."""
    findings: Findings = Findings()
    read: Read = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Applied:
    """The live children after the children step, by kind, and what went wrong on the way.

    One object per kind: of the two Services, the main `<registry>` one (never `<registry>-metrics`), the
    one status, node trust and pull secrets read."""

    live: Mapping[str, Mapping[str, Any]]
    storage_problem: Problem | None = None
    findings: Findings = Findings()

    def get(self, kind: str) -> Mapping[str, Any] | None:
        return self.live.get(kind)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Observed:
    """What the registry reports about itself (status.storage, status.maintenance, StorageReady's say)."""

    storage: model.StorageStatus | None = None
    maintenance: model.MaintenanceStatus | None = None
    identities: tuple[model.IdentityIssuerStatus, ...] | None = None
    verdict: policies.Verdict | None = None
    """From the registry's own storage check; None without a fresh reading."""
    mirrors: tuple[model.MirrorStatus, ...] | None = None
    """Per mirror, the upstream's state as the pods report it (or status showed, without an answer)."""
    mirrors_observed: bool = False
    """Whether `mirrors` comes from a fresh reading."""
    findings: Findings = Findings()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Trust:
    """What node trust says about this registry (status.nodeTrust and NodeTrustReady)."""

    verdict: policies.Verdict | None = None
    status: model.NodeTrustStatus | None = None
    mirror_wiring: Mapping[str, mirror_status.Wiring] | None = None
    """Per image host wired to one of this registry's mirrors, what the nodes report."""


# ----------------------------------------------------------------------------------------- reading


def decode(secret: Mapping[str, Any] | None) -> dict[str, bytes] | None:
    if secret is None:
        return None
    return {key: base64.b64decode(value) for key, value in (secret.get("data") or {}).items()}


async def secret(reader: Reader, *, namespace: str, name: str) -> dict[str, bytes] | None:
    """A Secret's data, decoded; None when absent."""
    return decode(await reader.get(api_version="v1", kind="Secret", namespace=namespace, name=name))


async def own_secret_object(reader: Reader, *, owner: inputs.Owner, name: str) -> dict[str, Any] | None:
    """One of our Secrets; None when absent.

    Someone else's Secret of that name blocks the pass: its key material must neither be used (a foreign CA
    signing our certificate) nor overwritten. Read with `Reader.get_ours`: the cache answers "none" without
    a request, and shows a Secret someone else holds (the writer reads again before creating one).
    """
    live = await reader.get_ours(api_version="v1", kind="Secret", namespace=owner.namespace, name=name)
    if live is None:
        return None
    verdict = policies.ownership_verdict(live, owner_uid=owner.uid, registry=owner.name)
    if not verdict.ok:
        raise Blocked([Problem(verdict.reason, verdict.message)])
    return live


def referenced_secrets(spec: model.PrivateRegistrySpec) -> frozenset[str]:
    """The Secrets (in the registry's namespace) a pass reads by the names the spec gives: the users'
    passwords, a bring-your-own TLS Secret, object storage's credentials and CA."""
    found = {user.password_secret_ref.name for user in spec.auth.users}
    if spec.tls.mode == "Secret" and spec.tls.secret_name:
        found.add(spec.tls.secret_name)
    s3 = spec.storage.s3
    if s3 is not None:
        found.add(s3.credentials_secret.name)
        if s3.ca_secret is not None:
            found.add(s3.ca_secret.name)
    return frozenset(found)


def read_objects(*objects: Mapping[str, Any] | None) -> Read:
    """`Read` of the objects a step read (None: absent, left out)."""
    return {str(obj["metadata"]["name"]): obj for obj in objects if obj is not None}


def owned_by(owner: inputs.Owner) -> writer.Ownership:
    """The writer's ownership check for a child of `owner` (controller owner reference, or adoptable)."""

    def check(live: Mapping[str, Any]) -> str | None:
        verdict = policies.ownership_verdict(live, owner_uid=owner.uid, registry=owner.name)
        return None if verdict.ok else verdict.message

    return check


# ---------------------------------------------------------------------------------- derived facts


def tls_digest(cert_pem: bytes, key_pem: bytes, ca_pem: bytes) -> str:
    """The served TLS material's digest: one formula everywhere, so unchanged material never rolls pods."""
    return inputs.digest(cert_pem, key_pem, ca_pem)


def ca_status(ca_pem: bytes, secret_name: str) -> model.CaStatus:
    info = pki.inspect(ca_pem)
    return model.CaStatus(
        secret_name=secret_name, fingerprint_sha256=info.fingerprint_sha256, not_after=info.not_after
    )


def cert_status(cert_pem: bytes, secret_name: str) -> model.CertificateStatus:
    info = pki.inspect(cert_pem)
    return model.CertificateStatus(
        secret_name=secret_name,
        not_after=info.not_after,
        dns_names=list(info.dns_names),
        ip_addresses=list(info.ip_addresses),
    )


def node_endpoint(spec: model.PrivateRegistrySpec, service: Mapping[str, Any] | None) -> str | None:
    """`localhost:<nodePort>`: what kubelet pulls by on every node (kube-proxy forwards it on loopback)."""
    if spec.expose.type == "ClusterIP":
        return None
    for port in ((service or {}).get("spec") or {}).get("ports") or []:
        if port.get("nodePort"):
            return f"localhost:{port['nodePort']}"
    return None


def endpoint(spec: model.PrivateRegistrySpec, child_names: names.Names, namespace: str) -> str:
    if spec.expose.ingress is not None:
        return f"{spec.expose.ingress.host}:443"
    return f"{child_names.service}.{namespace}.svc:443"
