{{/*
Helpers shared by every chart of the appliance. The file is identical in each chart
(tests/integration/test_appliance_content.py checks it), so edit all copies together.
*/}}

{{/* Chart name, overridable with nameOverride. */}}
{{- define "appliance.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Object names: the release name (Flux names releases after their HelmRelease), overridable. */}}
{{- define "appliance.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "appliance.selectorLabels" -}}
app.kubernetes.io/name: {{ include "appliance.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "appliance.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "appliance.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: alga-appliance
{{- end -}}

{{/*
The container image. There is deliberately no default tag: the release pins it through the
profile values, so a render without it fails here instead of pulling something unpinned.
*/}}
{{- define "appliance.image" -}}
{{- $repository := required "image.repository is required" .Values.image.repository -}}
{{- $tag := required "image.tag is required: set it to the tag the release pins (no default, never latest)" .Values.image.tag | toString -}}
{{- if eq $tag "latest" -}}
{{- fail "image.tag must not be latest: set the tag the release pins" -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" $repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Pod-level hardening; only the IDs and fsGroup come from values, and they must not be root. */}}
{{- define "appliance.podSecurityContext" -}}
{{- $sc := .Values.securityContext -}}
{{- if or (le (int $sc.runAsUser) 0) (le (int $sc.runAsGroup) 0) -}}
{{- fail "securityContext.runAsUser and runAsGroup must be non-zero" -}}
{{- end -}}
runAsNonRoot: true
runAsUser: {{ int $sc.runAsUser }}
runAsGroup: {{ int $sc.runAsGroup }}
fsGroup: {{ int (default $sc.runAsGroup $sc.fsGroup) }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level hardening; readOnlyRootFilesystem is the only knob (off for images that write into their tree). */}}
{{- define "appliance.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: {{ if hasKey .Values.securityContext "readOnlyRootFilesystem" }}{{ .Values.securityContext.readOnlyRootFilesystem }}{{ else }}true{{ end }}
runAsNonRoot: true
capabilities:
  drop:
    - ALL
{{- end -}}

{{/* emptyDir volumes for the paths the container writes to (its root filesystem may be read-only). */}}
{{- define "appliance.scratchVolumes" -}}
{{- $volumes := list -}}
{{- range $i, $path := .Values.scratchDirs -}}
{{- $volumes = append $volumes (dict "name" (printf "scratch-%d" $i) "emptyDir" (dict)) -}}
{{- end -}}
{{- with $volumes }}{{ toYaml . }}{{ end -}}
{{- end -}}

{{- define "appliance.scratchMounts" -}}
{{- $mounts := list -}}
{{- range $i, $path := .Values.scratchDirs -}}
{{- $mounts = append $mounts (dict "name" (printf "scratch-%d" $i) "mountPath" $path) -}}
{{- end -}}
{{- with $mounts }}{{ toYaml . }}{{ end -}}
{{- end -}}
