{{/* Names and labels. */}}
{{- define "llmrec.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "llmrec.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "llmrec.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "llmrec.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: include with (dict "ctx" . "component" "api"). */}}
{{- define "llmrec.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llmrec.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "llmrec.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "llmrec.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "llmrec.fullname" .)) -}}
{{- end -}}

{{/* Secret key -> the LLMREC_* variable naming its file (the *_file settings of llmrec/settings.py). */}}
{{- define "llmrec.secretSettings" -}}
postgres-password: LLMREC_POSTGRES__PASSWORD_FILE
api-tokens: LLMREC_API__AUTH_TOKENS_FILE
kafka-sasl-password: LLMREC_KAFKA__SASL_PASSWORD_FILE
kafka-ssl-key-password: LLMREC_KAFKA__SSL_KEY_PASSWORD_FILE
{{- end -}}

{{/* The secrets in use, key -> value ("" for an existing Secret's keys), as YAML. */}}
{{- define "llmrec.secretKeys" -}}
{{- $known := include "llmrec.secretSettings" . | fromYaml -}}
{{- $keys := dict -}}
{{- if .Values.secrets.existingSecret -}}
{{- range .Values.secrets.existingSecretKeys -}}
{{- if not (hasKey $known .) -}}
{{- fail (printf "secrets.existingSecretKeys: unknown key %q (known: %s)" . (keys $known | sortAlpha | join ", ")) -}}
{{- end -}}
{{- $_ := set $keys . "" -}}
{{- end -}}
{{- else -}}
{{- $given := dict "postgres-password" .Values.secrets.postgresPassword "api-tokens" .Values.secrets.apiTokens "kafka-sasl-password" .Values.secrets.kafkaSaslPassword "kafka-ssl-key-password" .Values.secrets.kafkaSslKeyPassword -}}
{{- range $key, $value := $given -}}
{{- if $value -}}
{{- $_ := set $keys $key $value -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toYaml $keys -}}
{{- end -}}

{{/* Environment common to the API and the worker: the config file and the secret files' paths. */}}
{{- define "llmrec.commonEnv" -}}
- name: LLMREC_CONFIG
  value: /etc/llmrec/llmrec.toml
{{- $known := include "llmrec.secretSettings" . | fromYaml }}
{{- range $key, $_ := (include "llmrec.secretKeys" . | fromYaml) }}
- name: {{ get $known $key }}
  value: /run/secrets/llmrec/{{ $key }}
{{- end }}
{{- end -}}

{{/* A component's extraEnv, after the chart's own variables: include with (dict "extra" .Values.api.extraEnv
"component" "api"). Entries are Kubernetes EnvVars (name and value, or valueFrom), for what is not a setting
of llmrec: the OpenTelemetry OTEL_* variables, say. llmrec's settings go in `config` (LLMREC_* variables
here would escape tools/check_chart.py and could override what the chart must set): they fail the render. */}}
{{- define "llmrec.extraEnv" -}}
{{- range .extra -}}
{{- if not .name -}}
{{- fail (printf "%s.extraEnv: every entry needs a name" $.component) -}}
{{- end -}}
{{- if hasPrefix "LLMREC_" .name -}}
{{- fail (printf "%s.extraEnv: %s is an llmrec setting: set it in config (llmrec.toml) or the chart's values" $.component .name) -}}
{{- end -}}
{{- end -}}
{{- toYaml .extra -}}
{{- end -}}

{{/* Volumes common to the API and the worker. */}}
{{- define "llmrec.volumes" -}}
- name: config
  configMap:
    name: {{ include "llmrec.fullname" . }}-config
- name: artifacts
{{- if .Values.artifacts.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ .Values.artifacts.existingClaim }}
    readOnly: true
{{- else }}
  emptyDir: {}
{{- end }}
- name: state
  emptyDir: {}
{{- if (include "llmrec.secretKeys" . | fromYaml) }}
- name: secrets
  secret:
    secretName: {{ include "llmrec.secretName" . }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- define "llmrec.volumeMounts" -}}
- name: config
  mountPath: /etc/llmrec
  readOnly: true
- name: artifacts
  mountPath: /var/lib/llmrec/artifacts
  readOnly: true
- name: state
  mountPath: /var/lib/llmrec/state
{{- if (include "llmrec.secretKeys" . | fromYaml) }}
# The whole folder, not subPath files: a changed Secret reaches the pod.
- name: secrets
  mountPath: /run/secrets/llmrec
  readOnly: true
{{- end }}
{{- end -}}

{{- define "llmrec.podAnnotations" -}}
checksum/config: {{ include (print .ctx.Template.BasePath "/configmap.yaml") .ctx | sha256sum }}
checksum/secret: {{ include (print .ctx.Template.BasePath "/secret.yaml") .ctx | sha256sum }}
{{- if .ctx.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end -}}
