"""Step: hand this registry's CA and hosts to node trust, and read back what the nodes report.

The pass hands in its `Source` (no I/O, no lock: node trust's one publisher picks it up) and reads the latest
publication (`view`), which the publisher follows with a status refresh of every registry it changed (the
reconciler's `refresh`, which reads `view` only). Registries without node
trust cost nothing here, except handing in "off" once after it was switched off, which withdraws their CA
from the nodes. During a staged rotation the next CA is handed in beside the current one; the plan node trust
publishes drives the CA rotation step. An operator run without a namespace has no node
trust, and says so on registries that keep the default `nodeTrust.enabled`.
Must not: publish anything itself (that is `nodetrust.controller`), or decide the NodeTrustReady wording
(that is `nodetrust.rotation`).
"""

from __future__ import annotations

from dockyard_operator import mirror_status, model, policies, settings
from dockyard_operator.conditions import Reason
from dockyard_operator.nodetrust import controller, sources
from dockyard_operator.reconcile import context


class NodeTrustHandOff:
    def __init__(self, *, node_trust: controller.NodeTrust | None, config: settings.Settings) -> None:
        self._node_trust = node_trust
        self._cluster_domain = config.cluster_domain

    async def hand_off(
        self, run: context.Pass, *, tls: context.Tls, applied: context.Applied, token_key: str = ""
    ) -> context.Trust:
        spec = run.spec
        if self._node_trust is None:
            return self.view(spec, namespace=run.namespace, name=run.name)
        enabled = spec.node_trust.enabled
        if not enabled and not (run.body.get("status") or {}).get("nodeTrust"):
            return context.Trust()
        update = None
        if enabled:
            update = sources.source(
                spec=spec,
                name=run.name,
                namespace=run.namespace,
                service=applied.get("Service"),
                current_pem=tls.ca_pem.decode() if tls.ca_pem else None,
                next_pem=tls.next_ca_pem.decode() if tls.next_ca_pem else None,
                server_cert_pem=tls.server_cert_pem.decode() if tls.server_cert_pem else None,
                cluster_domain=self._cluster_domain,
                deployment=applied.get("Deployment"),
                created=run.created,
                token_key=token_key,
                now=run.now.timestamp(),
            )
        self._node_trust.submit((run.namespace, run.name), update)
        return self.view(run.spec, namespace=run.namespace, name=run.name)

    def view(self, spec: model.PrivateRegistrySpec, *, namespace: str, name: str) -> context.Trust:
        """What the latest publication says about a registry (no I/O): what its pass reads after handing in,
        and all a status refresh reads when only node trust's view changed."""
        if self._node_trust is None:
            return _not_configured() if spec.node_trust.enabled else context.Trust()
        if not spec.node_trust.enabled:
            return context.Trust()
        key = (namespace, name)
        observed = self._node_trust.latest()
        view = observed.view(*key) if observed is not None else None
        verdict = observed.verdict(*key) if observed is not None else None
        if observed is None or view is None or verdict is None:
            # Handed in, not yet published: the publisher's refresh of this registry follows.
            return context.Trust(
                verdict=policies.Verdict(
                    False, Reason.PUBLISHING, "waiting for node trust to publish this registry's CA"
                )
            )
        return context.Trust(
            verdict=policies.Verdict(verdict.ok, verdict.reason, verdict.message),
            status=model.NodeTrustStatus(
                hosts=list(view.hosts),
                desired=observed.nodes.desired,
                ready=observed.nodes.ready,
                trusting=observed.trusted(*key),
                ca_fingerprint_on_nodes=list(observed.on_nodes(view)),
            ),
            mirror_wiring={
                host: mirror_status.Wiring(nodes=n.wired, desired=observed.nodes.desired, not_wired=n.notes)
                for host, n in observed.mirror_nodes(*key).items()
            },
        )

    async def forget(self, *, namespace: str, name: str) -> None:
        """The registry is being deleted: the nodes stop trusting its CA."""
        if self._node_trust is not None:
            await self._node_trust.forget(namespace, name)


def _not_configured() -> context.Trust:
    return context.Trust(
        verdict=policies.Verdict(
            False,
            Reason.NOT_CONFIGURED,
            "node trust is not configured for this operator (no operator namespace)",
        )
    )
