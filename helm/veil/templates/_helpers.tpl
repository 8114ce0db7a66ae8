{{/*
Names and labels. Every template that may be included from another chart takes a dict with
"root" (the including template's context) and "values" (this chart's values: .Values here,
.Values.veil in a chart that has this one as a dependency named "veil").
*/}}

{{- define "veil.name" -}}
{{- default "veil" .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's base name for veil objects: <release>-veil, or fullnameOverride. */}}
{{- define "veil.fullnameFrom" -}}
{{- $values := .values -}}
{{- if $values.fullnameOverride -}}
{{- $values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default "veil" $values.nameOverride -}}
{{- if contains $name .root.Release.Name -}}
{{- .root.Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .root.Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "veil.fullname" -}}
{{- include "veil.fullnameFrom" (dict "root" . "values" .Values) -}}
{{- end -}}

{{- define "veil.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "veil.selectorLabels" -}}
app.kubernetes.io/name: {{ include "veil.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "veil.labels" -}}
helm.sh/chart: {{ include "veil.chart" . }}
{{ include "veil.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: veil
{{- end -}}

{{- define "veil.imageFrom" -}}
{{- printf "%s:%s" .values.image.repository (required "image.tag is required" .values.image.tag) -}}
{{- end -}}

{{- define "veil.vaultKeySecretFrom" -}}
{{- default (printf "%s-vault-key" (include "veil.fullnameFrom" .)) .values.vaultKey.existingSecret -}}
{{- end -}}

{{/* "true" when the hubs share a directory (an etcd given, or the chart's): dict "root" "values". */}}
{{- define "veil.hubReplicatedFrom" -}}
{{- $etcd := .values.hub.directory.etcd -}}
{{- if or $etcd.endpoints $etcd.deploy }}true{{ end -}}
{{- end -}}

{{/* The etcd client URLs the hubs use, comma-separated: dict "root" "values". */}}
{{- define "veil.hubDirectoryEndpointsFrom" -}}
{{- $etcd := .values.hub.directory.etcd -}}
{{- if $etcd.endpoints }}{{ join "," $etcd.endpoints }}{{ else }}http://{{ include "veil.fullnameFrom" . }}-etcd:2379{{ end -}}
{{- end -}}

{{/* The Service name of hub i: dict "root" "values" "index". Replicated hubs share one. */}}
{{- define "veil.hubNameFrom" -}}
{{- if include "veil.hubReplicatedFrom" . -}}
{{- printf "%s-hub" (include "veil.fullnameFrom" .) -}}
{{- else -}}
{{- printf "%s-hub-%d" (include "veil.fullnameFrom" .) (int .index) -}}
{{- end -}}
{{- end -}}

{{/* How many hub objects (Deployments, Services) there are: one StatefulSet when replicated. */}}
{{- define "veil.hubObjectsFrom" -}}
{{- if include "veil.hubReplicatedFrom" . }}1{{ else }}{{ int .values.hub.replicas }}{{ end -}}
{{- end -}}

{{/* Probes on the health-only port (grpc.health.v1). */}}
{{- define "veil.probesFrom" -}}
startupProbe:
  grpc:
    port: {{ .values.ports.health }}
  periodSeconds: 1
  failureThreshold: 60
livenessProbe:
  grpc:
    port: {{ .values.ports.health }}
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
readinessProbe:
  grpc:
    port: {{ .values.ports.health }}
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: 2
{{- end -}}

{{/* Arguments every veild in this chart gets. The state dir is a subdirectory of the volume:
veild creates it (mode 0700, its own), which it could not do to a volume's root. */}}
{{- define "veil.commonArgsFrom" -}}
- --state-dir=/var/lib/veil/state
- --vault-key-file=/etc/veil/vault-key/key
- --health-listen={{ .values.ports.bindHost }}:{{ .values.ports.health }}
- --metrics-listen={{ .values.ports.bindHost }}:{{ .values.ports.metrics }}
- --log-format={{ .values.logFormat }}
- --log-level={{ .values.logLevel }}
{{- end -}}

{{- define "veil.podIPEnv" -}}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
{{- end -}}

{{- define "veil.vaultKeyVolumeFrom" -}}
- name: veil-vault-key
  secret:
    secretName: {{ include "veil.vaultKeySecretFrom" . }}
    defaultMode: 0440
    items:
      - key: {{ .values.vaultKey.secretKey }}
        path: key
{{- end -}}
