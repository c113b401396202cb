"""Slurm rendering (pure): a job in, an sbatch script out.

One task per node: `srun` starts one torchrun per node with `--node-rank=$SLURM_NODEID`, running the same
trainer command as the pods. Node 0 (the first host of the allocation) is the master; the port comes from
the job id unless the spec sets one, so two jobs sharing a node never both take 29500. Near the time
limit Slurm sends USR1 to the batch script, which passes it on as SIGTERM to the trainers (torchrun only
forwards SIGTERM/SIGINT); they checkpoint and exit, and the script requeues the job (up to
slurm.maxRequeues times), which resumes from that checkpoint. After a crash (a rank killed, a node lost)
the script requeues the whole job up to backoffLimit times, as the operator restarts a gang of pods,
unless rank 0's termination message says a restart cannot help.

Every user string in the script body is shell-quoted (shlex.quote); strings on `#SBATCH` lines are
validated by the API to be single-line names, so none can start a shell command.

    script = render_slurm(job)      # text for sbatch; the work dir must exist (slurm submit creates it)
"""

from __future__ import annotations

import math
import shlex

from torchyard.contract.ports import slurm_port_shell
from torchyard.contract.restarts import EXIT_CODE, NEVER, ON_FAILURE, restartable_function
from torchyard.contract.termination import PATH_VARIABLE
from torchyard.operator.api.quantity import parse_quantity
from torchyard.operator.api.spec import Job, TrainJob
from torchyard.operator.launch.command import (
    check_train_job,
    node_program,
    work_dir_path,
)

_WORK_DIR = "@torchyard-work-dir@"  # stands for "$work_dir" in argv until _word renders it
_SWEEP_OPTIONS = "@torchyard-sweep-options@"  # stands for this array task's "${sweep_options[@]}"
_NODE_ADDR_SED = r"sed -n 's/.*[[:space:]]NodeAddr=\([^[:space:]]*\).*/\1/p'"  # from `scontrol show node -o`
_RUN_NODE = 'exec torchrun --node-rank="$SLURM_NODEID" "$@"'  # constant: user data arrives as "$@"

# What the script says when restartPolicy keeps a failure final (contract/restarts.py has the rule).
NO_REQUEUE_WHY = {
    ON_FAILURE: "the trainer failed with an error a restart cannot fix",
    EXIT_CODE: "the exit code is permanent under restartPolicy ExitCode (1-127 fail the job)",
    NEVER: "restartPolicy Never does not restart a failure (exit $status)",
}


def sbatch_options(job: Job) -> list[str]:
    """The `#SBATCH` options, in order; every value here is validated to be a single safe line."""
    spec, slurm = job.spec, job.spec.slurm
    work_dir = work_dir_path(job)
    options = [f"--job-name={job.metadata.name}", f"--nodes={spec.nodes}", "--ntasks-per-node=1"]
    cpu = spec.resources.requests.get("cpu") or spec.resources.limits.get("cpu")
    if cpu is not None:
        options.append(f"--cpus-per-task={max(1, math.ceil(parse_quantity(cpu)))}")
    memory = spec.resources.requests.get("memory") or spec.resources.limits.get("memory")
    if memory is not None:
        options.append(f"--mem={max(1, math.ceil(parse_quantity(memory) / 2**20))}M")
    if spec.gpus_per_node:
        options.append(f"--gres=gpu:{spec.gpus_per_node}")
    for flag, value in (
        ("time", slurm.time),
        ("partition", slurm.partition),
        ("account", slurm.account),
        ("qos", slurm.qos),
    ):
        if value is not None:
            options.append(f"--{flag}={value}")
    sweep = slurm.sweep
    if sweep is not None:
        throttle = f"%{sweep.max_parallel}" if sweep.max_parallel else ""
        options.append(f"--array=0-{len(sweep.runs()) - 1}{throttle}")
    logs = f"{work_dir}/%a/slurm-%A_%a" if sweep is not None else f"{work_dir}/slurm-%j"
    options += [
        f"--output={logs}.out",
        f"--error={logs}.err",
        "--open-mode=append",
        f"--signal=B:USR1@{slurm.signal_seconds}",
        "--requeue",
    ]
    return options + list(slurm.extra_args)


