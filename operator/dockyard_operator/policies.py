"""Pure decisions of the reconcile loop, each returning what to do and why (a reason and a message).

Owns: which SANs the serving certificate needs (and which of them a name-constrained CA may vouch for), the
name constraints of a new CA, when the certificate must be (re)issued, what to do about the CA, whether a
bring-your-own certificate is usable, whether storage fits the replica count, and how Deployment status maps
to readiness. Every check returns a reason that drives both the action and the condition, in the style of
cert-manager's policy chain.
Must not: perform I/O, read the clock (callers pass `now`), or import kopf/lightkube.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import ipaddress
from collections.abc import Mapping
from typing import Any

from dockyard_common import pki
from dockyard_operator import model, names
from dockyard_operator.conditions import Reason

# Two certificates read back from PEM may differ by sub-second rounding of their validity bounds.
_CLOCK_SLACK = datetime.timedelta(seconds=1)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The outcome of one check: a `conditions.Reason` and a message for humans (never contains secrets)."""

    ok: bool
    reason: Reason
    message: str


# ------------------------------------------------------------------------------------ certificates


def desired_sans(
    *, spec: model.PrivateRegistrySpec, child_names: names.Names, namespace: str, cluster_domain: str
) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) the serving certificate must carry, deduplicated in a stable order."""
    dns: list[str] = [*names.service_hosts(child_names.service, namespace, cluster_domain), "localhost"]
    if spec.expose.ingress is not None:
        dns.append(spec.expose.ingress.host)
    dns.extend(spec.tls.dns_names)
    ips = ["127.0.0.1", *spec.tls.ip_addresses]
    return list(dict.fromkeys(dns)), list(dict.fromkeys(ips))


def ca_constraints(dns_names: list[str], ip_addresses: list[str]) -> pki.Constraints:
    """The name constraints a new CA gets: the serving certificate's names (`*.x` as the subtree `x`).

    A CA made for one registry then cannot vouch for `docker.io` or another team's name, wherever it is
    trusted. Only new CAs (first issuance, staged rotation) get them; a name added to the spec later lies
    outside them until the next rotation (`within_constraints` says which).
    """
    dns = [name[2:] if name.startswith("*.") else name for name in dns_names]
    return pki.Constraints(
        dns_names=tuple(dict.fromkeys(name.lower() for name in dns)),
        ip_addresses=tuple(dict.fromkeys(ip_addresses)),
    )


def within_constraints(
    permitted: pki.Constraints | None, *, dns_names: list[str], ip_addresses: list[str]
) -> tuple[list[str], list[str], list[str]]:
    """(DNS names, IP addresses) the CA may vouch for, and the names it may not (in order).

    A certificate naming even one name outside the issuer's constraints fails verification as a whole, so
    such names are left out of it instead.
    """
    if permitted is None:
        return list(dns_names), list(ip_addresses), []

    def dns_ok(name: str) -> bool:
        name = name.lower().removeprefix("*.")
        return any(name == c or name.endswith(f".{c}") for c in permitted.dns_names)

    networks = [ipaddress.ip_network(ip, strict=False) for ip in permitted.ip_addresses]

    def ip_ok(ip: str) -> bool:
        address = ipaddress.ip_address(ip)
        return any(address.version == n.version and address in n for n in networks)

    dns = [name for name in dns_names if dns_ok(name)]
    ips = [ip for ip in ip_addresses if ip_ok(ip)]
    outside = [name for name in dns_names if not dns_ok(name)] + [ip for ip in ip_addresses if not ip_ok(ip)]
    return dns, ips, outside


class CaAction(enum.Enum):
    CREATE = "create"  # nothing exists yet: first issuance
    KEEP = "keep"  # the CA Secret is present and usable
    REFUSE = "refuse"  # the CA key is gone (or broken) while clients may trust the old CA


def ca_action(
    *, ca_secret: Mapping[str, bytes] | None, tls_secret: Mapping[str, bytes] | None
) -> tuple[CaAction, Verdict]:
    """What to do about the CA.

    The CA is never regenerated silently: clients and nodes have been told to trust it, and a new CA breaks
    every one of them (the harbor-helm #786 failure). So a missing or broken CA Secret while the TLS Secret
    still carries a CA is reported (Degraded, reason CAKeyMissing / CAInvalid) and the serving certificate is
    left alone; the user accepts a new CA by deleting the TLS Secret too. Only when neither exists is a CA
    created.
    """
    ca_pem = (ca_secret or {}).get("ca.crt")
    ca_key = (ca_secret or {}).get("ca.key")
    if ca_pem and ca_key:
        try:
            info = pki.inspect(ca_pem)
            matches = pki.key_matches(cert_pem=ca_pem, key_pem=ca_key)
        except pki.PkiError as exc:
            return CaAction.REFUSE, Verdict(False, Reason.CA_INVALID, f"the CA Secret is unusable: {exc}")
        if not matches or not info.is_ca:
            return CaAction.REFUSE, Verdict(
                False, Reason.CA_INVALID, "the CA Secret's key does not match its certificate"
            )
        return CaAction.KEEP, Verdict(True, Reason.CA_PRESENT, f"CA {info.fingerprint_sha256} is kept")
    if tls_secret is not None and tls_secret.get("ca.crt"):
        return CaAction.REFUSE, Verdict(
            False,
            Reason.CA_KEY_MISSING,
            "the CA Secret is missing or incomplete while the TLS Secret still carries a CA that clients "
            "may trust; "
            "not generating a new CA silently. Delete the TLS Secret as well to accept a new CA.",
        )
    return CaAction.CREATE, Verdict(True, Reason.CA_CREATED, "no CA existed; a new one is created")


def server_cert_verdict(
    *,
    tls_secret: Mapping[str, bytes] | None,
    ca_pem: bytes,
    dns_names: list[str],
    ip_addresses: list[str],
    now: datetime.datetime,
    renew_before: datetime.timedelta,
    ca_bundle: bytes | None = None,
) -> Verdict:
    """Whether the current serving certificate can stay (`ok`) or why it must be (re)issued.

    `ca_pem` is the CA that must have signed it; `ca_bundle` what `ca.crt` must hold (default: `ca_pem`;
    during a CA rotation both CAs).
    """
    if tls_secret is None or not tls_secret.get("tls.crt") or not tls_secret.get("tls.key"):
        return Verdict(False, Reason.MISSING, "no serving certificate yet")
    cert, key = tls_secret["tls.crt"], tls_secret["tls.key"]
    try:
        info = pki.inspect(cert)
        if not pki.key_matches(cert_pem=cert, key_pem=key):
            return Verdict(False, Reason.KEY_MISMATCH, "tls.key does not belong to tls.crt")
        if not pki.signed_by(cert_pem=cert, ca_pem=ca_pem):
            return Verdict(
                False, Reason.NOT_SIGNED_BY_CA, "the serving certificate was not issued by the current CA"
            )
    except pki.PkiError as exc:
        return Verdict(False, Reason.UNPARSEABLE, f"the serving certificate is unusable: {exc}")
    if tls_secret.get("ca.crt") != (ca_bundle if ca_bundle is not None else ca_pem):
        return Verdict(False, Reason.CA_BUNDLE_OUTDATED, "ca.crt in the TLS Secret is not the current CA")
    if sorted(info.dns_names) != sorted(dns_names) or sorted(info.ip_addresses) != sorted(ip_addresses):
        return Verdict(
            False,
            Reason.SANS_CHANGED,
            "the certificate's DNS names or IP addresses differ from the wanted set",
        )
    if info.not_after - renew_before <= now:
        ca_not_after = pki.inspect(ca_pem).not_after
        if info.not_after >= ca_not_after - _CLOCK_SLACK and ca_not_after > now:
            # A certificate never outlives its CA: reissuing would give the same expiry on every pass.
            return Verdict(
                True,
                Reason.LIMITED_BY_CA,
                f"valid until {info.not_after.isoformat()}, when the CA expires; the CA is never renewed "
                "silently: delete both TLS Secrets to rotate it",
            )
        return Verdict(
            False, Reason.EXPIRING, f"the certificate expires at {info.not_after.isoformat()}; renewing"
        )
    return Verdict(True, Reason.VALID, f"valid until {info.not_after.isoformat()}")


def ownership_verdict(live: Mapping[str, Any], *, owner_uid: str, registry: str) -> Verdict:
    """Whether an existing object with a child's name is ours to manage.

    Ours: it names this registry in an owner reference, or it carries no controller at all but our labels
    for this registry (an orphan left by `kubectl delete --cascade=orphan`). Anything else belongs to someone
    else and is never taken over: overwriting a foreign ConfigMap or Secret could destroy their data.
    """
    meta = live.get("metadata") or {}
    refs = meta.get("ownerReferences") or []
    if any(ref.get("uid") == owner_uid for ref in refs):
        return Verdict(True, Reason.OWNED, "owned by this registry")
    labels = meta.get("labels") or {}
    ours = labels.get(names.LABEL_MANAGED_BY) == names.MANAGED_BY and labels.get(
        names.LABEL_INSTANCE
    ) == names.label_value(registry)
    if ours and not any(ref.get("controller") for ref in refs):
        return Verdict(True, Reason.ADOPTED, "an orphaned child of this registry is adopted")
    kind, name = live.get("kind", "object"), meta.get("name", "?")
    controller = next((ref for ref in refs if ref.get("controller")), None)
    holder = f"{controller.get('kind')} {controller.get('name')}" if controller else "something else"
    return Verdict(
        False,
        Reason.NAME_CONFLICT,
        f"{kind} {name} already exists and belongs to {holder}, not to this registry; "
        "rename or remove it, the operator will not take it over",
    )


def byo_cert_verdict(
    *, secret: Mapping[str, bytes] | None, secret_name: str, now: datetime.datetime
) -> Verdict:
    """Whether a bring-your-own `kubernetes.io/tls` Secret is usable."""
    if secret is None:
        return Verdict(False, Reason.SECRET_NOT_FOUND, f"TLS Secret {secret_name!r} not found")
    cert, key = secret.get("tls.crt"), secret.get("tls.key")
    if not cert or not key:
        return Verdict(
            False, Reason.SECRET_INCOMPLETE, f"TLS Secret {secret_name!r} needs keys tls.crt and tls.key"
        )
    try:
        info = pki.inspect(cert)
        if not pki.key_matches(cert_pem=cert, key_pem=key):
            return Verdict(
                False, Reason.KEY_MISMATCH, f"tls.key in Secret {secret_name!r} does not belong to tls.crt"
            )
    except pki.PkiError as exc:
        return Verdict(False, Reason.INVALID_CERTIFICATE, f"TLS Secret {secret_name!r}: {exc}")
    if info.not_after <= now:
        return Verdict(
            False,
            Reason.EXPIRED,
            f"the certificate in Secret {secret_name!r} expired at {info.not_after.isoformat()}",
        )
    return Verdict(
        True,
        Reason.VALID,
        f"certificate from Secret {secret_name!r} valid until {info.not_after.isoformat()}",
    )


# ------------------------------------------------------------------------------------------ storage


def storage_verdict(spec: model.PrivateRegistrySpec, *, pvc_phase: str | None) -> Verdict:
    """Whether the storage is usable for the wanted replica count."""
    s3 = spec.storage.s3
    if s3 is not None:  # shared by every replica; whether the bucket answers is the registry's to report
        return Verdict(True, Reason.OBJECT_STORAGE, f"object storage {s3.location} at {s3.endpoint}")
    if spec.storage.kind == "emptyDir":
        if spec.replicas > 1:
            return Verdict(
                False,
                Reason.STORAGE_NOT_SHARED,
                "emptyDir storage is per pod; more than one replica splits the data",
            )
        return Verdict(True, Reason.EMPTY_DIR, "pod-local emptyDir storage (lost when the pod goes away)")
    pvc = spec.storage.effective_pvc
    if spec.replicas > 1 and "ReadWriteMany" not in pvc.access_modes:
        return Verdict(False, Reason.STORAGE_NOT_SHARED, "more than one replica needs a ReadWriteMany claim")
    if pvc_phase == "Bound":
        return Verdict(True, Reason.CLAIM_BOUND, "the PersistentVolumeClaim is bound")
    if pvc_phase == "Lost":
        return Verdict(False, Reason.CLAIM_LOST, "the PersistentVolumeClaim lost its volume")
    return Verdict(False, Reason.CLAIM_PENDING, "waiting for the PersistentVolumeClaim to be bound")


# ---------------------------------------------------------------------------------------- readiness


def storage_location(spec: model.PrivateRegistrySpec, *, claim: str) -> str:
    """Where a registry's data lives, as status.storage.location shows it."""
    if spec.storage.s3 is not None:
        return spec.storage.s3.location
    if spec.storage.kind == "emptyDir":
        return "emptyDir"
    return f"pvc/{claim}"


def deployment_verdict(deployment: Mapping[str, Any] | None, *, replicas: int) -> Verdict:
    """Ready follows the Deployment: available and the current generation observed."""
    if deployment is None:
        return Verdict(False, Reason.DEPLOYMENT_MISSING, "the registry Deployment does not exist yet")
    meta = deployment.get("metadata", {})
    status = deployment.get("status") or {}
    observed = status.get("observedGeneration", 0)
    if observed < meta.get("generation", 0):
        return Verdict(
            False,
            Reason.DEPLOYMENT_PROGRESSING,
            "the Deployment controller has not observed the latest spec yet",
        )
    if replicas == 0:
        return Verdict(False, Reason.SCALED_TO_ZERO, "spec.replicas is 0")
    available = status.get("availableReplicas") or 0
    updated = status.get("updatedReplicas") or 0
    if available < 1:
        return Verdict(False, Reason.DEPLOYMENT_NOT_AVAILABLE, f"0 of {replicas} registry pods are available")
    if updated < replicas:
        return Verdict(
            True, Reason.ROLLING_OUT, f"{available} pods available, {updated} of {replicas} updated"
        )
    return Verdict(
        True, Reason.DEPLOYMENT_AVAILABLE, f"{available} of {replicas} registry pods are available"
    )
