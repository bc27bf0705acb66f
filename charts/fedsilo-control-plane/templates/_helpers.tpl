{{/* Names, labels and the pieces every fedsilo workload shares. */}}

{{- define "fedsilo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fedsilo.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains "fedsilo" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-fedsilo" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* <fullname>-<component>: the name of a component's workload, Service and Secrets. */}}
{{- define "fedsilo.component" -}}
{{- printf "%s-%s" (include "fedsilo.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fedsilo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fedsilo.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "fedsilo.labels" -}}
{{ include "fedsilo.selectorLabels" . }}
app.kubernetes.io/part-of: fedsilo
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "fedsilo.image" -}}
{{- $image := .root.Values.image -}}
{{- printf "%s/%s/%s:%s" $image.registry $image.repository .image (default .root.Chart.AppVersion $image.tag) -}}
{{- end -}}

{{/* host:port of a component's gRPC API inside the cluster. */}}
{{- define "fedsilo.address" -}}
{{- printf "%s.%s.svc:%d" (include "fedsilo.component" .) .root.Release.Namespace (int (.port | default 50051)) -}}
{{- end -}}

{{/* JSON: the address sites dial for each service (siteEndpoints, else the Service name). */}}
{{- define "fedsilo.siteEndpoints" -}}
{{- $endpoints := dict -}}
{{- range $component := list "registry" "scheduler" "modelstore" "keymanager" -}}
{{- $given := index $.Values.siteEndpoints $component -}}
{{- $_ := set $endpoints $component ($given | default (include "fedsilo.address" (dict "root" $ "component" $component))) -}}
{{- end -}}
{{- toJson $endpoints -}}
{{- end -}}

{{- define "fedsilo.tlsSecret" -}}
{{- printf "%s-tls" (include "fedsilo.component" .) -}}
{{- end -}}

{{- define "fedsilo.caSecret" -}}
{{- printf "%s-ca" (include "fedsilo.fullname" .) -}}
{{- end -}}

{{- define "fedsilo.operatorTokenSecret" -}}
{{- default (printf "%s-operator-token" (include "fedsilo.fullname" .)) .Values.operatorToken.existingSecret -}}
{{- end -}}

{{- define "fedsilo.s3Secret" -}}
{{- if eq .Values.objectStorage.mode "external" -}}
{{- required "objectStorage.external.existingSecret is required with an external S3 endpoint" .Values.objectStorage.external.existingSecret -}}
{{- else -}}
{{- default (printf "%s-minio" (include "fedsilo.fullname" .)) .Values.objectStorage.minio.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* DNS names of a component's certificate: every form of its Service name, plus extras. */}}
{{- define "fedsilo.dnsNames" -}}
{{- $name := include "fedsilo.component" . -}}
{{- $ns := .root.Release.Namespace -}}
{{- $names := list $name (printf "%s.%s" $name $ns) (printf "%s.%s.svc" $name $ns) (printf "%s.%s.svc.%s" $name $ns .root.Values.clusterDomain) -}}
{{- /* The operator reaches the scheduler's REST API through `kubectl port-forward`. */ -}}
{{- if eq .component "scheduler" -}}{{- $names = append $names "localhost" -}}{{- end -}}
{{- concat $names .root.Values.tls.extraDnsNames | uniq | toJson -}}
{{- end -}}

{{/* Random secret material that survives upgrades: the existing Secret's key, else new. */}}
{{- define "fedsilo.keptSecret" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .name -}}
{{- if and $existing (index $existing.data .key) -}}
{{- index $existing.data .key -}}
{{- else -}}
{{- randAlphaNum (int .length) | b64enc -}}
{{- end -}}
{{- end -}}

{{/* FEDSILO_STORAGE_* and FEDSILO_S3_* (without credentials) of the object store: the model
     store writes it, aggregator replicas read client updates from it directly. */}}
{{- define "fedsilo.objectStorageSettings" -}}
{{- $s3 := .Values.objectStorage -}}
{{- $external := eq $s3.mode "external" -}}
{{- $endpoint := ternary $s3.external.endpoint (printf "%s-minio.%s.svc:9000" (include "fedsilo.fullname" .) .Release.Namespace) $external -}}
{{- $settings := dict
  "STORAGE_BACKEND" "s3"
  "STORAGE_PATH" "/var/lib/fedsilo/objects"
  "S3_ENDPOINT" (required "objectStorage.external.endpoint is required with an external S3 endpoint" $endpoint)
  "S3_BUCKET" $s3.bucket
  "S3_SECURE" (ternary $s3.external.secure false $external)
-}}
{{- with $s3.region }}{{ $_ := set $settings "S3_REGION" . }}{{ end -}}
{{- toYaml $settings -}}
{{- end -}}

{{/* The object store's credentials, from its Secret. */}}
{{- define "fedsilo.objectStorageEnv" -}}
{{- $s3 := .Values.objectStorage -}}
{{- $secret := include "fedsilo.s3Secret" . -}}
{{- $keys := ternary (list $s3.external.accessKeyKey $s3.external.secretKeyKey) (list "root-user" "root-password") (eq $s3.mode "external") -}}
{{- $env := list
  (dict "name" "FEDSILO_S3_ACCESS_KEY" "valueFrom" (dict "secretKeyRef" (dict "name" $secret "key" (index $keys 0))))
  (dict "name" "FEDSILO_S3_SECRET_KEY" "valueFrom" (dict "secretKeyRef" (dict "name" $secret "key" (index $keys 1))))
-}}
{{- toYaml $env -}}
{{- end -}}
