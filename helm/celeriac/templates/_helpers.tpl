{{/* Names, labels and computed settings shared by the templates. */}}

{{- define "celeriac.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every object name: "<release>-celeriac", or the release when it says celeriac. */}}
{{- define "celeriac.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "celeriac.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "celeriac.labels" -}}
helm.sh/chart: {{ include "celeriac.chart" . }}
app.kubernetes.io/name: {{ include "celeriac.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: celeriac
{{- end -}}

{{- define "celeriac.operatorSelector" -}}
app.kubernetes.io/name: {{ include "celeriac.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "celeriac.natsSelector" -}}
app.kubernetes.io/name: {{ include "celeriac.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: nats
{{- end -}}

{{- define "celeriac.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "celeriac.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "celeriac.leaseName" -}}
{{- default (include "celeriac.fullname" .) .Values.operator.leaderElection.leaseName -}}
{{- end -}}

{{- define "celeriac.natsServerName" -}}
{{- printf "%s-nats" (include "celeriac.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The NATS URL of the operator: nats.url, else the bundled server, else an error. */}}
{{- define "celeriac.natsUrl" -}}
{{- if .Values.nats.url -}}
{{- .Values.nats.url -}}
{{- else if .Values.natsServer.enabled -}}
{{- printf "nats://%s.%s.svc:4222" (include "celeriac.natsServerName" .) .Release.Namespace -}}
{{- else -}}
{{- fail "nats.url is required: set it to your NATS server (e.g. --set nats.url=nats://nats.nats.svc:4222), or install the bundled one with --set natsServer.enabled=true" -}}
{{- end -}}
{{- end -}}

{{- define "celeriac.operatorImage" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) -}}
{{- end -}}

{{/* Fails early on combinations the schema cannot express. */}}
{{- define "celeriac.validate" -}}
{{- if and (gt (int .Values.operator.replicas) 1) (not .Values.operator.leaderElection.enabled) -}}
{{- fail "operator.replicas > 1 needs operator.leaderElection.enabled=true: two operators acting at once would fight over the same Deployments" -}}
{{- end -}}
{{- end -}}

{{/* What the operator does in the namespaces it watches. */}}
{{- define "celeriac.resourceRules" -}}
# Watch the custom resources; patch them for finalizers and handler progress.
- apiGroups: [celeriac.io]
  resources: [taskqueues, workerpools, taskschedules]
  verbs: [get, list, watch, patch]
- apiGroups: [celeriac.io]
  resources: [taskqueues/status, workerpools/status, taskschedules/status]
  verbs: [get, patch]
# Owner references with blockOwnerDeletion need this where that admission check is on.
- apiGroups: [celeriac.io]
  resources: [workerpools/finalizers]
  verbs: [update]
# The worker Deployment of each WorkerPool: created, replaced on spec changes, scaled;
# watched, so polling pools reads their replica counts from memory.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, update]
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [get, patch, update]
# Scaling decisions and warnings are posted as Events on the custom resources.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}

{{/* Read-only and cluster-scoped: kopf notices CRD upgrades and which watched namespaces
exist (without it, it retries for about a minute at startup before assuming they do). */}}
{{- define "celeriac.discoveryRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end -}}
