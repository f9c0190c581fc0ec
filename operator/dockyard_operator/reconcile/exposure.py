"""Step: what lets others reach the registry from outside its namespace (pull secrets, KEP-1755 hosting).

Owns: one dockerconfigjson copy per chosen namespace in sync with the chosen user's password (and the
ServiceAccount entry that makes it the default there), removing copies no longer wanted, found again by our
label since owner references cannot cross namespaces; and `kube-public/local-registry-hosting`, one per
cluster, which the first registry asking keeps and another asking is told about (Degraded), never overwritten.
Both are withdrawn when the spec stops asking and by `forget` on deletion. A registry that never used either
costs no API call here (and no cluster-wide list a namespaced install may not hold). Known gap: a feature
switched off while the operator was down is withdrawn only when the registry is deleted. What a registry
deleted while no operator watched left behind goes in the orphan sweep (`orphans`), through `remove_copy`.
Must not: build the objects (that is `pullsecrets` and `hosting`), write except through `writer.Writer`, or
let a password reach anything but the Secret's data.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from dockyard_common import regtoken
from dockyard_operator import hosting, kube, names, pullsecrets, settings, tenancy, writer
from dockyard_operator.conditions import Reason
from dockyard_operator.nodetrust import claims, sources
from dockyard_operator.reconcile import context

_HOSTING = {"api_version": "v1", "kind": "ConfigMap", "namespace": hosting.NAMESPACE, "name": hosting.NAME}


class Exposure:
    """One per operator process: remembers which registries published something on an earlier pass."""

    def __init__(self, *, reader: context.Reader, writes: writer.Writer, config: settings.Settings) -> None:
        self._reader = reader
        self._writer = writes
        self._settings = config
        self._published_hosting: dict[str, bool] = {}
        self._had_pull_secrets: dict[tuple[str, str], bool] = {}

    # ------------------------------------------------------------------------------ KEP-1755 hosting

    async def local_registry_hosting(
        self, run: context.Pass, *, applied: context.Applied
    ) -> context.Findings:
        """Publish (or withdraw) kube-public/local-registry-hosting for this registry."""
        spec = run.spec
        me = hosting.owner_of(run.namespace, run.name)
        endpoint = context.node_endpoint(spec, applied.get("Service"))
        findings = context.Findings()
        try:
            if not spec.publish_local_registry_hosting or endpoint is None:
                if spec.publish_local_registry_hosting:
                    findings += context.problem(
                        Reason.HOSTING_NEEDS_NODE_PORT,
                        "publishLocalRegistryHosting needs expose.type NodePort",
                    )
                live = await self._reader.get(**_HOSTING) if self._published_hosting.get(me, False) else None
                if live is not None and hosting.owned_by(live, me):
                    await self._writer.delete(**_HOSTING)
                    findings += context.event(Reason.DELETED, "withdrew kube-public/local-registry-hosting")
                self._published_hosting[me] = False
                return findings
            desired = hosting.configmap(
                owner=me,
                node_endpoint=endpoint,
                cluster_endpoint=context.endpoint(spec, run.names, run.namespace),
            )
            try:
                written = await self._writer.apply(desired, ours=lambda live: _hosting_holder(live, me))
            except writer.NotOurs as exc:
                return findings + context.problem(Reason.HOSTING_TAKEN, str(exc))
            if written.created:
                findings += context.event(Reason.CREATED, "published kube-public/local-registry-hosting")
            self._published_hosting[me] = True
        except kube.KubeError as exc:
            findings += context.problem(
                Reason.HOSTING_FAILED, f"kube-public/local-registry-hosting: {exc}", retry_after=10.0
            )
        return findings

    # ---------------------------------------------------------------------------------- pull secrets

    async def pull_secrets(
        self, run: context.Pass, *, tls: context.Tls, applied: context.Applied, token_key: str = ""
    ) -> context.Findings:
        """Keep one dockerconfigjson Secret per chosen namespace; remove copies no longer wanted.

        With `tokenLifetime` the copies carry a registry token (pull on the user's repositories, minted
        for the current half-lifetime window: the same token all window long, a fresh one after it), never
        the user's password."""
        spec, chosen = run.spec, run.spec.pull_secrets
        me = (run.namespace, run.name)
        if chosen is None and not self._had_pull_secrets.get(me, False):
            return context.Findings()
        service = applied.get("Service")
        wanted: dict[str, dict[str, Any]] = {}
        findings = context.Findings()
        try:
            if chosen is not None:
                user = next((u for u in spec.auth.users if u.name == chosen.user), None)
                if user is None:
                    return context.problem(
                        Reason.PULL_SECRET_USER_UNKNOWN,
                        f"pullSecrets.user {chosen.user!r} is not in auth.users",
                    )
                lifetime = chosen.token_lifetime_seconds
                if lifetime is not None and token_key:
                    password = regtoken.mint(
                        key=token_key.encode(),
                        service=run.name,
                        subject=user.name,
                        grants=[(glob, ("pull",)) for glob in user.repositories],
                        now=regtoken.pull_window(now=run.now.timestamp(), lifetime_seconds=lifetime),
                        ttl_seconds=lifetime,
                    ).encode()
                else:
                    ref = user.password_secret_ref
                    data = await context.secret(self._reader, namespace=run.namespace, name=ref.name)
                    found = (data or {}).get(ref.key)
                    if found is None:
                        return (
                            context.Findings()
                        )  # the credentials step already reports the missing Secret or key
                    password = found
                hosts = [
                    host
                    for host in (
                        context.node_endpoint(spec, service),
                        context.endpoint(spec, run.names, run.namespace),
                        *self._claimable(run, service=service, tls=tls),
                    )
                    if host
                ]
                config = pullsecrets.dockerconfigjson(hosts=hosts, username=user.name, password=password)
                secret_name = chosen.secret_name or names.dns_label(run.name, "-pull")
                targets, opted_in = tenancy.pull_secret_targets(
                    await self._reader.list_namespaces(),
                    source_namespace=run.namespace,
                    listed=chosen.namespaces,
                    match_labels=chosen.namespace_selector,
                )
                if not opted_in.ok:
                    findings += context.problem(opted_in.reason, opted_in.message)
                for target in sorted(set(targets)):
                    wanted[target] = pullsecrets.secret(
                        name=secret_name,
                        namespace=target,
                        registry_namespace=run.namespace,
                        registry=run.name,
                        config=config,
                    )
                    if chosen.service_account:
                        # Remembered on the copy, so removing it later also removes the entry it added.
                        wanted[target]["metadata"]["annotations"][pullsecrets.ACCOUNT_ANNOTATION] = (
                            chosen.service_account
                        )
            label = pullsecrets.owner_label(run.namespace, run.name)
            for target, desired in wanted.items():
                try:
                    await self._writer.apply(desired, ours=lambda live: _copy_holder(live, label))
                    if chosen is not None and chosen.service_account:
                        await self._writer.update(
                            ref=_account(target, chosen.service_account),
                            change=functools.partial(_with_pull_secret, secret=desired["metadata"]["name"]),
                        )
                except (kube.NotFound, kube.NamespaceTerminating):
                    continue  # no such namespace (yet): a later pass (the resync loop) brings the Secret
                except writer.NotOurs as exc:
                    raise kube.Conflict(str(exc), status=409) from None
            for copy in await self._copies(namespace=run.namespace, name=run.name):
                where = copy["metadata"]
                keep = wanted.get(where["namespace"])
                if keep is None or keep["metadata"]["name"] != where["name"]:
                    await self.remove_copy(copy)
            self._had_pull_secrets[me] = chosen is not None
        except kube.KubeError as exc:
            return findings + context.problem(
                Reason.PULL_SECRETS_FAILED, f"pull secrets: {exc}", retry_after=10.0
            )
        return findings

    def _claimable(
        self, run: context.Pass, *, service: Mapping[str, Any] | None, tls: context.Tls
    ) -> list[str]:
        """`nodeTrust.hostnames` node trust would publish (`claims`): the user's password must not go to
        docker.io or another team's host either (NodeTrustReady names the others)."""
        served = sources.served(
            spec=run.spec,
            name=run.name,
            namespace=run.namespace,
            service=service,
            server_cert_pem=tls.server_cert_pem.decode() if tls.server_cert_pem else None,
            cluster_domain=self._settings.cluster_domain,
        )
        allowed = self._settings.node_trust_allowed_hosts
        return [
            h for h in run.spec.node_trust.hostnames if claims.verdict(h, served=served, allowed=allowed).ok
        ]

    async def _copies(self, *, namespace: str, name: str) -> list[dict[str, Any]]:
        return await self._reader.list(
            api_version="v1",
            kind="Secret",
            labels={pullsecrets.FOR_LABEL: pullsecrets.owner_label(namespace, name)},
        )

    async def remove_copy(self, copy: Mapping[str, Any]) -> None:
        """Delete one pull secret copy and the ServiceAccount entry it was added to (if any)."""
        where = copy["metadata"]
        account = (where.get("annotations") or {}).get(pullsecrets.ACCOUNT_ANNOTATION)
        if account:
            await self._writer.update(
                ref=_account(where["namespace"], account),
                change=lambda live: pullsecrets.without_pull_secret(live, where["name"]),
            )
        await self._writer.delete(
            api_version="v1", kind="Secret", namespace=where["namespace"], name=where["name"]
        )

    # ------------------------------------------------------------------------------------- deletion

    async def forget(self, *, namespace: str, name: str, spec: Mapping[str, Any]) -> None:
        """The registry is being deleted: remove what it keeps outside its namespace."""
        if spec.get("pullSecrets"):
            for copy in await self._copies(namespace=namespace, name=name):
                await self.remove_copy(copy)
        if spec.get("publishLocalRegistryHosting"):
            live = await self._reader.get(**_HOSTING)
            if hosting.owned_by(live, hosting.owner_of(namespace, name)):
                await self._writer.delete(**_HOSTING)


def _with_pull_secret(live: dict[str, Any], *, secret: str) -> dict[str, Any] | None:
    return pullsecrets.with_pull_secret(live, secret)


def _account(namespace: str, name: str) -> dict[str, str]:
    return {"api_version": "v1", "kind": "ServiceAccount", "namespace": namespace, "name": name}


def _hosting_holder(live: Mapping[str, Any], me: str) -> str | None:
    if hosting.owned_by(live, me):
        return None
    holder = ((live.get("metadata") or {}).get("annotations") or {}).get(hosting.OWNER_ANNOTATION)
    return f"kube-public/local-registry-hosting is published for {holder or 'someone else'}; not overwritten"


def _copy_holder(live: Mapping[str, Any], label: str) -> str | None:
    labels = (live.get("metadata") or {}).get("labels") or {}
    if labels.get(pullsecrets.FOR_LABEL) == label:
        return None
    return f"{kube.describe(live)} exists and is not ours; left alone"
