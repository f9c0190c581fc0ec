"""Staged CA rotation and node trust readiness, as pure functions of what nodes report.

A CA change must never show any client an untrusted certificate, so it goes in three steps:
1. PUBLISHING: the next CA is published to nodes beside the current one; the server keeps its certificate
   signed by the current CA (nodes trusting both accept it either way);
2. SWITCHING: once every node reports the next CA for every host of the registry, the serving certificate is
   reissued from the next CA (nodes still trust both);
3. RETIRING: once the serving certificate is signed by the next CA *and* every registry pod serves it (the
   Deployment has rolled out; until then old pods still present the old certificate), only the next CA is
   published; the caller then makes it the current CA.
Without a next CA the plan is STABLE: publish the current CA, serve from it.

Like cert-manager's policy checks, every function returns a verdict with a reason and a message that drive
both the action and the `NodeTrustReady` condition.

Must not: read anything, know Kubernetes objects, or look at the clock.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Sequence

from dockyard_operator.conditions import Reason
from dockyard_operator.nodetrust import layout


class Phase(enum.Enum):
    STABLE = "Stable"
    PUBLISHING = "PublishingNextCA"
    SWITCHING = "SwitchingServerCertificate"
    RETIRING = "RetiringPreviousCA"


@dataclasses.dataclass(frozen=True)
class Nodes:
    """What the DaemonSet and its agents say: desired/ready/updated pods and each agent's report."""

    desired: int
    ready: int
    updated: int
    reports: Sequence[layout.Report]


def trusting(nodes: Nodes, *, hosts: Iterable[str], fingerprint: str) -> int:
    """How many nodes trust `fingerprint` for every one of `hosts`."""
    wanted = list(hosts)
    return sum(1 for report in nodes.reports if all(fingerprint in report.hosts.get(h, ()) for h in wanted))


def everywhere(nodes: Nodes, *, hosts: Iterable[str], fingerprint: str) -> bool:
    """True when every desired node reports `fingerprint` for every host (vacuously with no nodes/hosts)."""
    return trusting(nodes, hosts=hosts, fingerprint=fingerprint) >= nodes.desired


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to publish to nodes and which CA signs the serving certificate."""

    phase: Phase
    publish: tuple[str, ...]
    """CA PEMs for the node trust ConfigMap, current first."""
    serve_with_next: bool
    """True when the serving certificate must be signed by the next CA."""
    promote: bool
    """True when the rotation is complete: the next CA becomes the current one."""
    message: str


def plan(
    *,
    current_pem: str,
    next_pem: str | None,
    server_issuer: str | None,
    hosts: Sequence[str],
    nodes: Nodes,
    rolled_out: bool = True,
) -> Plan:
    """The rotation step for one registry.

    `server_issuer` is the fingerprint of the CA that signed the serving certificate in its Secret (None if
    unknown); `rolled_out` says whether every registry pod already serves that Secret's certificate.
    """
    current = layout.fingerprint(current_pem)
    if next_pem is None or layout.fingerprint(next_pem) == current:
        return Plan(Phase.STABLE, (current_pem,), False, False, f"nodes trust CA {current}")
    upcoming = layout.fingerprint(next_pem)
    count = trusting(nodes, hosts=hosts, fingerprint=upcoming)
    if count < nodes.desired:
        return Plan(
            Phase.PUBLISHING,
            (current_pem, next_pem),
            False,
            False,
            f"publishing the next CA {upcoming}: {count}/{nodes.desired} nodes trust it",
        )
    if server_issuer != upcoming or not rolled_out:
        return Plan(
            Phase.SWITCHING,
            (current_pem, next_pem),
            True,
            False,
            f"every node trusts the next CA {upcoming}: switching the serving certificate",
        )
    return Plan(
        Phase.RETIRING,
        (next_pem,),
        True,
        True,
        f"the serving certificate uses the next CA {upcoming}: retiring CA {current}",
    )


@dataclasses.dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: Reason
    message: str


def readiness(*, nodes: Nodes, hosts: Sequence[str], fingerprints: Sequence[str]) -> Verdict:
    """`NodeTrustReady`: every node trusts every CA being published for every host of the registry."""
    if not hosts:
        return Verdict(
            False, Reason.NO_HOSTS, "no host to publish: set nodeTrust.hostnames or expose the registry"
        )
    if nodes.desired == 0:
        return Verdict(False, Reason.NO_NODES, "the node trust DaemonSet runs on no node yet")
    short = [
        (fp, trusting(nodes, hosts=hosts, fingerprint=fp))
        for fp in fingerprints
        if trusting(nodes, hosts=hosts, fingerprint=fp) < nodes.desired
    ]
    if short:
        fp, count = short[0]
        return Verdict(
            False, Reason.INSTALLING, f"{count}/{nodes.desired} nodes trust CA {fp} for {len(hosts)} hosts"
        )
    return Verdict(True, Reason.INSTALLED, f"all {nodes.desired} nodes trust the CA for {len(hosts)} hosts")
