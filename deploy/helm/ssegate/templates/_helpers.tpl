{{/*
Names and labels shared by every template.
*/}}

{{/* The chart's name, or nameOverride. */}}
{{- define "ssegate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The objects' name: fullnameOverride, else the release name, followed by the
chart's name unless the release name already contains it. 63 characters at
most (DNS label).
*/}}
{{- define "ssegate.fullname" -}}
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

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "ssegate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The image tag: image.tag, else the chart's appVersion. */}}
{{- define "ssegate.tag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/* The standard labels of every object. */}}
{{- define "ssegate.labels" -}}
helm.sh/chart: {{ include "ssegate.chart" . }}
{{ include "ssegate.selectorLabels" . }}
app.kubernetes.io/version: {{ include "ssegate.tag" . | quote }}
app.kubernetes.io/component: gateway
app.kubernetes.io/part-of: ssegate
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The labels that select the pods (Deployment, Service, PDB, ServiceMonitor). */}}
{{- define "ssegate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ssegate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The Secret the pods read REDIS_URL and the keys from. */}}
{{- define "ssegate.secretName" -}}
{{- default (include "ssegate.fullname" .) .Values.existingSecret }}
{{- end }}
