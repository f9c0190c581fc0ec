{{/*
Names, labels and the operator's RBAC rules, shared by every template of the chart.
*/}}

{{- define "dockyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name prefix of every object: DNS-1123 labels are at most 63 characters.
*/}}
{{- define "dockyard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "dockyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dockyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
Labels of every object but the component, which callers add (operator or node-trust).
*/}}
{{- define "dockyard.baseLabels" -}}
app.kubernetes.io/name: {{ include "dockyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: dockyard
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "dockyard.labels" -}}
{{ include "dockyard.baseLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "dockyard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dockyard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "dockyard.peeringName" -}}
{{- default (include "dockyard.fullname" .) .Values.peering.name }}
{{- end }}

{{- define "dockyard.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Public registry hosts node trust never publishes unless nodeTrust.allowedHosts names them explicitly: a JSON
list, so the admission policy can use it as a CEL list. Must equal PUBLIC_HOSTS in
operator/dockyard_operator/nodetrust/claims.py (tests/integration/install/test_admission_policy.py compares).
*/}}
{{- define "dockyard.publicRegistryHosts" -}}
["docker.io", "registry-1.docker.io", "index.docker.io", "registry.k8s.io", "k8s.gcr.io", "gcr.io", "*.gcr.io", "ghcr.io", "quay.io", "public.ecr.aws", "*.amazonaws.com", "mcr.microsoft.com", "*.azurecr.io", "*.pkg.dev"]
{{- end }}
