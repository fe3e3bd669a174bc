{{/* The environment of one service's container: (dict "root" $ "service" "approval") */}}
{{- define "elevate.serviceEnv" -}}
{{- $v := .root.Values -}}
{{- $data := include "elevate.data" .root | fromJson -}}
- name: ELEVATE_MODE
  value: prod
- name: ELEVATE_SERVICE_NAME
  value: {{ .service }}
- name: ELEVATE_HTTP_HOST
  value: 0.0.0.0
- name: ELEVATE_HTTP_PORT
  value: "8000"
- name: ELEVATE_LOG_LEVEL
  value: {{ $v.config.logLevel | quote }}
- name: ELEVATE_LOG_JSON
  value: "true"
- name: ELEVATE_DATABASE_URL_FILE
  value: /etc/elevate/database/url
{{ include "elevate.kafkaEnv" (dict "root" .root "principal" .service) }}
- name: ELEVATE_REQUEST_HORIZON_DAYS
  value: {{ $v.config.requestHorizonDays | quote }}
- name: ELEVATE_PERSON_KEY
  value: {{ $v.config.personKey | quote }}
- name: ELEVATE_OIDC_ISSUER
  value: {{ $v.oidc.issuer | quote }}
- name: ELEVATE_OIDC_AUDIENCE
  value: {{ $v.oidc.audience | quote }}
- name: ELEVATE_OIDC_USER_CLAIM
  value: {{ $v.oidc.userClaim | quote }}
- name: ELEVATE_OIDC_USER_ATTRIBUTE
  value: {{ $v.oidc.userAttribute | quote }}
{{- with $v.oidc.externalIdIssuer }}
- name: ELEVATE_OIDC_EXTERNAL_ID_ISSUER
  value: {{ . | quote }}
{{- end }}
- name: ELEVATE_POLICY_FILE
  value: /etc/elevate/policy/policy.yaml
- name: ELEVATE_EVENT_VERIFY_KEYS_DIR
  value: /etc/elevate/event-keys
{{- if has .service $data.signers }}
- name: ELEVATE_EVENT_SIGNING_KEY_FILE
  value: /etc/elevate/event-key/private.pem
{{- end }}
{{- with $v.config.otlpEndpoint }}
- name: ELEVATE_OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- if eq .service "request-api" }}
- name: ELEVATE_PORTAL_BASE_URL
  value: {{ $v.portal.baseUrl | quote }}
- name: ELEVATE_PORTAL_CLIENT_ID
  value: {{ $v.portal.clientId | quote }}
{{- if $v.portal.clientSecret.secretName }}
- name: ELEVATE_PORTAL_CLIENT_SECRET_FILE
  value: /etc/elevate/secrets/portal-client/{{ $v.portal.clientSecret.key }}
{{- end }}
{{- end }}
{{- if and (eq .service "notifier") $v.portal.baseUrl }}
- name: ELEVATE_PORTAL_URL
  value: {{ $v.portal.baseUrl | quote }}
{{- end }}
{{- range $name, $value := $v.config.extraEnv }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- range $name, $value := (index $v.services .service).env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- range $i, $f := $v.secretFiles }}
{{- if eq $f.service $.service }}
- name: {{ $f.env }}
  value: /etc/elevate/secrets/file-{{ $i }}/{{ $f.key }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Volumes of one service's pod: (dict "root" $ "service" …) */}}
{{- define "elevate.serviceVolumes" -}}
{{- $v := .root.Values -}}
{{- $data := include "elevate.data" .root | fromJson -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
- name: database
  secret:
    secretName: {{ $v.database.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ .service }}
        path: url
- name: policy
  configMap:
    name: {{ $v.policy.existingConfigMap | default (printf "%s-policy" (include "elevate.fullname" .root)) }}
- name: event-public-keys
  configMap:
    name: {{ $v.eventKeys.publicKeysConfigMap }}
{{- if has .service $data.signers }}
{{- $key := index $v.eventKeys.signingKeySecrets .service }}
- name: event-signing-key
  secret:
    secretName: {{ $key.name }}
    defaultMode: 0440
    items:
      - key: {{ $key.key }}
        path: private.pem
{{- end }}
{{- include "elevate.kafkaVolumes" (dict "root" .root "principal" .service) }}
{{- if and (eq .service "request-api") $v.portal.clientSecret.secretName }}
- name: portal-client
  secret:
    secretName: {{ $v.portal.clientSecret.secretName }}
    defaultMode: 0440
    items:
      - key: {{ $v.portal.clientSecret.key }}
        path: {{ $v.portal.clientSecret.key }}
{{- end }}
{{- range $i, $f := $v.secretFiles }}
{{- if eq $f.service $.service }}
- name: file-{{ $i }}
  secret:
    secretName: {{ $f.secretName }}
    defaultMode: 0440
    items:
      - key: {{ $f.key }}
        path: {{ $f.key }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "elevate.serviceMounts" -}}
{{- $v := .root.Values -}}
{{- $data := include "elevate.data" .root | fromJson -}}
- name: tmp
  mountPath: /tmp
- name: database
  mountPath: /etc/elevate/database
  readOnly: true
# A directory, not a subPath: the kubelet then swaps in a changed policy, and the
# services' watcher reloads it without a restart.
- name: policy
  mountPath: /etc/elevate/policy
  readOnly: true
- name: event-public-keys
  mountPath: /etc/elevate/event-keys
  readOnly: true
{{- if has .service $data.signers }}
- name: event-signing-key
  mountPath: /etc/elevate/event-key
  readOnly: true
{{- end }}
{{- include "elevate.kafkaMounts" (dict "root" .root "principal" .service) }}
{{- if and (eq .service "request-api") $v.portal.clientSecret.secretName }}
- name: portal-client
  mountPath: /etc/elevate/secrets/portal-client
  readOnly: true
{{- end }}
{{- range $i, $f := $v.secretFiles }}
{{- if eq $f.service $.service }}
- name: file-{{ $i }}
  mountPath: /etc/elevate/secrets/file-{{ $i }}
  readOnly: true
{{- end }}
{{- end }}
{{- end -}}