def render_slurm(job: Job, train_job: TrainJob | None = None) -> str:
    """The sbatch script; `train_job` is needed for a TestJob with fromTrainJob."""
    spec = job.spec
    train_job = check_train_job(job, train_job)
    program = node_program(job, _WORK_DIR, train_job and work_dir_path(train_job))
    if spec.slurm.sweep is not None:
        program += [_SWEEP_OPTIONS] if spec.cfg_options else ["--cfg-options", _SWEEP_OPTIONS]
    # A run of a sweep is <array id>_<task>: its own SLURM_JOB_ID may be the array's id, which scancel and
    # scontrol take as every run of the array.
    this_job = "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}" if spec.slurm.sweep else "$SLURM_JOB_ID"
    derived = f"${{MASTER_PORT:-{slurm_port_shell()}}}"
    port = str(spec.master_port) if spec.master_port else f'"{derived}"'
    lines = ["#!/bin/bash", *(f"#SBATCH {option}" for option in sbatch_options(job))]
    lines += [
        f"# {job.kind} {job.metadata.name}, rendered by torchyard: re-render instead of editing.",
        "# Slurm opens --output/--error before this runs: create the work dir first (slurm submit does).",
        "# Single quotes below are deliberate: user strings and the per-node bash -c stay unexpanded here.",
        "# shellcheck disable=SC2016",
        "set -euo pipefail",
        "",
        f"work_dir={shlex.quote(work_dir_path(job))}",
        'mkdir -p -- "$work_dir"',
        'work_dir="$(cd -- "$work_dir" && pwd)"',
    ]
    if spec.slurm.sweep is not None:
        lines += _sweep_lines(spec.slurm.sweep.runs())
    if spec.slurm.python_env and not spec.slurm.container:
        lines.append(f'export PATH={shlex.quote(spec.slurm.python_env.rstrip("/") + "/bin")}:"$PATH"')
    lines += [
        "",
        "# Node 0, the first host of the allocation, is the rendezvous master. A node name that does not",
        "# resolve (emulated or unlisted nodes) is replaced by the node's NodeAddr from slurm.conf.",
        'MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
        'if ! getent hosts "$MASTER_ADDR" >/dev/null; then',
        '  node_addr="$(scontrol show node -o "$MASTER_ADDR" | ' + _NODE_ADDR_SED + ')" || true',
        '  MASTER_ADDR="${node_addr:-$MASTER_ADDR}"',
        "fi",
        f"MASTER_PORT={port}",
        "export MASTER_ADDR MASTER_PORT",
        'echo "torchyard: job $SLURM_JOB_ID on $SLURM_JOB_NODELIST, master $MASTER_ADDR:$MASTER_PORT" >&2',
    ]
    lines += [
        "",
        "torchrun_args=(",
        f"  --nnodes={spec.nodes} --nproc-per-node={spec.nproc_per_node}",
        '  --master-addr="$MASTER_ADDR" --master-port="$MASTER_PORT"',
        *(f"  {_word(arg)}" for arg in program),
        ")",
        "",
        "# Rank 0's last word (contract/termination.py) says whether a restart can help after a failure.",
        f'export {PATH_VARIABLE}="$work_dir/.torchyard-$SLURM_JOB_ID-termination.json"',
        f'rm -f -- "${PATH_VARIABLE}"',
        "",
        "# Near the time limit Slurm sends USR1 to this script only (--signal=B:...). Stop the trainers with",
        "# SIGTERM to every step but this one: torchrun forwards SIGTERM (USR1 would kill it), the trainers",
        "# save a checkpoint at the next step boundary and exit; then this script requeues the job below.",
        "stop_requested=0",
        "# shellcheck disable=SC2317  # called by the trap",
        "stop_trainers() {",
        "  stop_requested=1",
        f'  echo "torchyard: USR1 (time limit near): stopping job {this_job} at a checkpoint" >&2',
        f'  scancel --signal=TERM "{this_job}" || echo "torchyard: scancel --signal=TERM failed" >&2',
        "}",
        "trap stop_trainers USR1",
        "",
        " ".join(
            [
                "srun",
                f"--nodes={spec.nodes}",
                "--ntasks-per-node=1",
                *_container_options(job),
                "bash -c",
                shlex.quote(_RUN_NODE),
                'torchrun "${torchrun_args[@]}" &',
            ]
        ),
        "srun_pid=$!",
        "# wait returns early when USR1 arrives; keep waiting until srun itself ends.",
        "while true; do",
        '  status=0; wait "$srun_pid" || status=$?',
        '  if ! kill -0 "$srun_pid" 2>/dev/null; then break; fi',
        "done",
        "",
        "# Requeue (only this script does; each run resumes from the last checkpoint): after a stop at a",
        "# checkpoint up to slurm.maxRequeues times, after a failure that restartPolicy restarts up to",
        f"# backoffLimit times (restartPolicy {spec.restart_policy}: contract/restarts.py). Each requeue is",
        "# one line of the restarts file, so the two limits are counted apart across this job's requeues.",
        f"max_requeues={spec.slurm.max_requeues}",
        f"backoff_limit={spec.backoff_limit}",
        'restarts_file="$work_dir/.torchyard-$SLURM_JOB_ID-restarts"',
        "requeue() {",
        '  local kind="$1" limit="$2" what="$3" used=0',
        '  if [ -f "$restarts_file" ]; then used="$(grep -cx -- "$kind" "$restarts_file" || true)"; fi',
        '  if [ "$used" -ge "$limit" ]; then',
        '    echo "torchyard: $what; no requeue left ($used of $limit used)" >&2',
        "    return",
        "  fi",
        f'  echo "torchyard: $what; requeueing job {this_job} ($((used + 1)) of $limit)" >&2',
        '  echo "$kind" >>"$restarts_file"',
        f'  scontrol requeue "{this_job}" && exit 0',
        '  echo "torchyard: scontrol requeue failed" >&2',
        "}",
        restartable_function(spec.restart_policy),
        'if [ "$status" -ne 0 ]; then',
        '  if [ "$stop_requested" = 1 ]; then',
        '    requeue stop "$max_requeues" "stopped at a checkpoint (slurm.maxRequeues)"',
        f'  elif ! restartable "${PATH_VARIABLE}" "$status"; then',
        f'    echo "torchyard: {NO_REQUEUE_WHY[spec.restart_policy]}: no requeue" >&2',
        "  else",
        '    requeue failure "$backoff_limit" "a trainer failed (exit $status) (backoffLimit)"',
        "  fi",
        "fi",
        'exit "$status"',
    ]
    return "\n".join(lines) + "\n"


