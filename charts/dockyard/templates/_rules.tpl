{{/*
The operator's own rules: operator/dockyard_operator/kube.py RBAC_RULES, written out so the chart reads
on its own (tests/integration/install checks the two agree), in two parts:
  * dockyard.operatorRules: what it does in the namespaces of the registries; the ClusterRole (every
    namespace) or each watched namespace's Role. Children are deleted through owner references; "delete"
    is only for what no owner reference can remove: Ingresses dropped from the spec, pull-secret copies in
    other namespaces, and kube-public/local-registry-hosting.
  * dockyard.homeRules: node trust, only in the release namespace: the DaemonSet and ConfigMap it creates
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
  verbs: ["get", "patch"]
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
  resources: ["ingresses"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Events about each PrivateRegistry (kubectl describe shows them).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# Pull secrets live in other namespaces (no owner reference can remove them), and
# kube-public/local-registry-hosting outlives no registry: the operator deletes both itself.
- apiGroups: [""]
  resources: ["secrets", "configmaps"]
  verbs: ["delete"]
# spec.pullSecrets: namespaces matching its selector, and the ServiceAccounts that get the Secret.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list"]
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "update"]
{{- end }}


{{- define "dockyard.homeRules" -}}
- apiGroups: ["apps"]
  resources: ["daemonsets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list"]
{{- end }}
