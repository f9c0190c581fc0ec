"""The kubelet credential provider configuration the node's kubelet runs with (KEP-4412), proven by
test_pod_identity_pull.py: `dockyard-credential-provider` for one registry host, given the Pod's own
ServiceAccount token for that registry's audience.

The provider is installed as a wrapper that execs the project's module with this test session's Python
(`dockyard_common.credential_provider`, the same code as the `dockyard-credential-provider` console
script); docs/security.md shows the same configuration for any node.
"""

from __future__ import annotations

import shlex
import sys
from typing import Any

from tests.support import cluster

REGISTRY_NAMESPACE, REGISTRY = "ids", "sa-registry"
NODE_PORT = 30501  # not the seed flow's 30500: its Pods keep pulling with pull secrets only
HOST = f"localhost:{NODE_PORT}"
AUDIENCE = f"dockyard.dev/{REGISTRY_NAMESPACE}/{REGISTRY}"  # spec.auth.serviceAccounts' default audience
PROVIDER = "dockyard-credential-provider"


def provider_config() -> dict[str, Any]:
    """The CredentialProviderConfig: tokens for AUDIENCE, only for Pods with a ServiceAccount.

    `cacheType: Token` is the only value the kubelet accepts for a provider that answers the token itself
    as the password (with `ServiceAccount` it refuses such an answer); it keys the kubelet's cache by the
    token, so a credential is never shared between ServiceAccounts.
    """
    return {
        "apiVersion": "kubelet.config.k8s.io/v1",
        "kind": "CredentialProviderConfig",
        "providers": [
            {
                "name": PROVIDER,
                "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
                "matchImages": [HOST],
                "defaultCacheDuration": "0s",
                "tokenAttributes": {
                    "serviceAccountTokenAudience": AUDIENCE,
                    "requireServiceAccount": True,
                    "cacheType": "Token",
                },
            }
        ],
    }


def credential_providers() -> cluster.CredentialProviders:
    wrapper = f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m dockyard_common.credential_provider\n"
    return cluster.CredentialProviders(config=provider_config(), executables={PROVIDER: wrapper})


def node_audience_rbac() -> list[dict[str, Any]]:
    """Lets nodes request tokens for AUDIENCE (ServiceAccountNodeAudienceRestriction, on by default).

    The NodeRestriction admission plugin lets a kubelet request a Pod's token only for an audience that Pod
    already mounts, or one the node is authorized for: verb `request-serviceaccounts-token-audience`,
    the audience as the resource (resourceNames may narrow it to ServiceAccount names).
    """
    name = "dockyard-node-token-audience"
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": [AUDIENCE],
                    "verbs": ["request-serviceaccounts-token-audience"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}],
        },
    ]
