{{/*
The operator's own rules: operator/dockyard_operator/kube.py RBAC_RULES, written out (a test compares
the two), plus kopf's event posting. Same list for the ClusterRole (every namespace) and each Role.
*/}}
{{- define "dockyard.operatorRules" -}}
# PLACEHOLDER until RBAC_RULES lands.
- apiGroups: ["dockyard.dev"]
  resources: ["privateregistries"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["dockyard.dev"]
  resources: ["privateregistries/status"]
  verbs: ["get", "patch"]
# kopf: events about each PrivateRegistry (kubectl describe shows them).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}
