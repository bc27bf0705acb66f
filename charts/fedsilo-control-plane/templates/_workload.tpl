{{/*
One fedsilo service: its settings ConfigMap (the FEDSILO_* contract), its workload and Service.
Arguments (a dict):
  root         the chart context
  component    registry | keymanager | scheduler | aggregator | modelstore
  values       the component's values
  settings     FEDSILO_* settings of this service (a dict, without the prefix)
  ports        extra named container ports beyond grpc, metrics and health (a dict name: port)
  stateful     true: a single-replica StatefulSet with a volume at /var/lib/fedsilo
  servicePorts names of ports the Service exposes (grpc first)
  env          extra env entries (YAML list), e.g. secrets or the pod name
  volumes      extra volumes (YAML list) and mounts (YAML list)
*/}}

{{/* Every container port of the platform, by name: `include "fedsilo.port" "health"`. */}}
{{- define "fedsilo.ports" -}}
{{- toJson (dict "grpc" 50051 "enroll" 50052 "http" 8443 "metrics" 9090 "health" 8086 "s3" 9000) -}}
{{- end -}}
{{- define "fedsilo.port" -}}
{{- index (include "fedsilo.ports" . | fromJson) . | int -}}
{{- end -}}

{{- define "fedsilo.settingsData" -}}
{{- $common := dict
  "GRPC_HOST" "0.0.0.0"
  "GRPC_PORT" (include "fedsilo.port" "grpc")
  "METRICS_HOST" "0.0.0.0"
  "METRICS_PORT" (include "fedsilo.port" "metrics")
  "HEALTH_PORT" (include "fedsilo.port" "health")
  "READY_FILE" "/tmp/ready.json"
  "GRACE_S" .root.Values.gracePeriodSeconds
  "MAX_WORKERS" .values.maxWorkers
  "LOG_LEVEL" .root.Values.logLevel
  "AUDIT_DIR" "/var/lib/fedsilo/audit"
  "TLS_CA" "/etc/fedsilo/tls/ca.crt"
  "TLS_CERT" "/etc/fedsilo/tls/tls.crt"
  "TLS_KEY" "/etc/fedsilo/tls/tls.key"
  "INSECURE" "false"
-}}
{{- range $key, $value := merge (dict) .settings $common }}
FEDSILO_{{ $key }}: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{- define "fedsilo.service" -}}
{{- $name := include "fedsilo.component" . }}
{{- $base := dict "grpc" (int (include "fedsilo.port" "grpc")) "metrics" (int (include "fedsilo.port" "metrics")) "health" (int (include "fedsilo.port" "health")) }}
{{- $_ := set . "allPorts" (merge (dict) (.ports | default dict) $base) }}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ $name }}-settings
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "fedsilo.labels" . | nindent 4 }}
data:
  {{- include "fedsilo.settingsData" . | indent 2 }}
{{- if .servicePorts }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "fedsilo.labels" . | nindent 4 }}
  {{- with (.values.service | default dict).annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ (.values.service | default dict).type | default "ClusterIP" }}
  selector:
    {{- include "fedsilo.selectorLabels" . | nindent 4 }}
  ports:
    {{- range .servicePorts }}
    - name: {{ . }}
      port: {{ index $.allPorts . }}
      targetPort: {{ . }}
      protocol: TCP
      {{- if eq . "grpc" "enroll" }}
      appProtocol: grpc
      {{- end }}
    {{- end }}
{{- end }}
---
# Headless: every replica's /metrics for Prometheus, and its health port for `helm test`.
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}-pods
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "fedsilo.labels" . | nindent 4 }}
    fedsilo.io/metrics: "true"
spec:
  clusterIP: None
  selector:
    {{- include "fedsilo.selectorLabels" . | nindent 4 }}
  ports:
    - name: metrics
      port: {{ include "fedsilo.port" "metrics" }}
      targetPort: metrics
      protocol: TCP
    - name: health
      port: {{ include "fedsilo.port" "health" }}
      targetPort: health
      protocol: TCP
---
apiVersion: apps/v1
kind: {{ ternary "StatefulSet" "Deployment" (.stateful | default false) }}
metadata:
  name: {{ $name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "fedsilo.labels" . | nindent 4 }}
spec:
  {{- if .stateful }}
  replicas: 1
  serviceName: {{ $name }}
  {{- else if not (and .values.autoscaling .values.autoscaling.enabled) }}
  replicas: {{ .values.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "fedsilo.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "fedsilo.labels" . | nindent 8 }}
      annotations:
        checksum/settings: {{ include "fedsilo.settingsData" . | sha256sum }}
        {{- with .root.Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "fedsilo.fullname" .root }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ add .root.Values.gracePeriodSeconds 15 }}
      {{- with .root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml .root.Values.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ .component }}
          image: {{ include "fedsilo.image" (dict "root" .root "image" .component) }}
          imagePullPolicy: {{ .root.Values.image.pullPolicy }}
          command: ["python", "-m", "fedsilo_services.{{ .component }}"]
          envFrom:
            - configMapRef:
                name: {{ $name }}-settings
          {{- with .env }}
          env:
            {{- . | nindent 12 }}
          {{- end }}
          ports:
            {{- range $portName, $port := .allPorts }}
            - name: {{ $portName }}
              containerPort: {{ $port }}
              protocol: TCP
            {{- end }}
          startupProbe:
            grpc:
              port: {{ include "fedsilo.port" "health" }}
            periodSeconds: 2
            failureThreshold: 60
          livenessProbe:
            grpc:
              port: {{ include "fedsilo.port" "health" }}
            periodSeconds: 10
            timeoutSeconds: 5
            failureThreshold: 3
          readinessProbe:
            grpc:
              port: {{ include "fedsilo.port" "health" }}
              {{- with .readiness }}
              service: {{ . }}
              {{- end }}
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: 2
          securityContext:
            {{- toYaml .root.Values.securityContext | nindent 12 }}
          resources:
            {{- toYaml .values.resources | nindent 12 }}
          volumeMounts:
            - {name: tls, mountPath: /etc/fedsilo/tls, readOnly: true}
            - {name: state, mountPath: /var/lib/fedsilo}
            - {name: tmp, mountPath: /tmp}
            {{- with .mounts }}
            {{- . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tls
          secret:
            secretName: {{ include "fedsilo.tlsSecret" . }}
            defaultMode: 0440
        - name: tmp
          emptyDir: {sizeLimit: 256Mi}
        {{- if not .stateful }}
        - name: state
          emptyDir: {sizeLimit: 1Gi}
        {{- end }}
        {{- with .volumes }}
        {{- . | nindent 8 }}
        {{- end }}
      {{- with .root.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .root.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .root.Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
  {{- if .stateful }}
  volumeClaimTemplates:
    - metadata:
        name: state
        labels:
          {{- include "fedsilo.selectorLabels" . | nindent 10 }}
      spec:
        accessModes: [ReadWriteOnce]
        {{- with .values.persistence.storageClass }}
        storageClassName: {{ . }}
        {{- end }}
        resources:
          requests:
            storage: {{ .values.persistence.size }}
  {{- end }}
{{- end -}}
