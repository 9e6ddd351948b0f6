{{/* Names and labels shared by every template. */}}

{{- define "tickwire.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped prefix; kept short so "<fullname>-crd-upgrade" still fits 63 characters. */}}
{{- define "tickwire.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "tickwire.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tickwire.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "tickwire.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "tickwire.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "tickwire.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* repository[:tag][@digest]; the tag defaults to the chart's appVersion. Call with
     (dict "image" <values> "key" "operator.image" "root" $). */}}
{{- define "tickwire.image" -}}
{{- if eq .image.tag "latest" -}}
{{- fail (printf "%s.tag is \"latest\": pin a version (or set %s.digest) so that every node runs the same, repeatable image" .key .key) -}}
{{- end -}}
{{- $tag := default .root.Chart.AppVersion .image.tag -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The namespaces that run agents, as a JSON list (templates iterate it with fromJsonArray). */}}
{{- define "tickwire.agentNamespaces" -}}
{{- if .Values.agent.namespaces -}}
{{- toJson .Values.agent.namespaces -}}
{{- else -}}
{{- toJson (list .Release.Namespace) -}}
{{- end -}}
{{- end -}}

{{/* Labels the operator puts on every agent Pod (pod_labels in operator/tickwire_operator/pod.py). */}}
{{- define "tickwire.agentPodSelector" -}}
app.kubernetes.io/name: tickwire-agent
app.kubernetes.io/managed-by: tickwire-operator
{{- end -}}
