"""The operator's RBAC, declared: every resource and verb it uses, and what kopf itself needs.

Owns: `RBAC_RULES` (what `kube.py`'s calls need, in the namespaces of the registries and the operator's own)
and `KOPF_RBAC_RULES`. The Helm chart writes the same rules out (charts/dockyard/templates/_rules.tpl) and
tests/integration/install checks the two agree, with no wildcard; tests/integration/operator runs the
operator under a token with exactly these rules.
Must not: import an API client (this is data; `kube.py` makes the calls).
"""

from __future__ import annotations

from typing import Final

from dockyard_operator import names

HOSTING_NAME: Final = "local-registry-hosting"
"""kube-public/local-registry-hosting (KEP-1755), the one ConfigMap the operator deletes (`hosting.NAME`)."""

# Resources and verbs the operator needs (ClusterRole rules). kopf's own needs are in KOPF_RBAC_RULES.
# Objects are written by server-side apply (`patch`; `create` too, which the API server also checks when an
# apply creates the object); `update` only where a list someone else owns is edited (ServiceAccounts).
RBAC_RULES: Final[list[dict[str, list[str]]]] = [
    {"apiGroups": [names.GROUP], "resources": [names.PLURAL], "verbs": ["get", "list", "watch", "patch"]},
    # Status is only ever merge-patched (by us and by kopf); nothing reads the subresource on its own.
    {"apiGroups": [names.GROUP], "resources": [f"{names.PLURAL}/status"], "verbs": ["patch"]},
    # Children carry blockOwnerDeletion; with OwnerReferencesPermissionEnforcement that needs this.
    {"apiGroups": [names.GROUP], "resources": [f"{names.PLURAL}/finalizers"], "verbs": ["update"]},
    {
        "apiGroups": [""],
        "resources": ["secrets", "configmaps", "services", "persistentvolumeclaims"],
        "verbs": ["get", "list", "watch", "create", "patch"],
    },
    {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": ["get", "list", "watch", "create", "patch"],
    },
    {
        "apiGroups": ["networking.k8s.io"],
        "resources": ["ingresses", "networkpolicies"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    # Optional children deleted when the spec stops wanting them (replicas back to 1, policy disabled).
    {
        "apiGroups": ["policy"],
        "resources": ["poddisruptionbudgets"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    # A registry's Pods: their IPs, to read each one's /status on its metrics port (reconcile/observe.py).
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    # Node trust (in the operator's namespace): the DaemonSet, and its agents' reports on their Pods.
    {
        "apiGroups": ["apps"],
        "resources": ["daemonsets"],
        "verbs": ["get", "list", "watch", "create", "patch"],
    },
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
    # Pull secrets live in other namespaces (no owner reference can remove them) and
    # kube-public/local-registry-hosting outlives no registry: both are deleted by the operator.
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["delete"]},
    {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [HOSTING_NAME], "verbs": ["delete"]},
    # Pull secrets: which namespaces accept them (labels, `tenancy`): listed when every namespace is watched,
    # each watched one read by name otherwise; and the ServiceAccounts that use them.
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list"]},
    {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get", "update"]},
]
# What kopf itself uses (docs/deployment-rbac.yaml): scanning CRDs and namespaces, its events, and peering
# objects (only when not run with --standalone).
KOPF_RBAC_RULES: Final[list[dict[str, list[str]]]] = [
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["list", "watch"],
    },
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
    {
        "apiGroups": ["kopf.dev"],
        "resources": ["clusterkopfpeerings", "kopfpeerings"],
        "verbs": ["get", "list", "watch", "patch"],
    },
]
