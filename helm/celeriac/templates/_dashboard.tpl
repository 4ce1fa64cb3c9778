{{/* Names and settings of the optional dashboard (templates/dashboard.yaml). */}}

{{- define "celeriac.dashboardName" -}}
{{- printf "%s-dashboard" (include "celeriac.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "celeriac.dashboardSelector" -}}
app.kubernetes.io/name: {{ include "celeriac.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: dashboard
{{- end -}}

{{/* dashboard.image when its repository is set, else the operator image (it installs the
dashboard extra). */}}
{{- define "celeriac.dashboardImage" -}}
{{- $img := .Values.dashboard.image -}}
{{- if $img.repository -}}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) -}}
{{- else -}}
{{- include "celeriac.operatorImage" . -}}
{{- end -}}
{{- end -}}

{{- define "celeriac.dashboardPullPolicy" -}}
{{- if .Values.dashboard.image.repository -}}
{{- .Values.dashboard.image.pullPolicy -}}
{{- else -}}
{{- .Values.operator.image.pullPolicy -}}
{{- end -}}
{{- end -}}

{{/* The Secret the credentials come from: the chart's own for auth.token, else existingSecret. */}}
{{- define "celeriac.dashboardAuthSecret" -}}
{{- if .Values.dashboard.auth.token -}}
{{- include "celeriac.dashboardName" . -}}
{{- else -}}
{{- .Values.dashboard.auth.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* Read-only: the pools and their scaling decisions, nothing else. */}}
{{- define "celeriac.dashboardRules" -}}
- apiGroups: [celeriac.io]
  resources: [workerpools]
  verbs: [get, list, watch]
{{- end -}}