def _sweep_lines(runs: list[list[str]]) -> list[str]:
    """Each array task is one run of the sweep: its own work dir and its point's cfgOptions."""
    lines = [
        "",
        f"# A sweep of {len(runs)} runs, one per array task: run N works in $work_dir/N with its options.",
        'run="$SLURM_ARRAY_TASK_ID"',
        'work_dir="$work_dir/$run"',
        'mkdir -p -- "$work_dir"',
        'case "$run" in',
    ]
    lines += [f"  {i}) sweep_options=({' '.join(map(shlex.quote, run))}) ;;" for i, run in enumerate(runs)]
    lines += [
        f'  *) echo "torchyard: array task $run is not one of the sweep\'s runs (0-{len(runs) - 1})" >&2',
        "     exit 2 ;;",
        "esac",
        'echo "torchyard: sweep run $run of ' + str(len(runs)) + ': ${sweep_options[*]}" >&2',
    ]
    return lines


def _word(arg: str) -> str:
    """One argument for the script: our own expansions stay live, every other string is quoted."""
    if arg == _SWEEP_OPTIONS:
        return '"${sweep_options[@]}"'
    if arg == _WORK_DIR:
        return '"$work_dir"'
    if arg.startswith(_WORK_DIR + "/"):
        return '"$work_dir"' + shlex.quote(arg[len(_WORK_DIR):])
    return shlex.quote(arg)


def _container_options(job: Job) -> list[str]:
    container = job.spec.slurm.container
    if container is None:
        return []
    mounts = ",".join(['"$work_dir":"$work_dir"', *(shlex.quote(m) for m in container.mounts)])
    return [f"--container-image={shlex.quote(container.image)}", f"--container-mounts={mounts}"]
