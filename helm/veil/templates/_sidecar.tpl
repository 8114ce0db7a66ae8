{{/*
The veil sidecar, for any chart's pods. Each template takes a dict:
  root       the including template's context ($)
  values     this chart's values (.Values.veil when this chart is a dependency named "veil")
  configMap  optional: a ConfigMap whose key "veil.yaml" is the sidecar's declarative config

In a pod spec:

  {{- $veil := dict "root" $ "values" .Values.veil "configMap" "my-app-veil" }}
  spec:
    {{- if .Values.veil.sidecar.nativeSidecar }}
    initContainers:
      {{- include "veil.sidecar.container" $veil | nindent 6 }}
    {{- end }}
    containers:
      - name: app
        env:
          {{- include "veil.sidecar.appEnv" $veil | nindent 10 }}
        volumeMounts:
          {{- include "veil.sidecar.appVolumeMounts" $veil | nindent 10 }}
      {{- if not .Values.veil.sidecar.nativeSidecar }}
      {{- include "veil.sidecar.container" $veil | nindent 6 }}
      {{- end }}
    volumes:
      {{- include "veil.sidecar.volumes" $veil | nindent 6 }}

The app reaches the API at $VEIL_API (unix:<socketDir>/api.sock) and must run in the pod's
fsGroup (the socket is mode 0660 by default).

Portals and other start-up config: values.sidecar.inlets, .outlets and .config (docs/portals.md)
become the sidecar's declarative config in a ConfigMap that "veil.sidecar.configMap" renders
under the name given as `configMap` (include it once, beside the pod):

  {{- include "veil.sidecar.configMap" $veil }}

An app then reaches a far database at localhost:5432 through an inlet, unchanged.
*/}}

{{- define "veil.sidecar.configData" -}}
{{- $s := .values.sidecar -}}
{{- $config := deepCopy (default dict $s.config) -}}
{{- if $s.outlets }}{{- $_ := set $config "outlets" $s.outlets }}{{- end -}}
{{- if $s.inlets }}{{- $_ := set $config "inlets" $s.inlets }}{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{- define "veil.sidecar.configMap" -}}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ required "veil.sidecar.configMap needs a configMap name" .configMap }}
data:
  veil.yaml: |
    {{- include "veil.sidecar.configData" . | nindent 4 }}
{{- end -}}

{{- define "veil.sidecar.container" -}}
{{- $v := .values -}}
{{- $s := $v.sidecar -}}
- name: veil
  image: {{ include "veil.imageFrom" . }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- if $s.nativeSidecar }}
  restartPolicy: Always
  {{- end }}
  command: [veild]
  args:
    {{- include "veil.commonArgsFrom" . | nindent 4 }}
    - --api=unix:{{ $s.socketDir }}/api.sock
    - --api-socket-mode={{ $s.socketMode }}
    - --shutdown-grace={{ $s.shutdownGraceSeconds }}
    {{- if .configMap }}
    - --config=/etc/veil/config/veil.yaml
    {{- end }}
    {{- range $s.credentials.trustedAuthorities }}
    - --authority-identity={{ . }}
    {{- end }}
    {{- if $s.credentials.enrollment.existingSecret }}
    - --enroll-token-file=/etc/veil/enrollment/{{ $s.credentials.enrollment.secretKey }}
    {{- end }}
    {{- range $s.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  env:
    {{- include "veil.podIPEnv" . | nindent 4 }}
  ports:
    - name: veil-health
      containerPort: {{ $v.ports.health }}
      protocol: TCP
    - name: veil-metrics
      containerPort: {{ $v.ports.metrics }}
      protocol: TCP
  {{- include "veil.probesFrom" . | nindent 2 }}
  resources:
    {{- toYaml $s.resources | nindent 4 }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
  volumeMounts:
    - name: veil-socket
      mountPath: {{ $s.socketDir }}
    - name: veil-state
      mountPath: /var/lib/veil
    - name: veil-vault-key
      mountPath: /etc/veil/vault-key
      readOnly: true
    {{- if .configMap }}
    - name: veil-config
      mountPath: /etc/veil/config
      readOnly: true
    {{- end }}
    {{- if $s.credentials.enrollment.existingSecret }}
    - name: veil-enrollment
      mountPath: /etc/veil/enrollment
      readOnly: true
    {{- end }}
{{- end -}}

{{- define "veil.sidecar.volumes" -}}
{{- $s := .values.sidecar -}}
- name: veil-socket
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
- name: veil-state
  {{- if $s.persistence.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ $s.persistence.existingClaim }}
  {{- else }}
  emptyDir:
    sizeLimit: 64Mi
  {{- end }}
{{ include "veil.vaultKeyVolumeFrom" . }}
{{- if .configMap }}
- name: veil-config
  configMap:
    name: {{ .configMap }}
{{- end }}
{{- if $s.credentials.enrollment.existingSecret }}
- name: veil-enrollment
  secret:
    secretName: {{ $s.credentials.enrollment.existingSecret }}
    # Readable by the pod's fsGroup only (veild refuses a token file others may read).
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- define "veil.sidecar.appVolumeMounts" -}}
- name: veil-socket
  mountPath: {{ .values.sidecar.socketDir }}
{{- end -}}

{{- define "veil.sidecar.appEnv" -}}
- name: VEIL_API
  value: unix:{{ .values.sidecar.socketDir }}/api.sock
{{- end -}}
