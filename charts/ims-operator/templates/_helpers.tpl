{{/*
Chart name, overridable with nameOverride.
*/}}
{{- define "ims-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name, used as the prefix of every namespaced resource and of the
cluster-scoped ones. Truncated at 63 characters (DNS label limit of some name fields).
*/}}
{{- define "ims-operator.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "ims-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels every resource of the release carries.
*/}}
{{- define "ims-operator.labels" -}}
helm.sh/chart: {{ include "ims-operator.chart" . }}
{{ include "ims-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ims-operator
{{- end }}

{{/*
Labels that select the operator pods (stable across upgrades: never add to them).
*/}}
{{- define "ims-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ims-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the operator's ServiceAccount.
*/}}
{{- define "ims-operator.serviceAccountName" -}}
{{- include "ims-operator.fullname" . }}
{{- end }}

{{/*
Name of the leader-election Lease (passed as --lease-name).
*/}}
{{- define "ims-operator.leaseName" -}}
{{- include "ims-operator.fullname" . }}
{{- end }}

{{/*
The container image reference; the tag defaults to the chart's appVersion.
*/}}
{{- define "ims-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The operator's config file, rendered from .Values.config.
*/}}
{{- define "ims-operator.configFile" -}}
{{- /* kubevirt comes from its own value, so that `simulate --config` with this file judges
volume and server sources as the operator does. */ -}}
{{- toYaml (merge (dict "kubevirt" .Values.kubevirt.enabled) (deepCopy .Values.config)) }}
{{- end }}

{{/*
The operator's kinds of ims.imageshare.io, as plural resource names (a JSON list). The one
place to add a kind: the operator's ClusterRole, the tenant roles and the policy that keeps
`/status` the operator's all range over it.
*/}}
{{- define "ims-operator.resources" -}}
["privateimages", "imageshares", "shareacceptances"]
{{- end }}

{{/*
The kinds the operator alone creates, changes and deletes (tenants only read them), as plural
resource names (a JSON list). The operator's ClusterRole, the tenant view role and the policy
that keeps them the operator's range over it. (An ImageOffer has no /status subresource: the
`imageoffers/status` entries those templates derive name nothing and grant nothing.)
*/}}
{{- define "ims-operator.ownedResources" -}}
["imagequotas", "imageoffers"]
{{- end }}

{{/*
The user name the API server gives the operator's ServiceAccount.
*/}}
{{- define "ims-operator.serviceAccountUser" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "ims-operator.serviceAccountName" .) }}
{{- end }}
