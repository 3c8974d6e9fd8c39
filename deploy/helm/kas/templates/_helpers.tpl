{{- define "kas.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 55 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 55 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kas.labels" -}}
app.kubernetes.io/name: kas
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: tether
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "kas.selector" -}}
app.kubernetes.io/name: kas
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kas.databaseSecret" -}}
{{- default (printf "%s-database" (include "kas.fullname" .)) .Values.database.secretName -}}
{{- end -}}

{{- define "kas.replicated" -}}
{{- if gt (int .Values.replicas) 1 -}}true{{- end -}}
{{- end -}}
