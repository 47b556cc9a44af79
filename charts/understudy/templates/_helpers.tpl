{{/*
Chart name, used in app.kubernetes.io/name.
*/}}
{{- define "understudy.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Chart name and version, used in helm.sh/chart.
*/}}
{{- define "understudy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Object name of a component: the binary's name. Fixed, not release-prefixed, because the
scheduler name, the Lease names and the ClusterRoles are cluster-wide identities.
Usage: include "understudy.componentName" "scheduler"
*/}}
{{- define "understudy.componentName" -}}
{{- printf "understudy-%s" . -}}
{{- end -}}

{{/*
Labels common to every object.
*/}}
{{- define "understudy.labels" -}}
helm.sh/chart: {{ include "understudy.chart" . }}
app.kubernetes.io/name: {{ include "understudy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: understudy
{{- end -}}

{{/*
Labels of a component's objects.
Usage: include "understudy.componentLabels" (dict "ctx" $ "component" "scheduler")
*/}}
{{- define "understudy.componentLabels" -}}
{{ include "understudy.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
Selector labels of a component's pods (immutable once installed).
Usage: include "understudy.selectorLabels" (dict "ctx" $ "component" "scheduler")
*/}}
{{- define "understudy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "understudy.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
Container image reference.
*/}}
{{- define "understudy.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) -}}
{{- end -}}

{{/*
Logging flags shared by every binary (component-base).
*/}}
{{- define "understudy.logArgs" -}}
- --logging-format={{ .Values.logFormat }}
- --v={{ .Values.logLevel }}
{{- end -}}

{{/*
Checks on values shared by every component; fails the render with a clear message.
*/}}
{{- define "understudy.validate" -}}
{{- if not (has .Values.logFormat (list "text" "json")) -}}
{{- fail (printf "logFormat must be text or json, got %q" (toString .Values.logFormat)) -}}
{{- end -}}
{{- if not (regexMatch "^[0-9]+$" (toString .Values.logLevel)) -}}
{{- fail (printf "logLevel must be a non-negative integer (upstream -v), got %q" (toString .Values.logLevel)) -}}
{{- end -}}
{{- end -}}

{{/*
Controllers this chart knows, named as in kube-controller-manager's --controllers.
*/}}
{{- define "understudy.knownControllers" -}}
deployment-controller,replicaset-controller,endpoints-controller,endpointslice-controller,persistentvolume-binder-controller
{{- end -}}

{{/*
Fails unless every controllers.controllers entry is "*", a known name, or "-" and a known name.
*/}}
{{- define "understudy.validateControllers" -}}
{{- $known := splitList "," (include "understudy.knownControllers" .) -}}
{{- if not .Values.controllers.controllers -}}
{{- fail "controllers.controllers must name at least one controller (or \"*\")" -}}
{{- end -}}
{{- range .Values.controllers.controllers -}}
{{- if not (or (eq . "*") (has (trimPrefix "-" .) $known)) -}}
{{- fail (printf "controllers.controllers: unknown controller %q; known: %s, \"*\" and \"-<name>\"" . (join ", " $known)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
"true" when the named controller runs under kube-controller-manager's --controllers rules:
"-name" disables it, "name" or "*" enables it. Empty otherwise.
Usage: include "understudy.controllerRuns" (dict "ctx" $ "name" "deployment-controller")
*/}}
{{- define "understudy.controllerRuns" -}}
{{- $list := .ctx.Values.controllers.controllers -}}
{{- if and (not (has (printf "-%s" .name) $list)) (or (has .name $list) (has "*" $list)) -}}
true
{{- end -}}
{{- end -}}

{{/*
Events rule: recorders write events.k8s.io/v1 Events (a repeat patches the series).
*/}}
{{- define "understudy.eventsRule" -}}
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{/*
Namespaced Role rules for a leader-election Lease named after the binary. "create" cannot
be limited by resourceNames, so it stands alone, as in upstream's bootstrap policy.
Usage: include "understudy.leaseRules" "understudy-scheduler"
*/}}
{{- define "understudy.leaseRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: [{{ . | quote }}]
  verbs: ["get", "update"]
{{- end -}}
