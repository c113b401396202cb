"""spec.restartPolicy: the rule the operator and `torchyard run` apply in Python and the sbatch script applies
in bash agree on every case, and each policy means what Kubeflow's does."""

from __future__ import annotations

import subprocess

import pytest

from torchyard.contract import exitcodes
from torchyard.contract.restarts import EXIT_CODE, NEVER, ON_FAILURE, POLICIES, restartable_function, verdict
from torchyard.contract.termination import Termination, encode, make_summary


def message(status: str, code: int, retryable: bool) -> str:
    return encode(make_summary(status, code, "Reason", "what happened", retryable, epoch=2))


CONFIG_ERROR = message("failed", exitcodes.CONFIG_ERROR, retryable=False)
CRASH = message("failed", exitcodes.FAILURE, retryable=True)
INTERRUPTED = message("interrupted", 128 + 15, retryable=True)
SUCCEEDED = message("succeeded", 0, retryable=False)  # rank 0 finished, a peer failed after it

# (termination message or None, the node's exit code) -> restarted under OnFailure, ExitCode, Never
CASES = [
    ((None, 137), (True, True, False)),  # the container was killed, no word from rank 0
    ((None, 1), (True, False, False)),  # torchrun: a worker failed, rank 0 said nothing
    ((None, exitcodes.CONFIG_ERROR), (False, False, False)),
    ((None, None), (True, True, False)),  # the pod was lost or evicted: no exit code at all
    ((CONFIG_ERROR, 1), (False, False, False)),
    ((CRASH, 1), (True, False, False)),
    ((CRASH, 137), (True, False, False)),  # the trainer's own code is judged, not the node's
    ((INTERRUPTED, 1), (True, True, False)),
    ((SUCCEEDED, 137), (True, True, False)),  # rank 0 did not fail: the node's code is judged
    ((SUCCEEDED, 1), (True, False, False)),
    (("Killed", 137), (True, True, False)),  # a log tail is no message
]


@pytest.mark.parametrize(("case", "expected"), CASES)
def test_each_policy_restarts_what_kubeflow_restarts(case, expected):
    text, code = case
    got = tuple(verdict(policy, Termination.parse(text), code)[0] for policy in POLICIES)
    assert got == expected


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("case", [case for case, _ in CASES if case[1] is not None])  # srun has a status
def test_the_sbatch_scripts_bash_agrees(tmp_path, policy, case):
    text, code = case
    termination = tmp_path / "termination.json"
    if text is not None:
        termination.write_text(text)
    script = f'{restartable_function(policy)}\nrestartable "$1" "$2"'
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script, "bash", str(termination), str(code)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.stderr == ""
    assert (done.returncode == 0) == verdict(policy, Termination.parse(text), code)[0]


def test_a_refusal_says_why():
    assert verdict(NEVER, None, 137) == (False, "restartPolicy Never: no restart after a failure")
    assert verdict(EXIT_CODE, Termination.parse(CRASH), 137)[1] == (
        "exit code 1 is permanent under restartPolicy ExitCode (1-127 fail the job, 128-255 restart it)")
    assert verdict(ON_FAILURE, Termination.parse(CONFIG_ERROR), 1) == (False, "a restart cannot fix this")
