{{/*
Chart name, truncated to the 63 characters a DNS label allows.
*/}}
{{- define "toygres.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. If the release name already contains the chart name it is used as is.
*/}}
{{- define "toygres.fullname" -}}
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
{{- define "toygres.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "toygres.labels" -}}
helm.sh/chart: {{ include "toygres.chart" . }}
{{ include "toygres.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: toygres
{{- end }}

{{/*
Selector labels (immutable in a Deployment: keep them stable).
*/}}
{{- define "toygres.selectorLabels" -}}
app.kubernetes.io/name: {{ include "toygres.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{/*
The controller's service account name.
*/}}
{{- define "toygres.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "toygres.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image references; the tag defaults to the chart's appVersion.
*/}}
{{- define "toygres.controllerImage" -}}
{{- printf "%s:%s" .Values.controller.image.repository (default .Chart.AppVersion .Values.controller.image.tag) }}
{{- end }}

{{- define "toygres.sidecarImage" -}}
{{- printf "%s:%s" .Values.sidecar.image.repository (default .Chart.AppVersion .Values.sidecar.image.tag) }}
{{- end }}

{{/*
"true" when the controller runs the CMS embedded (no external CMS Secret is named).
*/}}
{{- define "toygres.embeddedCms" -}}
{{- if .Values.databaseUrl.existingSecret }}false{{ else }}true{{ end }}
{{- end }}

{{/*
The Secret holding the controller API's certificate (tls.crt, tls.key, ca.crt).
*/}}
{{- define "toygres.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "toygres.fullname" .)) .Values.tls.existingSecret }}
{{- end }}

{{/*
The ConfigMap holding the CA (ca.crt) that clients and member pods verify the controller with.
*/}}
{{- define "toygres.caConfigMapName" -}}
{{- if .Values.tls.existingSecret }}
{{- required "tls.caConfigMap: with tls.existingSecret, name a ConfigMap holding ca.crt (the CA that issued it), so that member pods can verify the controller" .Values.tls.caConfigMap }}
{{- else }}
{{- printf "%s-ca" (include "toygres.fullname" .) }}
{{- end }}
{{- end }}

{{/*
The controller API's URL scheme.
*/}}
{{- define "toygres.scheme" -}}
{{- ternary "https" "http" .Values.tls.enabled }}
{{- end }}
