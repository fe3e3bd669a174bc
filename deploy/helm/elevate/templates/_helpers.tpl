{{/* Names, labels and the parts every pod of the chart shares. */}}

{{- define "elevate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains "elevate" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-elevate" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The project's data taken from its code (files/kafka-acls.json). */}}
{{- define "elevate.data" -}}
{{- .Files.Get "files/kafka-acls.json" -}}
{{- end -}}

{{- define "elevate.labels" -}}
app.kubernetes.io/name: elevate
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "elevate.commonLabels" . }}
{{- end -}}

{{- define "elevate.commonLabels" -}}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: elevate
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one service: (dict "root" $ "service" "request-api") */}}
{{- define "elevate.selectorLabels" -}}
app.kubernetes.io/name: elevate
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .service }}
{{- end -}}

{{- define "elevate.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* A Secret name template with {principal} replaced: (dict "name" … "principal" …) */}}
{{- define "elevate.forPrincipal" -}}
{{- .name | replace "{principal}" .principal -}}
{{- end -}}

{{- define "elevate.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.runAsUser }}
runAsGroup: {{ .Values.runAsUser }}
fsGroup: {{ .Values.runAsUser }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "elevate.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.runAsUser }}
runAsGroup: {{ .Values.runAsUser }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Kafka settings of a principal: (dict "root" $ "principal" "approval") */}}
{{- define "elevate.kafkaEnv" -}}
{{- $k := .root.Values.kafka -}}
- name: ELEVATE_KAFKA_BOOTSTRAP_SERVERS
  value: {{ $k.bootstrapServers | quote }}
- name: ELEVATE_KAFKA_SECURITY_PROTOCOL
  value: {{ $k.securityProtocol | quote }}
{{- if $k.allowPlaintextAnyoneCanForgeEvents }}
- name: ELEVATE_KAFKA_ALLOW_PLAINTEXT_ANYONE_CAN_FORGE_EVENTS
  value: "true"
{{- end }}
{{- if eq $k.securityProtocol "SASL_SSL" }}
- name: ELEVATE_KAFKA_SASL_MECHANISM
  value: {{ $k.sasl.mechanism | quote }}
{{- if eq $k.sasl.mechanism "SCRAM-SHA-512" }}
- name: ELEVATE_KAFKA_SASL_USERNAME
  value: {{ .principal | quote }}
- name: ELEVATE_KAFKA_SASL_PASSWORD_FILE
  value: /etc/elevate/kafka/password
{{- end }}
{{- end }}
{{- if eq $k.securityProtocol "SSL" }}
- name: ELEVATE_KAFKA_SSL_CERT_FILE
  value: /etc/elevate/kafka/user.crt
- name: ELEVATE_KAFKA_SSL_KEY_FILE
  value: /etc/elevate/kafka/user.key
{{- end }}
{{- if and $k.tls.caSecret.name (ne $k.securityProtocol "PLAINTEXT") }}
- name: ELEVATE_KAFKA_SSL_CA_FILE
  value: /etc/elevate/kafka-ca/ca.pem
{{- end }}
- name: ELEVATE_TOPIC_PREFIX
  value: {{ .root.Values.config.topicPrefix | quote }}
- name: ELEVATE_TOPIC_RETENTION_DAYS
  value: {{ .root.Values.config.topicRetentionDays | quote }}
- name: ELEVATE_AWS_REGION
  value: {{ .root.Values.config.awsRegion | quote }}
{{- end -}}

{{/* The Kafka credential volumes of a principal: (dict "root" $ "principal" …) */}}
{{- define "elevate.kafkaVolumes" -}}
{{- $k := .root.Values.kafka -}}
{{- if and (eq $k.securityProtocol "SASL_SSL") (eq $k.sasl.mechanism "SCRAM-SHA-512") }}
- name: kafka-credentials
  secret:
    secretName: {{ include "elevate.forPrincipal" (dict "name" $k.sasl.passwordSecret.name "principal" .principal) }}
    defaultMode: 0440
    items:
      - key: {{ $k.sasl.passwordSecret.key }}
        path: password
{{- else if eq $k.securityProtocol "SSL" }}
- name: kafka-credentials
  secret:
    secretName: {{ include "elevate.forPrincipal" (dict "name" $k.tls.clientCert.secretName "principal" .principal) }}
    defaultMode: 0440
    items:
      - key: {{ $k.tls.clientCert.certKey }}
        path: user.crt
      - key: {{ $k.tls.clientCert.keyKey }}
        path: user.key
{{- end }}
{{- if and $k.tls.caSecret.name (ne $k.securityProtocol "PLAINTEXT") }}
- name: kafka-ca
  secret:
    secretName: {{ $k.tls.caSecret.name }}
    defaultMode: 0444
    items:
      - key: {{ $k.tls.caSecret.key }}
        path: ca.pem
{{- end }}
{{- end -}}

{{- define "elevate.kafkaMounts" -}}
{{- $k := .root.Values.kafka -}}
{{- if or (and (eq $k.securityProtocol "SASL_SSL") (eq $k.sasl.mechanism "SCRAM-SHA-512")) (eq $k.securityProtocol "SSL") }}
- name: kafka-credentials
  mountPath: /etc/elevate/kafka
  readOnly: true
{{- end }}
{{- if and $k.tls.caSecret.name (ne $k.securityProtocol "PLAINTEXT") }}
- name: kafka-ca
  mountPath: /etc/elevate/kafka-ca
  readOnly: true
{{- end }}
{{- end -}}

{{/* A NetworkPolicy egress rule: (dict "rule" .Values.networkPolicy.egress.kafka) */}}
{{- define "elevate.egressRule" -}}
- ports:
    {{- toYaml .rule.ports | nindent 4 }}
  {{- with .rule.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* The pod spec lines every hook Job shares. */}}
{{- define "elevate.hookPod" -}}
serviceAccountName: {{ include "elevate.fullname" . }}-hooks
automountServiceAccountToken: false
enableServiceLinks: false
restartPolicy: Never
securityContext:
  {{- include "elevate.podSecurityContext" . | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "elevate.hookContainer" -}}
resources:
  requests: {cpu: 50m, memory: 128Mi, ephemeral-storage: 16Mi}
  limits: {cpu: 500m, memory: 256Mi, ephemeral-storage: 32Mi}
securityContext:
  {{- include "elevate.containerSecurityContext" . | nindent 2 }}
{{- end -}}
