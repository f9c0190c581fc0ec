"""Step: hand this registry's CA and hosts to node trust, and read back what the nodes report.

Registries without node trust cost nothing here, except one pass after it was switched off, which withdraws
their CA from the nodes. During a staged rotation the next CA is handed in beside the current one; the plan
node trust computes drives the next pass's CA rotation step. An operator run without a namespace has no node
trust, and says so on registries that keep the default `nodeTrust.enabled`.
Must not: publish anything itself (that is `nodetrust.controller`), or decide the NodeTrustReady wording
(that is `nodetrust.rotation`).
"""

from __future__ import annotations

from dockyard_operator import kube, model, policies, settings
from dockyard_operator.conditions import Reason
from dockyard_operator.nodetrust import controller, rotation
from dockyard_operator.reconcile import context


class NodeTrustHandOff:
    def __init__(self, *, node_trust: controller.NodeTrust | None, config: settings.Settings) -> None:
        self._node_trust = node_trust
        self._cluster_domain = config.cluster_domain

    async def hand_off(
        self, run: context.Pass, *, tls: context.Tls, applied: context.Applied
    ) -> context.Trust:
        spec = run.spec
        if self._node_trust is None:
            if not spec.node_trust.enabled:
                return context.Trust()
            return context.Trust(
                verdict=policies.Verdict(
                    False,
                    Reason.NOT_CONFIGURED,
                    "node trust is not configured for this operator (no operator namespace)",
                )
            )
        enabled = spec.node_trust.enabled
        if not enabled and not (run.body.get("status") or {}).get("nodeTrust"):
            return context.Trust()
        update = None
        if enabled:
            update = controller.source(
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
            )
        try:
            observed = await self._node_trust.sync(key=(run.namespace, run.name), update=update)
        except kube.KubeError as exc:
            if enabled:
                return context.Trust(verdict=policies.Verdict(False, Reason.PUBLISH_FAILED, str(exc)))
            return context.Trust()
        view = observed.view(run.namespace, run.name)
        verdict = observed.verdict(run.namespace, run.name)
        if not enabled or view is None or verdict is None:
            return context.Trust()
        return context.Trust(
            verdict=policies.Verdict(verdict.ok, verdict.reason, verdict.message),
            status=model.NodeTrustStatus(
                hosts=list(view.hosts),
                desired=observed.nodes.desired,
                ready=observed.nodes.ready,
                trusting=observed.trusted(run.namespace, run.name),
                ca_fingerprint_on_nodes=[
                    fp
                    for fp in view.fingerprints
                    if observed.nodes.desired
                    and rotation.everywhere(observed.nodes, hosts=view.hosts, fingerprint=fp)
                ],
            ),
        )

    async def forget(self, *, namespace: str, name: str) -> None:
        """The registry is being deleted: the nodes stop trusting its CA."""
        if self._node_trust is not None:
            await self._node_trust.forget(namespace, name)
