"""Pull-through mirrors in a registry's status: `status.mirrors` and `MirrorsReady`.

From what the registry pods report per mirror (`observations`: reachable, last error with its reason and
time, last answered request) and what node trust reports about the image hosts wired to the mirrors
(`Wiring`), `mirror_statuses` builds `status.mirrors` in spec order and `mirrors_verdict` decides
`MirrorsReady`: an upstream that is unreachable or refuses the credentials is named with what to fix, and a
wired mirror nodes cannot pull through is named with what to set. A mirror whose rotated CA bundle cannot be
loaded (the registry's `caError`) is named with the Secret to fix; it does not make MirrorsReady False, since
the registry still trusts the previous bundle and the mirror works (reason MirrorCABundleInvalid, or the
failure's reason when an upstream fails too).

Owns: MirrorsReady's reasons and messages.
Must not: fetch anything, read the clock, or know about Kubernetes objects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from dockyard_operator import model, observations, policies
from dockyard_operator.conditions import Reason


@dataclasses.dataclass(frozen=True)
class Wiring:
    """What the nodes report about one wired image host: nodes whose containerd pulls it through the
    mirror, of how many, and runtimes found on nodes that are not wired (one line each)."""

    nodes: int
    desired: int
    not_wired: tuple[str, ...] = ()


def mirror_statuses(
    mirrors: Sequence[model.Mirror],
    *,
    observed: Sequence[model.MirrorStatus] | None,
    previous: Sequence[model.MirrorStatus] | None,
    wiring: Mapping[str, Wiring] | None,
) -> list[model.MirrorStatus]:
    """status.mirrors in spec order: what the registry reports per prefix (without a reading: what status
    showed), and for mirrors with wireNodes, their image host and the nodes wired to it."""
    source = {m.prefix: m for m in (observed if observed is not None else previous or ())}
    result: list[model.MirrorStatus] = []
    for mirror in mirrors:
        status = source.get(mirror.prefix) or model.MirrorStatus(prefix=mirror.prefix)
        update: dict[str, Any] = {
            "upstream": mirror.upstream,
            "node_host": None,
            "nodes_wired": None,
            "runtimes_not_wired": None,
        }
        if mirror.wire_nodes:
            wired = (wiring or {}).get(mirror.effective_node_host)
            update["node_host"] = mirror.effective_node_host
            update["nodes_wired"] = wired.nodes if wired is not None else 0
            update["runtimes_not_wired"] = list(wired.not_wired) or None if wired is not None else None
        result.append(status.model_copy(update=update))
    return result


def _failure(status: model.MirrorStatus, mirror: model.Mirror) -> tuple[Reason, str] | None:
    if not observations.failing(status):
        return None
    error = status.last_error or "no answer"
    where = f"mirror {mirror.prefix!r}: upstream {mirror.upstream}"
    if status.last_error_reason == "auth":
        ref = mirror.credentials_secret_ref
        fix = (
            f"check the username and password in Secret {ref.name!r}"
            if ref is not None
            else "it wants credentials: set credentialsSecretRef"
        )
        return (
            Reason.MIRROR_UPSTREAM_AUTH_FAILED,
            f"{where} refuses the mirror's credentials ({fix}): {error}",
        )
    if status.last_error_reason == "unavailable" or status.last_error_reason is None:
        return (
            Reason.MIRROR_UPSTREAM_UNREACHABLE,
            f"{where} is unreachable (cached content is served): {error}",
        )
    return Reason.MIRROR_UPSTREAM_FAILED, f"{where} failed: {error}"


def _ca_problem(status: model.MirrorStatus | None, mirror: model.Mirror) -> str | None:
    if status is None or status.ca_error is None:
        return None
    ref = mirror.ca_secret_ref
    bundle = f"the CA bundle in Secret {ref.name!r} (key {ref.key!r})" if ref is not None else "its CA bundle"
    return (
        f"mirror {mirror.prefix!r}: {bundle} cannot be loaded, the registry still trusts the previous one "
        f"(fix the Secret): {status.ca_error}"
    )


def mirrors_verdict(
    mirrors: Sequence[model.Mirror],
    statuses: Sequence[model.MirrorStatus],
    *,
    observed: bool,
    wiring_desired: int | None = None,
    anonymous_pull: bool = False,
) -> policies.Verdict:
    """MirrorsReady: False naming every mirror whose upstream's last word was a failure; True otherwise.
    A CA bundle the registry cannot load is named in the message (reason MirrorCABundleInvalid when no
    upstream fails) but keeps MirrorsReady True: the previous bundle is still in use. The message counts
    the nodes wired to each mirror with wireNodes (`wiring_desired`: of how many) and names wired mirrors
    closed to anonymous pulls (neither the mirror's anonymousPull nor the registry's `anonymous_pull`):
    containerd pulls through those with the node credential the agent writes into its hosts.toml, but
    CRI-O and podman send no credentials (registries.conf has no header), so they use the upstream."""
    by_prefix = {s.prefix: s for s in statuses}
    failures = [
        found
        for mirror in mirrors
        if (
            found := _failure(
                by_prefix.get(mirror.prefix) or model.MirrorStatus(prefix=mirror.prefix), mirror
            )
        )
    ]
    wired = [
        f"{s.node_host} wired on {s.nodes_wired or 0}"
        + (f"/{wiring_desired}" if wiring_desired is not None else "")
        + " nodes"
        + (f" ({'; '.join(s.runtimes_not_wired)})" if s.runtimes_not_wired else "")
        for s in statuses
        if s.node_host is not None
    ]
    closed = [
        f"mirror {m.prefix!r}: anonymousPull is off, so containerd nodes pull {m.effective_node_host} "
        "through it with a node credential, CRI-O and podman (no credentials) from the upstream itself"
        for m in mirrors
        if m.needs_node_credential and not anonymous_pull
    ]
    ca_problems = [note for m in mirrors if (note := _ca_problem(by_prefix.get(m.prefix), m))]
    tail = "".join(f"; {part}" for part in (", ".join(wired), *closed) if part)
    if failures:
        return policies.Verdict(
            False, failures[0][0], "; ".join([*(m for _, m in failures), *ca_problems]) + tail
        )
    if not observed:
        return policies.Verdict(
            False, Reason.MIRRORS_UNOBSERVED, "no registry pod has reported its mirrors yet" + tail
        )
    if ca_problems:
        return policies.Verdict(True, Reason.MIRROR_CA_BUNDLE_INVALID, "; ".join(ca_problems) + tail)
    return policies.Verdict(True, Reason.MIRRORS_OK, f"{len(mirrors)} mirror(s), no upstream failing" + tail)
