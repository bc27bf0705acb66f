{{- define "client.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "client.site" -}}
{{- $site := required "site is required: this institution's site name" .Values.site -}}
{{- if not (regexMatch "^[a-z0-9][a-z0-9-]{0,62}$" $site) -}}
{{- fail (printf "site %q: use lowercase letters, digits and dashes" $site) -}}
{{- end -}}
{{- $site -}}
{{- end -}}

{{- define "client.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-fedsilo-client" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "client.selectorLabels" -}}
app.kubernetes.io/name: {{ include "client.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: client
{{- end -}}

{{- define "client.labels" -}}
{{ include "client.selectorLabels" . }}
app.kubernetes.io/part-of: fedsilo
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
fedsilo.io/site: {{ include "client.site" . }}
{{- end -}}

{{- define "client.address" -}}
{{- $value := index .root.Values.controlPlane .key -}}
{{- if not (regexMatch "^[A-Za-z0-9.-]+:[0-9]{1,5}$" (required (printf "controlPlane.%s is required (host:port)" .key) $value)) -}}
{{- fail (printf "controlPlane.%s: expected host:port, got %q" .key $value) -}}
{{- end -}}
{{- $value -}}
{{- end -}}

{{/* The site config the agent reads: name, datasets, policy. */}}
{{- define "client.siteConfig" -}}
site: {{ include "client.site" . }}
datasets:
  {{- if not .Values.datasets }}{{ fail "datasets: declare at least one dataset of this site" }}{{ end }}
  {{- toYaml .Values.datasets | nindent 2 }}
{{- with .Values.policy }}
policy:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* FEDSILO_* settings of the agent (its certificate comes from enrollment, in STATE_DIR). */}}
{{- define "client.settings" -}}
{{- $settings := dict
  "SITE" (include "client.site" .)
  "SITE_CONFIG" "/etc/fedsilo/site/site.yaml"
  "DATA_DIR" .Values.data.mountPath
  "STATE_DIR" "/var/lib/fedsilo/client"
  "REGISTRY_ADDRESS" (include "client.address" (dict "root" . "key" "registry"))
  "TORCH_THREADS" .Values.training.torchThreads
  "POLL_S" .Values.training.pollSeconds
  "GRPC_HOST" "127.0.0.1"
  "GRPC_PORT" 50051
  "METRICS_HOST" "0.0.0.0"
  "METRICS_PORT" 9090
  "HEALTH_PORT" 8086
  "READY_FILE" "/tmp/ready.json"
  "GRACE_S" 10
  "MAX_WORKERS" 4
  "LOG_LEVEL" .Values.logLevel
  "AUDIT_DIR" "/var/lib/fedsilo/audit"
  "TLS_CA" "/etc/fedsilo/ca/ca.crt"
  "INSECURE" "false"
-}}
{{- range $service := list "scheduler" "modelstore" "keymanager" }}
{{- if index $.Values.controlPlane $service }}
{{- $_ := set $settings (printf "%s_ADDRESS" (upper $service)) (include "client.address" (dict "root" $ "key" $service)) }}
{{- end }}
{{- end }}
{{- range $key, $value := $settings }}
FEDSILO_{{ $key }}: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{- define "client.tokenSecret" -}}
{{- if .Values.enrollment.existingSecret -}}
{{- .Values.enrollment.existingSecret -}}
{{- else if .Values.enrollment.token -}}
{{- printf "%s-enrollment" (include "client.fullname" .) -}}
{{- else -}}
{{- fail "enrollment.token or enrollment.existingSecret is required: the site's one-time token from `fedsilo site add`" -}}
{{- end -}}
{{- end -}}

{{- define "client.caConfigMap" -}}
{{- if .Values.controlPlane.caCertConfigMap -}}
{{- .Values.controlPlane.caCertConfigMap -}}
{{- else if .Values.controlPlane.caCert -}}
{{- printf "%s-ca" (include "client.fullname" .) -}}
{{- else -}}
{{- fail "controlPlane.caCert or controlPlane.caCertConfigMap is required: the platform CA certificate" -}}
{{- end -}}
{{- end -}}
