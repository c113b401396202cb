"""Who may run what, as the pod backend sees it: the operator creates pods for whoever created a job, so a
spec that names another object (a ServiceAccount, a claim, a pull Secret, a PriorityClass, a toleration, a
TrainJob to read, the claims and Secrets of its pod template) may only run where the API server checked its
creator's rights to them.

The API server does that check: the chart's ValidatingAdmissionPolicy (templates/jobpolicy.yaml) refuses a
job whose creator may not create pods in the namespace or may not `use` what the spec names. The operator
never learns who created a job, so it cannot repeat that check; what it can do is refuse to create pods for
such a spec while no binding of that policy is in force (an older cluster, a chart installed with
jobPolicy.enabled=false, a binding deleted). `--trust-job-specs` turns that off, for clusters where everyone
who may create a TrainJob may do all of this anyway.

    named = named_objects(job)                        # pure: [(field path, what it names)]
    if named and not await PolicyCheck().enforced(api): ...   # the job fails, reason NotAllowed
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from torchyard.operator.api.spec import Job
from torchyard.operator.api.template import references
from torchyard.operator.control.kubeapi import KubeApi
from torchyard.operator.errors import ApiError, NotAllowed

POLICY_LABEL = "torchyard.dev/job-policy"  # on the chart's binding; its value is the policy's name
BINDINGS = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings"
POLICIES = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"
SEEN_SECONDS = 60.0  # how long a policy found in force is believed without asking again
MISSING_SECONDS = 10.0  # and one found missing: an admin who installs it is heard soon


def named_objects(job: Job) -> list[tuple[str, str]]:
    """The fields of `job` that name an object whose use the policy checks, with what they name."""
    spec = job.spec
    named = []
    if spec.service_account_name:
        named.append(("spec.serviceAccountName", f"ServiceAccount {spec.service_account_name}"))
    if spec.work_dir.claim_name:
        named.append(("spec.workDir.claimName", f"PersistentVolumeClaim {spec.work_dir.claim_name}"))
    named += [("spec.imagePullSecrets", f"Secret {name}") for name in spec.image_pull_secrets]
    if spec.priority_class_name:
        named.append(("spec.priorityClassName", f"PriorityClass {spec.priority_class_name}"))
    if spec.tolerations:
        named.append(("spec.tolerations", f"{len(spec.tolerations)} toleration(s)"))
    if spec.train_job_name:
        named.append(("spec.fromTrainJob.name", f"TrainJob {spec.train_job_name} (and its work dir)"))
    if spec.template is not None:
        named += references(spec.template.spec)
    return named


def unchecked(job: Job, namespace: str) -> NotAllowed:
    """The refusal of a spec whose named objects no admission policy checked."""
    problems = [
        (path, f"names {what}, but no admission policy checks that its creator may use it (the chart's "
               f"ValidatingAdmissionPolicyBinding labelled {POLICY_LABEL} is not in this cluster); install "
               "the chart with jobPolicy.enabled=true (Kubernetes 1.30+), or run the operator with "
               "--trust-job-specs if everyone who may create jobs may use it")
        for path, what in named_objects(job)
    ]
    return NotAllowed(problems, f"{job.kind} {namespace}/{job.metadata.name}")


@dataclass
class PolicyCheck:
    """Whether a binding of the chart's job policy denies what the policy refuses, asked at most once a
    minute (every job's pods wait on the answer only when it is not cached)."""

    trusted: bool = False  # --trust-job-specs
    _answer: bool = False
    _until: float = field(default=0.0)

    async def enforced(self, api: KubeApi) -> bool:
        if self.trusted:
            return True
        if time.monotonic() < self._until:
            return self._answer
        self._answer = await _binding_in_force(api)
        self._until = time.monotonic() + (SEEN_SECONDS if self._answer else MISSING_SECONDS)
        return self._answer


async def _binding_in_force(api: KubeApi) -> bool:
    try:
        bindings = await api.request("GET", BINDINGS, labelSelector=POLICY_LABEL)
    except ApiError as err:
        if err.status == 404:  # no ValidatingAdmissionPolicy API: Kubernetes before 1.30
            return False
        raise
    for binding in bindings.get("items") or []:
        spec = binding.get("spec") or {}
        if "Deny" not in (spec.get("validationActions") or []) or not spec.get("policyName"):
            continue
        try:
            await api.get(f"{POLICIES}/{spec['policyName']}")
        except ApiError as err:
            if err.status == 404:
                continue
            raise
        return True
    return False
