{{/* Names and labels shared by every template. */}}

{{- define "canary-qwen.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "canary-qwen.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Component resource name: <fullname>-<component>, within 63 characters. */}}
{{- define "canary-qwen.componentName" -}}
{{- printf "%s-%s" (include "canary-qwen.fullname" .root | trunc (int (sub 62 (len .component))) | trimSuffix "-") .component -}}
{{- end -}}

{{- define "canary-qwen.selectorLabels" -}}
app.kubernetes.io/name: {{ include "canary-qwen.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "canary-qwen.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{ include "canary-qwen.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: {{ include "canary-qwen.name" .root }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "canary-qwen.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "canary-qwen.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "canary-qwen.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* The model volume's claim. */}}
{{- define "canary-qwen.modelClaim" -}}
{{- default (include "canary-qwen.componentName" (dict "root" . "component" "models")) .Values.model.persistence.existingClaim -}}
{{- end -}}

{{/* Where the launcher and the entrypoint find the filled repository. */}}
{{- define "canary-qwen.repositoryDir" -}}
{{- printf "%s/%s" (trimSuffix "/" .Values.model.mountPath) .Values.model.repositorySubdir -}}
{{- end -}}

{{/* Pod security context: the global one with the component's over it. */}}
{{- define "canary-qwen.podSecurityContext" -}}
{{- toYaml (merge (deepCopy .component) (deepCopy .root.Values.podSecurityContext)) -}}
{{- end -}}

{{/* Secret with the gateway's API keys (created or existing). */}}
{{- define "canary-qwen.apiKeysSecret" -}}
{{- default (include "canary-qwen.componentName" (dict "root" . "component" "api-keys")) .Values.gateway.auth.existingSecret -}}
{{- end -}}

{{- define "canary-qwen.apiKeysSecretKey" -}}
{{- if .Values.gateway.auth.existingSecret -}}
{{- .Values.gateway.auth.existingSecretKey -}}
{{- else -}}
api-keys
{{- end -}}
{{- end -}}

{{- define "canary-qwen.authEnabled" -}}
{{- if or .Values.gateway.auth.existingSecret .Values.gateway.auth.apiKeys -}}true{{- end -}}
{{- end -}}

{{/* Scheduling shared by Triton and the export Job: engines are built for the GPU they run on. */}}
{{- define "canary-qwen.gpuScheduling" -}}
{{- $selector := deepCopy .Values.triton.nodeSelector -}}
{{- if .Values.triton.gpu.product -}}
{{- $_ := set $selector "nvidia.com/gpu.product" .Values.triton.gpu.product -}}
{{- end -}}
{{- with $selector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.triton.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.triton.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.triton.runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- end -}}
