{{/*
Base name of every object: the release name (or fullnameOverride), cut to 40 characters so that names KServe
derives from the InferenceService (<name>-predictor-00001-deployment-<hash>) stay within 63.
*/}}
{{- define "slipway.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "slipway.monitorName" -}}
{{- printf "%s-monitor" (include "slipway.fullname" .) -}}
{{- end -}}

{{- define "slipway.mlflowName" -}}
{{- printf "%s-mlflow" (include "slipway.fullname" .) -}}
{{- end -}}

{{- define "slipway.checkpointsName" -}}
{{- printf "%s-checkpoints" (include "slipway.fullname" .) -}}
{{- end -}}

{{- define "slipway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that never change for the life of a release: safe in selectors. */}}
{{- define "slipway.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "slipway.labels" -}}
{{ include "slipway.selectorLabels" . }}
helm.sh/chart: {{ include "slipway.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: slipway
slipway.dev/model: {{ .Values.model.name | quote }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels + selector labels of one component (monitor, mlflow, smoke-test, predictor). */}}
{{- define "slipway.componentLabels" -}}
{{ include "slipway.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "slipway.componentSelectorLabels" -}}
{{ include "slipway.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "slipway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "slipway.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "slipway.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}

{{/* In-cluster URL of the InferenceService: Serverless routes <name>.<ns>; raw deployments expose <name>-predictor. */}}
{{- define "slipway.inferenceUrl" -}}
{{- if .Values.smokeTest.url -}}
{{- .Values.smokeTest.url -}}
{{- else if has .Values.serving.deploymentMode (list "RawDeployment" "Standard") -}}
{{- printf "http://%s-predictor.%s.svc.cluster.local" (include "slipway.fullname" .) .Release.Namespace -}}
{{- else -}}
{{- printf "http://%s.%s.svc.cluster.local" (include "slipway.fullname" .) .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{- define "slipway.monitorEventsUrl" -}}
{{- printf "http://%s.%s.svc.cluster.local:%d/events" (include "slipway.monitorName" .) .Release.Namespace (int .Values.monitor.port) -}}
{{- end -}}

{{/* Pod-level and container-level security contexts shared by every pod of the chart. */}}
{{- define "slipway.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end -}}

{{- define "slipway.containerSecurityContext" -}}
{{ toYaml .Values.containerSecurityContext }}
{{- end -}}

{{- define "slipway.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Resources plus nvidia.com/gpu limits (extended resources: the request defaults to the limit). */}}
{{- define "slipway.resources" -}}
{{- $resources := deepCopy .resources -}}
{{- if gt (int .gpu) 0 -}}
{{- $_ := set $resources "limits" (merge (dict "nvidia.com/gpu" (int .gpu)) (default dict $resources.limits)) -}}
{{- end -}}
{{ toYaml $resources }}
{{- end -}}

{{/* The drift reference source: a PVC, a named ConfigMap, or by default the ConfigMap <fullname>-reference. */}}
{{- define "slipway.referenceVolume" -}}
{{- $ref := .Values.monitor.reference -}}
{{- if and $ref.configMap $ref.pvc -}}
{{- fail "monitor.reference: set configMap or pvc, not both" -}}
{{- end -}}
{{- if $ref.pvc -}}
persistentVolumeClaim:
  claimName: {{ $ref.pvc }}
  readOnly: true
{{- else -}}
configMap:
  name: {{ default (printf "%s-reference" (include "slipway.fullname" .)) $ref.configMap }}
{{- end -}}
{{- end -}}

{{- define "slipway.mlflowAllowedHosts" -}}
{{- $name := include "slipway.mlflowName" . -}}
{{- $ns := .Release.Namespace -}}
{{- $hosts := list -}}
{{- range list $name (printf "%s.%s" $name $ns) (printf "%s.%s.svc" $name $ns) (printf "%s.%s.svc.cluster.local" $name $ns) "localhost" -}}
{{- $hosts = append (append $hosts .) (printf "%s:*" .) -}}
{{- end -}}
{{- concat $hosts $.Values.mlflow.allowedHosts | join "," -}}
{{- end -}}

{{/* The explainer's command: `slipway serve` over the repository KServe's storage initializer puts in /mnt/models,
HTTP on 8080 (KServe's port for a custom explainer), every model file's digest checked. Kept equal to
slipway.cluster.kserve.explainer_command by tests/charts/test_explainer.py. */}}
{{- define "slipway.explainerCommand" -}}
- slipway
- serve
- /mnt/models
- --host
- 0.0.0.0
- --http-port
- "8080"
- --allow-metrics
- "false"
- --require-digest
{{- end -}}
