{{/* Environment shared by the application and its setup Job. */}}
{{- define "sebastian.env" -}}
- name: APP_HOSTNAME
  value: {{ required "hostname is required (the appliance's public host name)" .Values.hostname | quote }}
- name: NEXTAUTH_URL
  value: {{ printf "%s://%s" (ternary "https" "http" (and .Values.ingress.enabled (ne .Values.ingress.tlsSecretName ""))) .Values.hostname | quote }}
- name: DB_HOST
  value: {{ .Values.database.host | quote }}
- name: DB_PORT
  value: {{ .Values.database.port | quote }}
- name: DB_NAME
  value: {{ .Values.database.name | quote }}
- name: DB_USER
  value: {{ .Values.database.user | quote }}
- name: DB_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ required "database.existingSecret is required" .Values.database.existingSecret }}
      key: {{ .Values.database.passwordKey }}
- name: TEMPORAL_ADDRESS
  value: {{ .Values.temporal.address | quote }}
- name: TEMPORAL_NAMESPACE
  value: {{ .Values.temporal.namespace | quote }}
- name: EMAIL_SERVICE_URL
  value: {{ .Values.emailService.url | quote }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}
