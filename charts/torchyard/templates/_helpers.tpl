{{/* Names, labels and the operator's command line, shared by the templates. */}}

{{- define "torchyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<chart>, or the release name alone when it already contains the chart name. */}}
{{- define "torchyard.fullname" -}}
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

{{- define "torchyard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "torchyard.labels" -}}
helm.sh/chart: {{ include "torchyard.chart" . }}
{{ include "torchyard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: torchyard
{{- end }}

{{- define "torchyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "torchyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "torchyard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "torchyard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "torchyard.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* "true" when the replicas use kopf peering: asked for, or needed by several replicas. */}}
{{- define "torchyard.peering" -}}
{{- if or .Values.peering.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{/* The namespaces served, as a JSON list; empty for clusterWide. */}}
{{- define "torchyard.watchNamespaces" -}}
{{- if eq .Values.watch.mode "releaseNamespace" }}
{{- list .Release.Namespace | toJson }}
{{- else if eq .Values.watch.mode "namespaces" }}
{{- if not .Values.watch.namespaces }}
{{- fail "watch.mode namespaces needs at least one name in watch.namespaces" }}
{{- end }}
{{- .Values.watch.namespaces | uniq | toJson }}
{{- else }}
{{- list | toJson }}
{{- end }}
{{- end }}

{{/*
The arguments of `torchyard operator run` (operator/cli/operator.py); the image's entrypoint is
`torchyard operator run`. A random peering priority is drawn by the container's shell (see deployment.yaml).
*/}}
{{- define "torchyard.operatorArgs" -}}
- --metrics-port={{ .Values.operator.metricsPort }}
{{- range (include "torchyard.watchNamespaces" . | fromJsonArray) }}
- --namespace={{ . }}
{{- end }}
{{- if .Values.operator.jsonLogs }}
- --json-logs
{{- end }}
{{- if .Values.operator.verbose }}
- --verbose
{{- end }}
{{- if include "torchyard.peering" . }}
- --peering={{ .Values.peering.name }}
{{- if not (kindIs "invalid" .Values.peering.priority) }}
- --priority={{ .Values.peering.priority }}
{{- end }}
{{- end }}
{{- range .Values.operator.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}
