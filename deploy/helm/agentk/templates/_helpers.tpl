{{- define "agentk.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "agentk.serviceAccountName" -}}
{{- default (include "agentk.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "agentk.tokenSecret" -}}
{{- default (printf "%s-token" (include "agentk.fullname" .)) .Values.config.secretName -}}
{{- end -}}

{{- define "agentk.labels" -}}
app.kubernetes.io/name: agentk
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: tether
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "agentk.selector" -}}
app.kubernetes.io/name: agentk
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
