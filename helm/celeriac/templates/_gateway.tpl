{{/* Names and settings of the optional HTTP gateway (templates/gateway.yaml). */}}

{{- define "celeriac.gatewayName" -}}
{{- printf "%s-gateway" (include "celeriac.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "celeriac.gatewaySelector" -}}
app.kubernetes.io/name: {{ include "celeriac.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end -}}

{{/* gateway.image when its repository is set, else the operator image (it installs the
gateway extra). */}}
{{- define "celeriac.gatewayImage" -}}
{{- $img := .Values.gateway.image -}}
{{- if $img.repository -}}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) -}}
{{- else -}}
{{- include "celeriac.operatorImage" . -}}
{{- end -}}
{{- end -}}

{{- define "celeriac.gatewayPullPolicy" -}}
{{- if .Values.gateway.image.repository -}}
{{- .Values.gateway.image.pullPolicy -}}
{{- else -}}
{{- .Values.operator.image.pullPolicy -}}
{{- end -}}
{{- end -}}
