{{/*
The operator's own rules: operator/dockyard_operator/rbac.py RBAC_RULES, written out so the chart reads
on its own (tests/integration/install checks the two agree), in three parts:
  * dockyard.operatorRules: what it does in the namespaces of the registries; the ClusterRole (every
    namespace) or each watched namespace's Role. Children are deleted through owner references; "delete"
    is only for what no owner reference can remove: optional children the spec no longer wants (an
    Ingress, a PodDisruptionBudget, a NetworkPolicy), pull-secret copies in other namespaces, and
    kube-public/local-registry-hosting.
  * dockyard.homeRules: node trust, only in the release namespace: the DaemonSet, ConfigMap and Secret it creates
    there and the agents' Pods it reads reports from. Never cluster-wide: creating DaemonSets anywhere
    would let the operator run a Pod on every node of any namespace.
*/}}
{{- define "dockyard.operatorRules" -}}
# The PrivateRegistry resources: watched, annotated and finalized by kopf, status written by the operator.
- apiGroups: ["dockyard.dev"]
  resources: ["privateregistries"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["dockyard.dev"]
  resources: ["privateregistries/status"]
  verbs: ["patch"]
# Children carry blockOwnerDeletion owner references; clusters enforcing OwnerReferencesPermissionEnforcement
# (e.g. OpenShift) require this to set them.
- apiGroups: ["dockyard.dev"]
  resources: ["privateregistries/finalizers"]
  verbs: ["update"]
# Each registry's children: htpasswd/TLS/CA Secrets, nginx ConfigMap, Service, storage claim, Deployment.
# Written by server-side apply ("patch"; an apply that creates the object also needs "create").
- apiGroups: [""]
  resources: ["secrets", "configmaps", "services", "persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses", "networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# A PodDisruptionBudget while replicas > 1, deleted when back to 1.
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Events about each PrivateRegistry (kubectl describe shows them).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# The registry's Pods, listed for their IPs: the operator reads each one's /status (storage use, last gc run)
# from the metrics port. Read only; a Pod is never fetched or changed.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# Pull secrets live in other namespaces (no owner reference can remove them), and
# kube-public/local-registry-hosting outlives no registry: the operator deletes both itself.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["delete"]
- apiGroups: [""]
  resources: ["configmaps"]
  resourceNames: ["local-registry-hosting"]
  verbs: ["delete"]
# spec.pullSecrets: the ServiceAccounts that get the Secret. (The Namespaces whose labels say whether they
# accept pull secrets are read through dockyard.namespaceRules: a list cluster-wide, a get of each watched one.)
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "update"]
{{- end }}

{{/*
Reading Namespaces (their pull-secret opt-in labels, tenancy.py): every namespace may be listed when every
namespace is watched; with watchNamespaces each Role lets the operator get its own Namespace only (RBAC
files a request for Namespace X under namespace X, so a Role can grant it), and the operator reads the
watched Namespaces one by one (kube.Kube with namespaces).
*/}}
{{- define "dockyard.namespaceRules" -}}
{{- if .namespace -}}
- apiGroups: [""]
  resources: ["namespaces"]
  resourceNames: [{{ .namespace | quote }}]
  verbs: ["get"]
{{- else -}}
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list"]
{{- end }}
{{- end }}


{{- define "dockyard.homeRules" -}}
- apiGroups: ["apps"]
  resources: ["daemonsets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The node credentials Secret next to the ConfigMap (tokens for wired mirrors closed to anonymous pulls).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list"]
{{- if .Values.nodeTrust.enabled }}
# The agents' ServiceAccount (shipped by the chart) owns what node trust publishes: its uid is read here.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  resourceNames: ["dockyard-node-trust"]
  verbs: ["get"]
{{- end }}
{{- end }}
