"""What one node trust publication contains, as a pure function of the registries' sources and the nodes.

Owns: `compose`, which keeps only the hosts each registry may claim (`claims`), settles hosts two registries
claim (`aggregate`: the owner recorded on the published ConfigMap keeps it, else the oldest registry), asks
`rotation.plan` which CAs each registry publishes for the hosts it holds, wires mirrors to image hosts, and
returns the ConfigMap's data, who owns each host, every registry's `RegistryView` and the node credentials
of the wired mirrors that take no anonymous pulls (the Secret's data).
Must not: perform I/O (that is `controller`: it reads the sources, the nodes and the published owners, and
writes what this returns).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from dockyard_operator.conditions import Reason
from dockyard_operator.nodetrust import aggregate, claims, layout, rotation, sources

Key = sources.Key


@dataclasses.dataclass(frozen=True)
class Composed:
    """One publication: the ConfigMap's data, each host's owner, and what each registry reads."""

    data: Mapping[str, str]
    owners: Mapping[str, Key]
    views: Mapping[Key, sources.RegistryView]
    tokens: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)
    """The node credentials Secret's data: encoded image host → token, for wired hosts only."""


def compose(
    registries: Mapping[Key, sources.Source | None],
    *,
    nodes: rotation.Nodes,
    previous: Mapping[str, Key],
    allowed: Sequence[str],
) -> Composed:
    """Aggregate every registry that uses node trust (a None source: it does not) into one publication."""
    views: dict[Key, sources.RegistryView] = {}
    wanted: dict[Key, tuple[sources.Source, tuple[str, ...]]] = {}
    refusals: dict[Key, tuple[aggregate.Problem, ...]] = {}
    for item, src in sorted(registries.items()):
        if src is None:
            continue
        if src.current_pem is None:
            no_ca = aggregate.Problem(Reason.NO_CA, "no CA to publish yet")
            views[item] = sources.RegistryView((), (), None, (no_ca,))
            continue
        accepted, refused = claims.screen(src.hosts, served=src.served, allowed=allowed)
        wanted[item] = (src, accepted)
        refusals[item] = tuple(aggregate.Problem(Reason.HOST_REFUSED, r.message) for r in refused)

    def contributions(pems: Mapping[Key, Sequence[str]]) -> list[aggregate.RegistryTrust]:
        return [
            aggregate.RegistryTrust(
                namespace=item[0],
                name=item[1],
                hosts=accepted,
                ca_pems=pems[item],
                targets=src.targets,
                created=src.created,
            )
            for item, (src, accepted) in wanted.items()
        ]

    # Who owns which host does not depend on the CAs, and a rotation must wait for the hosts a
    # registry holds only: the nodes never report a refused host, or one another registry holds.
    current = {item: [src.current_pem or ""] for item, (src, _) in wanted.items()}
    held = aggregate.aggregate(contributions(current), previous=previous).owners
    plans: dict[Key, rotation.Plan] = {}
    for item, (src, accepted) in wanted.items():
        hosts = tuple(h for h in accepted if held.get(h) == item)
        plans[item] = rotation.plan(
            current_pem=src.current_pem or "",
            next_pem=src.next_pem,
            server_issuer=src.server_issuer,
            hosts=hosts,
            nodes=nodes,
            rolled_out=src.rolled_out,
        )
        fingerprints = tuple(layout.fingerprint(p) for p in plans[item].publish)
        views[item] = sources.RegistryView(hosts, fingerprints, plans[item], refusals[item])
    merged = aggregate.aggregate(
        contributions({item: plan.publish for item, plan in plans.items()}), previous=previous
    )

    def mirror_refusal(host: str, namespace: str) -> str | None:
        """Why an image host may not be wired to a mirror (None: it may): the installer must allow it."""
        _, refused = claims.screen([host], served=claims.Served(namespace=namespace), allowed=allowed)
        return refused[0].message if refused else None

    wired, mirror_problems = aggregate.wire_mirrors(
        [
            aggregate.MirrorClaim(namespace=item[0], name=item[1], mirrors=src.mirrors, created=src.created)
            for item, (src, _) in wanted.items()
            if src.mirrors
        ],
        owners=merged.owners,
        allowed=mirror_refusal,
    )
    data = {**merged.data, **layout.encode({}, mirrors=wired)}
    for item, problems in [*merged.problems.items(), *mirror_problems.items()]:
        old = views[item]
        views[item] = dataclasses.replace(old, problems=(*old.problems, *problems))
    tokens: dict[str, str] = {}
    for host, wiring in wired.items():  # which registry each wired image host belongs to
        holder = merged.owners.get(wiring.registry)
        if holder is not None and holder in views:
            old = views[holder]
            views[holder] = dataclasses.replace(old, mirror_hosts=(*old.mirror_hosts, host))
            token = dict(wanted[holder][0].node_tokens).get(host) if holder in wanted else None
            if token:
                tokens[layout.host_key(host)] = token
    return Composed(data=data, owners=merged.owners, views=views, tokens=tokens)
