{{/*
The operator's permissions: exactly the API calls it makes, no more. tests/charts/test_rbac.py runs the
operator with these rules on a real API server during a scenario in each watch mode, reads every request
it made from the server's audit log, and compares them with these rules both ways; change them only
together with the operator's code.
*/}}

{{/* Rules in each served namespace (a Role there, or the ClusterRole when watching cluster-wide). */}}
{{- define "torchyard.rbac.jobRules" -}}
# the jobs: kopf lists and watches them and patches its finalizer; the operator writes status and
# deletes a job whose ttlSecondsAfterFinished passed
- apiGroups: [torchyard.dev]
  resources: [trainjobs, testjobs]
  verbs: [list, watch, patch, delete]
- apiGroups: [torchyard.dev]
  resources: [trainjobs/status, testjobs/status]
  verbs: [patch]
# never called, but required: the pods and the Service name their job as owner with blockOwnerDeletion,
# which the OwnerReferencesPermissionEnforcement admission plugin (on in OpenShift and hardened clusters)
# allows only to whoever may update the owner's finalizers; without it every create is refused (403)
- apiGroups: [torchyard.dev]
  resources: [trainjobs/finalizers, testjobs/finalizers]
  verbs: [update]
# the pods of the jobs: watched (an index by job), created per attempt, deleted on restart, suspension,
# deadline or deletion of the job; read back when a create finds a pod of that name already there
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch, get, create, delete]
# a restart reads the failed pods' logs before deleting them, and keeps them in the job's
# <job>-previous-logs ConfigMap (created at the first restart, read back and replaced at the next)
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create, update]
# the headless Service of each job (the address of node 0)
- apiGroups: [""]
  resources: [services]
  verbs: [get, create, delete]
# events on the jobs (kopf.info/kopf.warn): PodsCreated, Restarting, Completed, ...
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}

{{/* kopf peering in a namespace (the KopfPeering of that namespace). */}}
{{- define "torchyard.rbac.peeringRules" -}}
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [list, watch, patch]
{{- end }}

{{/* kopf peering across the cluster (the ClusterKopfPeering). */}}
{{- define "torchyard.rbac.clusterPeeringRules" -}}
- apiGroups: [kopf.dev]
  resources: [clusterkopfpeerings]
  verbs: [list, watch, patch]
{{- end }}

{{/*
kopf's own cluster-level observation (https://kopf.readthedocs.io/en/stable/deployment/#rbac): it watches
CustomResourceDefinitions to notice the job resources appear and change, and, serving a list of
namespaces, watches Namespaces to notice them come and go. Read-only.
*/}}
{{- define "torchyard.rbac.observerRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
# before it creates pods for a spec naming a ServiceAccount, claim, pull Secret, PriorityClass, toleration
# or TrainJob: is a binding of the job policy (templates/jobpolicy.yaml) in force? (operator/kube/policy.py)
- apiGroups: [admissionregistration.k8s.io]
  resources: [validatingadmissionpolicybindings]
  verbs: [list]
- apiGroups: [admissionregistration.k8s.io]
  resources: [validatingadmissionpolicies]
  verbs: [get]
{{- if ne .Values.watch.mode "clusterWide" }}
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}
{{- end }}
