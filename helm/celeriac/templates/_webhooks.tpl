{{/* Names and settings of the optional webhook dispatcher (templates/webhooks.yaml). */}}

{{- define "celeriac.webhooksName" -}}
{{- printf "%s-webhooks" (include "celeriac.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "celeriac.webhooksSelector" -}}
app.kubernetes.io/name: {{ include "celeriac.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhooks
{{- end -}}

{{/* The worker image: `celeriac webhooks` needs the worker extra, which the operator
image does not install. */}}
{{- define "celeriac.webhooksImage" -}}
{{- $img := .Values.webhooks.image -}}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) -}}
{{- end -}}
