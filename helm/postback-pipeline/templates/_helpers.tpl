{{/*
Names and labels. Every helper is prefixed with the chart name.
*/}}
{{- define "postback-pipeline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<chart>, or the release name when it already contains the chart name. */}}
{{- define "postback-pipeline.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The name of one component's resources: <fullname>-<component>, within 63 characters.
Also the `job` label of its series (see the ServiceMonitor/PodMonitor jobLabel). */}}
{{- define "postback-pipeline.componentName" -}}
{{- printf "%s-%s" (include "postback-pipeline.fullname" .root | trunc 52 | trimSuffix "-") .component }}
{{- end }}

{{- define "postback-pipeline.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "postback-pipeline.selectorLabels" -}}
app.kubernetes.io/name: {{ include "postback-pipeline.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "postback-pipeline.labels" -}}
helm.sh/chart: {{ include "postback-pipeline.chart" . }}
{{ include "postback-pipeline.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: postback-pipeline
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component; args: dict "root" $ "component" "edge". */}}
{{- define "postback-pipeline.componentSelectorLabels" -}}
{{ include "postback-pipeline.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Labels of one component's resources and pods; `postback-pipeline/job` is the job label. */}}
{{- define "postback-pipeline.componentLabels" -}}
{{ include "postback-pipeline.labels" .root }}
app.kubernetes.io/component: {{ .component }}
postback-pipeline/job: {{ include "postback-pipeline.componentName" . }}
{{- end }}

{{- define "postback-pipeline.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "postback-pipeline.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "postback-pipeline.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The container port of a component. */}}
{{- define "postback-pipeline.port" -}}
{{- (get .root.Values .component).port }}
{{- end }}

{{/* The edge's terminationGracePeriodSeconds: the preStop wait, the drain, and a margin for
the process to exit after its drain timeout. */}}
{{- define "postback-pipeline.edgeGracePeriod" -}}
{{- add .Values.edge.preStopSleepSeconds .Values.edge.drainTimeoutSeconds 5 }}
{{- end }}

{{/* The distinct ports of the bootstrap servers, for the NetworkPolicy's egress. */}}
{{- define "postback-pipeline.kafkaPorts" -}}
{{- $ports := list }}
{{- range splitList "," .Values.kafka.bootstrapServers }}
{{- $port := regexFind "[0-9]+$" (trim .) }}
{{- if not $port }}
{{- fail (printf "kafka.bootstrapServers: %q has no port (host:port[,host:port...])" (trim .)) }}
{{- end }}
{{- $ports = append $ports (int $port) }}
{{- end }}
{{- toJson (uniq $ports) }}
{{- end }}

{{/* "true" when edge.allowedCidrs admits every address (a /0 network), else empty. */}}
{{- define "postback-pipeline.edgeAdmitsEveryAddress" -}}
{{- range .Values.edge.allowedCidrs }}
{{- if regexMatch "/0+$" (trim .) }}true{{ break }}{{ end }}
{{- end }}
{{- end }}

{{/* Settings the schema cannot check alone. Fails the render with the value's name. */}}
{{- define "postback-pipeline.validate" -}}
{{- $edge := .Values.edge }}
{{- if and (include "postback-pipeline.edgeAdmitsEveryAddress" .) (not $edge.basicAuth.existingSecret) (not $edge.allowAnySender) }}
{{- fail "edge: anyone could post forged postbacks. Set edge.allowedCidrs to the provider's addresses (narrower than 0.0.0.0/0 and ::/0), or edge.basicAuth.existingSecret to a Secret with the Basic credentials of the provider's postback URL, or edge.allowAnySender=true to accept postbacks from any address without credentials" }}
{{- end }}
{{- $kafka := .Values.kafka }}
{{- if hasPrefix "SASL" $kafka.securityProtocol }}
{{- if not $kafka.sasl.existingSecret }}
{{- fail (printf "kafka.sasl.existingSecret: required with kafka.securityProtocol=%s (the Secret holding the SASL password)" $kafka.securityProtocol) }}
{{- end }}
{{- if and (not $kafka.sasl.username) (not $kafka.sasl.usernameKey) }}
{{- fail "kafka.sasl.username or kafka.sasl.usernameKey: one is required with SASL" }}
{{- end }}
{{- end }}
{{- if and (or $kafka.tls.caSecret $kafka.tls.clientCertSecret) (not (has $kafka.securityProtocol (list "SSL" "SASL_SSL"))) }}
{{- fail (printf "kafka.tls: CA or client certificate given, but kafka.securityProtocol=%s does not use TLS (SSL or SASL_SSL)" $kafka.securityProtocol) }}
{{- end }}
{{- if and .Values.tests.enabled .Values.edge.sources (not (has .Values.tests.source .Values.edge.sources)) }}
{{- fail (printf "tests.source: %q is not in edge.sources, so the helm test would get 404; add it there, or set tests.source to one of them" .Values.tests.source) }}
{{- end }}
{{- if and .Values.monitoring.serviceMonitor.enabled .Values.monitoring.podMonitor.enabled }}
{{- fail "monitoring: enable serviceMonitor or podMonitor, not both (every series would be scraped twice)" }}
{{- end }}
{{- if gt (int .Values.edge.answerDeadlineSeconds) 9 }}
{{- fail "edge.answerDeadlineSeconds: must stay below the provider's 10 s timeout" }}
{{- end }}
{{- if gt (int .Values.edge.headerTimeoutSeconds) 9 }}
{{- fail "edge.headerTimeoutSeconds: must stay below the provider's 10 s timeout" }}
{{- end }}
{{- include "postback-pipeline.validateEventsPrivacy" . }}
{{- end }}

{{/* Privacy is the default, so the pseudonym key is required unless turned off explicitly. */}}
{{- define "postback-pipeline.validateEventsPrivacy" -}}
{{- $privacy := .Values.eventsPrivacy }}
{{- if $privacy.pseudonymiseNumbers }}
{{- if not (or $privacy.pseudonymKey.existingSecret $privacy.pseudonymKey.value) }}
{{- fail "eventsPrivacy.pseudonymKey: set existingSecret (a Secret holding EVENTS_PSEUDONYM_KEY, at least 32 characters, e.g. openssl rand -hex 32) or value; or set eventsPrivacy.pseudonymiseNumbers=false to publish subscribers' numbers as given" }}
{{- end }}
{{- if and (not $privacy.pseudonymKey.existingSecret) (lt (len $privacy.pseudonymKey.value) 32) }}
{{- fail "eventsPrivacy.pseudonymKey.value: must be at least 32 characters (e.g. openssl rand -hex 32)" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The Secret holding the pseudonym key: the operator's, or the one the chart renders. */}}
{{- define "postback-pipeline.pseudonymKeySecret" -}}
{{- default (printf "%s-events-privacy" (include "postback-pipeline.fullname" .)) .Values.eventsPrivacy.pseudonymKey.existingSecret }}
{{- end }}

{{/* Environment shared by every service: Kafka access, topics, logging. */}}
{{- define "postback-pipeline.kafkaEnv" -}}
{{- $kafka := .Values.kafka }}
{{- $topics := $kafka.topics -}}
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ $kafka.bootstrapServers | quote }}
- name: KAFKA_SECURITY_PROTOCOL
  value: {{ $kafka.securityProtocol | quote }}
{{- if hasPrefix "SASL" $kafka.securityProtocol }}
- name: KAFKA_SASL_MECHANISM
  value: {{ $kafka.sasl.mechanism | quote }}
- name: KAFKA_SASL_USERNAME
{{- if $kafka.sasl.usernameKey }}
  valueFrom:
    secretKeyRef:
      name: {{ $kafka.sasl.existingSecret }}
      key: {{ $kafka.sasl.usernameKey }}
{{- else }}
  value: {{ $kafka.sasl.username | quote }}
{{- end }}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $kafka.sasl.existingSecret }}
      key: {{ $kafka.sasl.passwordKey }}
{{- end }}
{{- if $kafka.tls.caSecret }}
- name: KAFKA_SSL_CAFILE
  value: /etc/postback-pipeline/kafka-ca/ca.crt
{{- end }}
{{- if $kafka.tls.clientCertSecret }}
- name: KAFKA_SSL_CERTFILE
  value: /etc/postback-pipeline/kafka-client/tls.crt
- name: KAFKA_SSL_KEYFILE
  value: /etc/postback-pipeline/kafka-client/tls.key
{{- end }}
- name: KAFKA_STARTUP_TIMEOUT_SECONDS
  value: {{ $kafka.startupTimeoutSeconds | int64 | quote }}
- name: KAFKA_CREATE_TOPICS
  value: {{ and $topics.create (not .Values.strimzi.kafkaTopics.enabled) | quote }}
- name: KAFKA_TOPIC_REPLICATION_FACTOR
  value: {{ $topics.replicationFactor | int64 | quote }}
{{- range $kind := list "raw" "events" "dlq" }}
{{- $topic := get $topics $kind }}
- name: KAFKA_TOPIC_{{ upper $kind }}
  value: {{ $topic.name | quote }}
- name: KAFKA_TOPIC_{{ upper $kind }}_PARTITIONS
  value: {{ $topic.partitions | int64 | quote }}
- name: KAFKA_TOPIC_{{ upper $kind }}_RETENTION_MS
  value: {{ $topic.retentionMs | int64 | quote }}
{{- end }}
- name: LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
{{- end }}

{{/* The environment of one component: its own settings, then the shared Kafka ones. */}}
{{- define "postback-pipeline.env" -}}
{{- $root := .root }}
{{- if eq .component "edge" }}
{{- $edge := $root.Values.edge -}}
- name: EDGE_HOST
  value: "0.0.0.0"
- name: EDGE_PORT
  value: {{ $edge.port | int64 | quote }}
- name: EDGE_ANSWER_DEADLINE_SECONDS
  value: {{ $edge.answerDeadlineSeconds | quote }}
- name: EDGE_MAX_BODY_BYTES
  value: {{ $edge.maxBodyBytes | int64 | quote }}
- name: EDGE_MAX_HEADER_BYTES
  value: {{ $edge.maxHeaderBytes | int64 | quote }}
- name: EDGE_HEADER_TIMEOUT_SECONDS
  value: {{ $edge.headerTimeoutSeconds | quote }}
- name: EDGE_ALLOWED_CIDRS
  value: {{ join "," $edge.allowedCidrs | quote }}
- name: EDGE_TRUSTED_PROXIES
  value: {{ join "," $edge.trustedProxies | quote }}
- name: EDGE_SOURCES
  value: {{ join "," $edge.sources | quote }}
{{- if $edge.allowAnySender }}
- name: EDGE_ALLOW_ANY_SENDER
  value: "true"
{{- end }}
{{- if $edge.basicAuth.existingSecret }}
- name: EDGE_BASIC_AUTH_USER
  valueFrom:
    secretKeyRef:
      name: {{ $edge.basicAuth.existingSecret }}
      key: {{ $edge.basicAuth.userKey }}
- name: EDGE_BASIC_AUTH_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $edge.basicAuth.existingSecret }}
      key: {{ $edge.basicAuth.passwordKey }}
{{- end }}
- name: EDGE_KEEPALIVE_TIMEOUT_SECONDS
  value: {{ $edge.keepaliveTimeoutSeconds | int64 | quote }}
- name: EDGE_MAX_CONNECTIONS
  value: {{ $edge.maxConnections | int64 | quote }}
- name: EDGE_RETRY_AFTER_SECONDS
  value: {{ $edge.retryAfterSeconds | int64 | quote }}
- name: EDGE_PROVIDER_RETRY_HORIZON_SECONDS
  value: {{ $edge.providerRetryHorizonSeconds | int64 | quote }}
- name: EDGE_DRAIN_TIMEOUT_SECONDS
  value: {{ $edge.drainTimeoutSeconds | int64 | quote }}
# The preStop hook already waited for the endpoints to drop this pod.
- name: EDGE_SHUTDOWN_DELAY_SECONDS
  value: "0"
{{- else if eq .component "processor" }}
{{- $processor := $root.Values.processor -}}
- name: PROCESSOR_HOST
  value: "0.0.0.0"
- name: PROCESSOR_PORT
  value: {{ $processor.port | int64 | quote }}
- name: PROCESSOR_GROUP_ID
  value: {{ $processor.groupId | quote }}
- name: PROCESSOR_TRANSACTIONAL_ID_PREFIX
  value: {{ $processor.transactionalIdPrefix | quote }}
- name: PROCESSOR_COMMIT_INTERVAL_MS
  value: {{ $processor.commitIntervalMs | int64 | quote }}
- name: PROCESSOR_COMMIT_MAX_RECORDS
  value: {{ $processor.commitMaxRecords | int64 | quote }}
- name: PROCESSOR_SESSION_TIMEOUT_MS
  value: {{ $processor.sessionTimeoutMs | int64 | quote }}
- name: KAFKA_TOPIC_STATE
  value: {{ $root.Values.kafka.topics.state.name | quote }}
- name: DEDUPE_WINDOW_SECONDS
  value: {{ $processor.dedupeWindowSeconds | int64 | quote }}
- name: DEDUPE_MAX_KEYS
  value: {{ $processor.dedupeMaxKeys | int64 | quote }}
- name: DEDUPE_IDENTITY_FIELDS
  value: {{ join "," $processor.dedupeIdentityFields | quote }}
- name: LATENCY_MAX_AGE_SECONDS
  value: {{ $processor.latencyMaxAgeSeconds | int64 | quote }}
{{- $privacy := $root.Values.eventsPrivacy }}
- name: EVENTS_PSEUDONYMISE_NUMBERS
  value: {{ $privacy.pseudonymiseNumbers | quote }}
- name: EVENTS_INCLUDE_CONTENT
  value: {{ $privacy.includeContent | quote }}
{{- if $privacy.pseudonymiseNumbers }}
- name: EVENTS_PSEUDONYM_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "postback-pipeline.pseudonymKeySecret" $root }}
      key: {{ $privacy.pseudonymKey.secretKey }}
{{- end }}
{{- else }}
{{- $metrics := $root.Values.metrics -}}
- name: METRICS_HOST
  value: "0.0.0.0"
- name: METRICS_PORT
  value: {{ $metrics.port | int64 | quote }}
- name: METRICS_GROUP_ID
  value: {{ $metrics.groupId | quote }}
- name: METRICS_TOP_OPERATORS
  value: {{ $metrics.topOperators | int64 | quote }}
- name: METRICS_TOP_COUNTRIES
  value: {{ $metrics.topCountries | int64 | quote }}
- name: METRICS_AUTO_OFFSET_RESET
  value: {{ $metrics.autoOffsetReset | quote }}
{{- end }}
{{ include "postback-pipeline.kafkaEnv" $root }}
{{- with (get $root.Values .component).extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The pod template every workload shares; args: dict "root" $ "component" "edge"|"processor"|"metrics".
Probes: /healthz for liveness, /readyz for readiness, and a startup probe that allows for
KAFKA_STARTUP_TIMEOUT_SECONDS (the edge serves nothing until Kafka answered).
*/}}
{{- define "postback-pipeline.podTemplate" -}}
{{- $root := .root }}
{{- $values := get $root.Values .component }}
{{- $kafka := $root.Values.kafka -}}
metadata:
  labels:
    {{- include "postback-pipeline.componentLabels" . | nindent 4 }}
    {{- with $values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $values.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "postback-pipeline.serviceAccountName" $root }}
  automountServiceAccountToken: false
  enableServiceLinks: false
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if eq .component "edge" }}
  terminationGracePeriodSeconds: {{ include "postback-pipeline.edgeGracePeriod" $root }}
  {{- else }}
  terminationGracePeriodSeconds: {{ $values.terminationGracePeriodSeconds }}
  {{- end }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  containers:
    - name: {{ .component }}
      image: {{ include "postback-pipeline.image" $root | quote }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      # The image's entrypoint is `postback-pipeline`; its commands are named as the components.
      args: [{{ .component | quote }}]
      env:
        {{- include "postback-pipeline.env" . | nindent 8 }}
      ports:
        - name: http
          containerPort: {{ $values.port }}
          protocol: TCP
      startupProbe:
        httpGet:
          path: /healthz
          port: http
        periodSeconds: 5
        failureThreshold: {{ add (div $kafka.startupTimeoutSeconds 5) 6 }}
      # Lenient: a pod busy at full CPU (or rebuilding dedupe state) must not be killed for a
      # slow answer; only a process that stopped answering for a minute is restarted.
      livenessProbe:
        httpGet:
          path: /healthz
          port: http
        periodSeconds: 10
        timeoutSeconds: 5
        failureThreshold: 6
      readinessProbe:
        httpGet:
          path: /readyz
          port: http
        periodSeconds: 5
        timeoutSeconds: 2
        failureThreshold: 2
      {{- if eq .component "edge" }}
      lifecycle:
        preStop:
          sleep:
            seconds: {{ $values.preStopSleepSeconds }}
      {{- end }}
      resources:
        {{- toYaml $values.resources | nindent 8 }}
      securityContext:
        {{- toYaml $root.Values.containerSecurityContext | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        {{- if $kafka.tls.caSecret }}
        - name: kafka-ca
          mountPath: /etc/postback-pipeline/kafka-ca
          readOnly: true
        {{- end }}
        {{- if $kafka.tls.clientCertSecret }}
        - name: kafka-client
          mountPath: /etc/postback-pipeline/kafka-client
          readOnly: true
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- if $kafka.tls.caSecret }}
    - name: kafka-ca
      secret:
        secretName: {{ $kafka.tls.caSecret }}
        defaultMode: 0440
        items:
          - key: {{ $kafka.tls.caKey }}
            path: ca.crt
    {{- end }}
    {{- if $kafka.tls.clientCertSecret }}
    - name: kafka-client
      secret:
        secretName: {{ $kafka.tls.clientCertSecret }}
        defaultMode: 0440
        items:
          - key: {{ $kafka.tls.certKey }}
            path: tls.crt
          - key: {{ $kafka.tls.keyKey }}
            path: tls.key
    {{- end }}
  {{- if $values.topologySpread.enabled }}
  topologySpreadConstraints:
    {{- range $values.topologySpread.topologyKeys }}
    - maxSkew: {{ $values.topologySpread.maxSkew }}
      topologyKey: {{ . }}
      whenUnsatisfiable: {{ $values.topologySpread.whenUnsatisfiable }}
      labelSelector:
        matchLabels:
          {{- include "postback-pipeline.componentSelectorLabels" $ | nindent 10 }}
      matchLabelKeys: ["pod-template-hash"]
    {{- end }}
  {{- end }}
  {{- with $values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/*
How long the processor's state topic keeps records: what a rebuild looks back (the dedupe
window and the latency join's age, each plus a quarter for the slot being filled, the window
plus the provider's 30 minutes of retries), plus an hour. As consumers/changelog.py computes it.
*/}}
{{- define "postback-pipeline.stateRetentionMs" -}}
{{- $p := .Values.processor -}}
{{- $window := add (div (mul $p.dedupeWindowSeconds 5) 4) 1800 -}}
{{- $latency := div (mul $p.latencyMaxAgeSeconds 5) 4 -}}
{{- mul (add (max $window $latency) 3600) 1000 -}}
{{- end }}
