"""The `<registry>-htpasswd` Secret: `htpasswd` (bcrypt lines), `access.yaml` and, when the spec accepts
ServiceAccount or OIDC tokens, `identities.yaml` (the issuers; no secret in it), as the registry reads them.

The Kubernetes issuer is read in-cluster: discovery and JWKS through `KUBERNETES_API` with the Pod's own
projected token and the cluster's root CA (`KUBE_DIR`, mounted by the Deployment); its issuer URL is
learned from that discovery document, so no cluster-specific URL is configured anywhere.

Must not: hash passwords (reconcile gathers hashes through `crypto.reuse_or_hash`) or read any Secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from dockyard_operator import model
from dockyard_operator.builders import inputs as inputs_mod

KUBERNETES_API = "https://kubernetes.default.svc"
KUBE_DIR = "/var/run/secrets/dockyard.dev/kube"
"""Where the registry container finds its projected ServiceAccount token and the cluster's CA."""
IDENTITIES_FILE = "identities.yaml"
TOKEN_KEY_FILE = "token.key"  # noqa: S105  # a file name, not a secret


def default_audience(*, namespace: str, registry: str) -> str:
    return f"dockyard.dev/{namespace}/{registry}"


def access_yaml(auth: model.Auth, *, namespaces: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """The registry's access.yaml for the spec's users (see the registry/operator contract).

    `namespaces` (name → labels) resolves ServiceAccount rules with a namespaceSelector into one rule per
    matching namespace; without it such rules match nothing.
    """
    document: dict[str, Any] = {
        "anonymousPull": auth.anonymous_pull,
        "users": {u.name: {"access": u.access, "repositories": list(u.repositories)} for u in auth.users},
    }
    # Only when used: an unchanged file keeps the pods of registries without tokens from rolling.
    if auth.service_accounts is not None and auth.service_accounts.rules:
        document["serviceAccounts"] = [
            {
                "namespace": namespace,
                "name": rule.name,
                "access": rule.access,
                "repositories": list(rule.repositories),
            }
            for rule in auth.service_accounts.rules
            for namespace in _rule_namespaces(rule, namespaces or {})
        ]
    oidc = [
        {
            "issuer": issuer.name,
            "users": list(rule.users),
            "groups": list(rule.groups),
            "access": rule.access,
            "repositories": list(rule.repositories),
        }
        for issuer in auth.oidc
        for rule in issuer.rules
    ]
    if oidc:
        document["oidc"] = oidc
    return yaml.safe_dump(document, sort_keys=True, default_flow_style=False)


def needs_namespaces(auth: model.Auth) -> bool:
    """Whether access.yaml depends on namespaces' labels (a ServiceAccount rule with a namespaceSelector)."""
    rules = auth.service_accounts.rules if auth.service_accounts is not None else []
    return any(rule.namespace_selector is not None for rule in rules)


def _rule_namespaces(
    rule: model.ServiceAccountRule, namespaces: Mapping[str, Mapping[str, str]]
) -> list[str]:
    if rule.namespace is not None:
        return [rule.namespace]
    wanted = rule.namespace_selector or {}
    return sorted(n for n, labels in namespaces.items() if all(labels.get(k) == v for k, v in wanted.items()))


def identities_yaml(*, auth: model.Auth, namespace: str, registry: str) -> str:
    """The registry's identities file (`serve --identities`); "" when the spec accepts no tokens."""
    issuers: list[dict[str, Any]] = []
    accounts = auth.service_accounts
    if accounts is not None:
        issuers.append(
            {
                "name": "kubernetes",
                "kind": "kubernetes",
                "audience": accounts.audience or default_audience(namespace=namespace, registry=registry),
                "apiServer": KUBERNETES_API,
                "caFile": f"{KUBE_DIR}/ca.crt",
                "tokenFile": f"{KUBE_DIR}/token",
                "tokenReview": {
                    "enabled": accounts.token_review,
                    "cacheSeconds": accounts.token_review_cache_seconds,
                },
            }
        )
    for issuer in auth.oidc:
        claims: dict[str, str] = {"user": issuer.claims.user}
        if issuer.claims.groups is not None:
            claims["groups"] = issuer.claims.groups
        issuers.append(
            {
                "name": issuer.name,
                "kind": "oidc",
                "url": issuer.issuer,
                "audience": issuer.audience,
                "claims": claims,
            }
        )
    if not issuers:
        return ""
    return yaml.safe_dump({"issuers": issuers}, sort_keys=False, default_flow_style=False)


def identities(inputs: inputs_mod.Inputs) -> str:
    return identities_yaml(auth=inputs.spec.auth, namespace=inputs.namespace, registry=inputs.registry)


def build(inputs: inputs_mod.Inputs) -> dict[str, Any]:
    data = {
        "htpasswd": inputs_mod.b64(inputs.htpasswd),
        "access.yaml": inputs_mod.b64(inputs.access_yaml),
    }
    identities_text = identities(inputs)
    if identities_text:
        data[IDENTITIES_FILE] = inputs_mod.b64(identities_text)
    if inputs.token_key:
        data[TOKEN_KEY_FILE] = inputs_mod.b64(inputs.token_key)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": inputs_mod.metadata(inputs, name=inputs.names.htpasswd_secret, component="auth"),
        "type": "Opaque",
        "data": data,
    }
