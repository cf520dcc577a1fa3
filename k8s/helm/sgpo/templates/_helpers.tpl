{{/* Names, labels, images and the wiring every service shares. */}}

{{- define "sgpo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sgpo.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "sgpo.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "sgpo.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Ports inside the pods (the same as docker-compose.yml). */}}
{{- define "sgpo.ports" -}}
generator: {grpc: 50051, http: 8000, metrics: 9101}
verifier: {grpc: 50052, metrics: 9102}
judge: {grpc: 50053, http: 8080, metrics: 9103}
orchestrator: {grpc: 50054, metrics: 9104}
trainer: {grpc: 50055, metrics: 9105}
{{- end -}}

{{- define "sgpo.port" -}}
{{- $ports := include "sgpo.ports" .root | fromYaml -}}
{{- index (index $ports .component) .kind -}}
{{- end -}}

{{- define "sgpo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sgpo.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "sgpo.labels" -}}
{{ include "sgpo.selectorLabels" . }}
app.kubernetes.io/part-of: sgpo
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{- if not .root.Values.plainManifests }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end }}
{{- end -}}

{{- define "sgpo.image" -}}
{{- $img := index .root.Values.images .image -}}
{{- printf "%s:%s" $img.repository (default .root.Chart.AppVersion $img.tag) -}}
{{- end -}}

{{- define "sgpo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sgpo.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sgpo.secretName" -}}
{{- default (printf "%s-secrets" (include "sgpo.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "sgpo.dataClaim" -}}
{{- default (printf "%s-data" (include "sgpo.fullname" .)) .Values.data.existingClaim -}}
{{- end -}}

{{- define "sgpo.redisUrl" -}}
{{- if .Values.redis.enabled -}}
{{- printf "redis://%s-redis:6379/0" (include "sgpo.fullname" .) -}}
{{- else -}}
{{- required "redis.enabled is false: set redis.externalUrl (redis://host:6379/0)" .Values.redis.externalUrl -}}
{{- end -}}
{{- end -}}

{{/* host:port of a component's gRPC Service: (dict "root" $ "component" "generator") */}}
{{- define "sgpo.target" -}}
{{- printf "%s-%s:%s" (include "sgpo.fullname" .root) .component (include "sgpo.port" (dict "root" .root "component" .component "kind" "grpc")) -}}
{{- end -}}

{{/* Every generator replica's gRPC address, comma-separated: the StatefulSet's pods one by one through its
headless Service, so the orchestrator balances them and the trainer sends each its weights. */}}
{{- define "sgpo.generatorTargets" -}}
{{- $full := include "sgpo.fullname" . -}}
{{- $port := include "sgpo.port" (dict "root" . "component" "generator" "kind" "grpc") -}}
{{- $out := list -}}
{{- range $i := until (int .Values.generator.replicas) -}}
{{- $out = append $out (printf "%s-generator-%d.%s-generator-pods:%s" $full $i $full $port) -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}

{{/* The trainer's command: torchrun with one process per GPU (several nodes: the LeaderWorkerSet's group),
else the image's entrypoint. Rank 0 serves gRPC and metrics; `--no-python sgpo` runs the console script. */}}
{{- define "sgpo.trainerCommand" -}}
{{- $v := .Values.trainer -}}
{{- if gt (int $v.nodes) 1 }}
command:
  - torchrun
  - --nnodes=$(LWS_GROUP_SIZE)
  - --node-rank=$(LWS_WORKER_INDEX)
  - --nproc-per-node={{ max 1 (int $v.gpus) }}
  - --master-addr=$(LWS_LEADER_ADDRESS)
  - --master-port={{ $v.masterPort }}
  - --no-python
  - sgpo
{{- else if gt (int $v.gpus) 1 }}
command: [torchrun, --standalone, --nproc-per-node={{ int $v.gpus }}, --no-python, sgpo]
{{- end }}
{{- end -}}

{{- define "sgpo.policyPath" -}}
{{- if .Values.tinyPolicy.enabled -}}/data/policy{{- else -}}{{ .Values.models.policyPath }}{{- end -}}
{{- end -}}

{{- define "sgpo.datasetPath" -}}
{{- if .Values.tinyPolicy.enabled -}}/data/tasks/train_problems.jsonl{{- else -}}{{ .Values.dataset.path }}{{- end -}}
{{- end -}}

{{/* Environment every sgpo service gets: bind address, ports, log level. */}}
{{- define "sgpo.baseEnv" -}}
{{- $P := printf "SGPO_%s__" (upper .component) -}}
- name: {{ $P }}HOST
  value: "0.0.0.0"
- name: {{ $P }}PORT
  value: {{ include "sgpo.port" (dict "root" .root "component" .component "kind" "grpc") | quote }}
- name: {{ $P }}METRICS_PORT
  value: {{ include "sgpo.port" (dict "root" .root "component" .component "kind" "metrics") | quote }}
- name: {{ $P }}LOG_LEVEL
  value: {{ .root.Values.logLevel | quote }}
- name: SGPO_SERVICE_TOKEN
  valueFrom:
    secretKeyRef: {name: {{ include "sgpo.secretName" .root }}, key: service-token}
{{- end -}}

{{/* The Redis password, for the services that use Redis (orchestrator, trainer) and Redis itself. */}}
{{- define "sgpo.redisPasswordEnv" -}}
- name: SGPO_REDIS_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "sgpo.secretName" . }}, key: redis-password{{ if not .Values.redis.enabled }}, optional: true{{ end }}}
{{- end -}}

{{- define "sgpo.containerPorts" -}}
{{- $ports := include "sgpo.ports" .root | fromYaml -}}
{{- range $name, $port := index $ports .component }}
- name: {{ $name }}
  containerPort: {{ $port }}
  protocol: TCP
{{- end }}
{{- end -}}

{{/* gRPC health probes (grpc.health.v1) on the service's own port. */}}
{{- define "sgpo.probes" -}}
{{- $port := include "sgpo.port" (dict "root" .root "component" .component "kind" "grpc") | int -}}
startupProbe:
  grpc: {port: {{ $port }}}
  periodSeconds: 10
  failureThreshold: {{ .startupFailures | default 30 }}
readinessProbe:
  grpc: {port: {{ $port }}}
  periodSeconds: 10
  failureThreshold: 3
livenessProbe:
  grpc: {port: {{ $port }}}
  periodSeconds: 20
  timeoutSeconds: 5
  failureThreshold: 6
{{- end -}}

{{- define "sgpo.configVolume" -}}
- name: config
  configMap:
    name: {{ include "sgpo.fullname" . }}-config
{{- end -}}

{{- define "sgpo.configMount" -}}
- name: config
  mountPath: /etc/sgpo
  readOnly: true
{{- end -}}

{{- define "sgpo.dataVolumes" -}}
- name: data
  persistentVolumeClaim:
    claimName: {{ include "sgpo.dataClaim" . }}
{{- if .Values.models.existingClaim }}
- name: models
  persistentVolumeClaim:
    claimName: {{ .Values.models.existingClaim }}
    readOnly: true
{{- end }}
{{- end -}}

{{- define "sgpo.dataMounts" -}}
- name: data
  mountPath: /data
{{- if .Values.models.existingClaim }}
- name: models
  mountPath: /models
  readOnly: true
{{- end }}
{{- end -}}

{{- define "sgpo.shmVolume" -}}
- name: shm
  emptyDir:
    medium: Memory
    sizeLimit: {{ . }}
{{- end -}}

{{/* initContainer that waits until the tiny-policy Job has written the policy and the task data. */}}
{{- define "sgpo.waitForTinyPolicy" -}}
{{- if .Values.tinyPolicy.enabled }}
initContainers:
  - name: wait-for-policy
    image: {{ include "sgpo.image" (dict "root" . "image" "light") }}
    imagePullPolicy: {{ .Values.images.pullPolicy }}
    command: ["sh", "-c", "until [ -f /data/policy/pretrain.json ] && [ -f /data/tasks/train_problems.jsonl ]; do echo waiting for the tiny policy; sleep 5; done"]
    securityContext: {{- toYaml .Values.securityContext | nindent 6 }}
    volumeMounts:
      - name: data
        mountPath: /data
        readOnly: true
{{- end }}
{{- end -}}

{{- define "sgpo.podCommon" -}}
serviceAccountName: {{ include "sgpo.serviceAccountName" . }}
securityContext: {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "sgpo.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* requests/limits with N nvidia.com/gpu added */}}
{{- define "sgpo.resources" -}}
{{- $res := deepCopy (default dict .resources) -}}
{{- if gt (int (default 0 .gpus)) 0 -}}
{{- $limits := default dict $res.limits -}}
{{- $_ := set $limits "nvidia.com/gpu" (int .gpus) -}}
{{- $_ := set $res "limits" $limits -}}
{{- end -}}
{{- toYaml $res -}}
{{- end -}}

{{/* A ClusterIP Service exposing a component's ports by name (grpc, http, metrics). */}}
{{- define "sgpo.service" -}}
{{- $ports := include "sgpo.ports" .root | fromYaml -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "sgpo.fullname" .root }}-{{ .component }}
  labels: {{- include "sgpo.labels" . | nindent 4 }}
spec:
  selector: {{- include "sgpo.selectorLabels" . | nindent 4 }}
  ports:
  {{- range $name, $port := index $ports .component }}
    - name: {{ $name }}
      port: {{ $port }}
      targetPort: {{ $name }}
      {{- if eq $name "grpc" }}
      appProtocol: grpc
      {{- end }}
  {{- end }}
{{- end -}}
