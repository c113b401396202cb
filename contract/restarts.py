"""When a failed attempt is restarted: one rule, `spec.restartPolicy`, for the operator's pods,
`torchyard run` and the sbatch scripts (which carry it as a bash function, `restartable_function`).

The policies, by Kubeflow's names:
  OnFailure  (the default) restart unless the trainer says a restart cannot fix the failure: a usage or
             config error (exit 2 or 3, contract/exitcodes.py), from its termination message or exit code.
  ExitCode   Kubeflow's rule: exit codes 1-127 are permanent (the program itself failed), 128-255 are
             retryable (killed by a signal: OOM, preemption, kill -9), as is a node that left no exit code
             (its pod lost or evicted). The code judged is the trainer's own, from rank 0's termination
             message, when rank 0 ended with one (failed, or stopped by a signal); else the node's:
             torchrun exits 1 whenever a worker fails, 128+N when it was killed itself.
  Never      no restart after a failure.
A restart always spends one of `backoffLimit`; a stop at a checkpoint (a Slurm time limit) is not a failure.

    restart, why = verdict(policy, termination, exit_code)     # why: said when the job fails instead
"""

from __future__ import annotations

import json
import shlex

from torchyard.contract import exitcodes
from torchyard.contract.termination import Termination, retryable

ON_FAILURE, EXIT_CODE, NEVER = "OnFailure", "ExitCode", "Never"
POLICIES = (ON_FAILURE, EXIT_CODE, NEVER)


def judged_exit_code(termination: Termination | None, exit_code: int | None) -> int | None:
    """The trainer's own exit code where rank 0 ended with one (failed, or stopped by a signal), else the
    node's."""
    if termination is not None and termination.exit_code:
        return termination.exit_code
    return exit_code


def verdict(policy: str, termination: Termination | None, exit_code: int | None) -> tuple[bool, str]:
    """Whether a restart follows this failure under `policy`, and if not, why (for the job's status)."""
    if policy == NEVER:
        return False, "restartPolicy Never: no restart after a failure"
    if policy == EXIT_CODE:
        code = judged_exit_code(termination, exit_code)
        if code is not None and 0 < code < exitcodes.INTERRUPTED_BASE:
            return False, (f"exit code {code} is permanent under restartPolicy ExitCode "
                           "(1-127 fail the job, 128-255 restart it)")
        return True, ""
    if not retryable(termination, exit_code):
        return False, "a restart cannot fix this"
    return True, ""


def restartable_function(policy: str) -> str:
    """The same rule as a bash function for the sbatch script: `restartable FILE STATUS` succeeds when a
    restart follows; FILE is rank 0's termination file (maybe missing), STATUS the node's exit status."""
    def has(key: str, value: object) -> str:
        return f"grep -qF {shlex.quote(json.dumps({key: value})[1:-1])} \"$1\" 2>/dev/null"

    if policy == NEVER:
        body = "false"
    elif policy == EXIT_CODE:
        trainer_code = "sed -n 's/.*\"exitCode\": \\([0-9][0-9]*\\).*/\\1/p' \"$1\""
        body = (f'local code; code="$({trainer_code} 2>/dev/null || true)"; '
                f'[ "${{code:-0}}" -gt 0 ] || code="$2"; [ "$code" -ge {exitcodes.INTERRUPTED_BASE} ]')
    else:
        final_codes = "|".join(str(code) for code in sorted(exitcodes.NON_RETRYABLE))
        body = (f"if grep -qF '\"retryable\":' \"$1\" 2>/dev/null; then "
                f"{has('retryable', True)} || {has('status', 'succeeded')}; "
                f'else case "$2" in {final_codes}) false ;; *) true ;; esac; fi')
    return f"restartable() {{ {body}; }}"

