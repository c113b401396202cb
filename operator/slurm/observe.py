"""Slurm job states in torchyard's terms (pure): what `scontrol show job -o` says -> phase and condition.

`torchyard slurm status` and the operator's Slurm mode both read a job this way, so a TrainJob shows the
same phases (Pending, Running, Restarting, Succeeded, Failed, Suspended) whether it runs as pods or
through sbatch. Nothing here runs a command; client.py does that.

    info = parse_job_record(text)   # {'JobId': '7', 'JobState': 'PENDING', 'Reason': 'Resources', ...}
    observed = job_phase(info)      # Observation(phase=Phase.PENDING, reason='WaitingForResources', ...)
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from torchyard.operator.api import conditions as c
from torchyard.operator.api.spec import Phase

# Finished states: the job will not run again (a requeue shows as PENDING/REQUEUED, not as these).
TERMINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "PREEMPTED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
        "SPECIAL_EXIT",
    }
)
# state -> (phase, condition type, reason)
_STATES: dict[str, tuple[Phase, str, str]] = {
    "PENDING": (Phase.PENDING, c.CREATED, c.QUEUED),
    "CONFIGURING": (Phase.RUNNING, c.RUNNING, c.SLURM_RUNNING),
    "RUNNING": (Phase.RUNNING, c.RUNNING, c.SLURM_RUNNING),
    "COMPLETING": (Phase.RUNNING, c.RUNNING, c.SLURM_RUNNING),
    "SIGNALING": (Phase.RUNNING, c.RUNNING, c.SLURM_RUNNING),
    "STAGE_OUT": (Phase.RUNNING, c.RUNNING, c.SLURM_RUNNING),
    "RESIZING": (Phase.RUNNING, c.RUNNING, c.SLURM_RUNNING),
    "REQUEUED": (Phase.RESTARTING, c.RESTARTING, c.REQUEUED),
    "REQUEUE_FED": (Phase.RESTARTING, c.RESTARTING, c.REQUEUED),
    "REQUEUE_HOLD": (Phase.RESTARTING, c.RESTARTING, c.REQUEUED),
    "RESV_DEL_HOLD": (Phase.PENDING, c.CREATED, c.QUEUED),
    "SUSPENDED": (Phase.SUSPENDED, c.SUSPENDED, c.SLURM_SUSPENDED),
    "STOPPED": (Phase.SUSPENDED, c.SUSPENDED, c.SLURM_SUSPENDED),
    "COMPLETED": (Phase.SUCCEEDED, c.SUCCEEDED, c.COMPLETED),
    "FAILED": (Phase.FAILED, c.FAILED, c.SLURM_FAILED),
    "CANCELLED": (Phase.FAILED, c.FAILED, c.CANCELLED),
    "TIMEOUT": (Phase.FAILED, c.FAILED, c.TIME_LIMIT),
    "DEADLINE": (Phase.FAILED, c.FAILED, c.TIME_LIMIT),
    "PREEMPTED": (Phase.FAILED, c.FAILED, c.PREEMPTED),
    "NODE_FAIL": (Phase.FAILED, c.FAILED, c.NODE_FAILURE),
    "BOOT_FAIL": (Phase.FAILED, c.FAILED, c.NODE_FAILURE),
    "OUT_OF_MEMORY": (Phase.FAILED, c.FAILED, c.OUT_OF_MEMORY),
    "REVOKED": (Phase.FAILED, c.FAILED, c.CANCELLED),
    "SPECIAL_EXIT": (Phase.FAILED, c.FAILED, c.SLURM_FAILED),
}
# Pending reasons meaning "busy, wait": shown as such, never as a hang.
BUSY_REASONS = frozenset({"Resources", "Priority", "Dependency", "BeginTime", "None", "JobArrayTaskLimit"})
# Pending reasons meaning the request cannot be met as written: no amount of waiting helps.
UNSATISFIABLE_REASONS: dict[str, str] = {
    "PartitionNodeLimit": "more nodes than the partition allows or has (spec.nodes)",
    "PartitionTimeLimit": "a time limit above the partition's MaxTime (spec.slurm.time)",
    "BadConstraints": "resources no node has (spec.resources, gpusPerNode, slurm.extraArgs)",
    "PartitionConfig": "what the partition's limits reject (e.g. more nodes than it has: spec.nodes)",
    "InvalidAccount": "an account that does not exist or you may not use (spec.slurm.account)",
    "InvalidQOS": "a QOS that does not exist or you may not use (spec.slurm.qos)",
    "QOSMaxNodePerJobLimit": "more nodes than the QOS allows (spec.nodes)",
    "QOSMaxWallDurationPerJobLimit": "a longer time limit than the QOS allows (spec.slurm.time)",
    "AssocMaxNodesPerJobLimit": "more nodes than your association allows (spec.nodes)",
    "AssocMaxWallDurationPerJobLimit": "a longer time limit than your association allows (spec.slurm.time)",
    "DependencyNeverSatisfied": "a dependency that failed (the job it waits for did not succeed)",
}

_KEY = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_/:]*)=")


def parse_job_record(text: str) -> dict[str, str]:
    """One `scontrol show job -o` line as {key: value}; values may hold spaces (Command=, Comment=)."""
    text = text.strip()
    matches = list(_KEY.finditer(text))
    fields = {}
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        fields[match.group(1)] = text[match.end() : end].strip()
    return fields


def parse_sacct(text: str, job_id: str) -> dict[str, str] | None:
    """`sacct -n -P -o JobID,State,ExitCode` rows -> the job's record in scontrol's keys (JobId, JobState,
    ExitCode), from the row of the job itself (not its steps), or of a job array, from its tasks' rows
    (`<id>_<task>`); None if no row is the job's."""
    tasks = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3 or not parts[1].strip():
            continue
        record = {"JobId": job_id, "JobState": base_state(parts[1]), "ExitCode": parts[2], "Reason": "None"}
        if parts[0] == job_id:
            return record
        array_id, _, task = parts[0].partition("_")
        if array_id == job_id and task:
            tasks.append({**record, "ArrayTaskId": task.strip("[]")})
    return array_record(job_id, tasks) if tasks else None


def array_tasks(text: str) -> list[int]:
    """Slurm's array task ids ('0-3,7', '1-5:2', '2-4%2' with its throttle) as a list: [0, 1, 2, 3, 7]."""
    ids: list[int] = []
    for part in text.split("%")[0].split(","):
        head, _, step = part.partition(":")
        first, _, last = head.partition("-")
        if first.isdigit():
            ids += range(int(first), int(last or first) + 1, int(step or 1))
    return ids


_RUNNING = frozenset(state for state, (phase, _, _) in _STATES.items() if phase is Phase.RUNNING)


def array_record(array_id: str, tasks: list[dict[str, str]]) -> dict[str, str]:
    """A job array's task records (scontrol lines, or sacct rows) as one record that job_phase reads:
    running while any task runs, pending while any waits (an unsatisfiable one first), and at the end
    COMPLETED only if every task completed, else the first failed task's state and exit code.
    `ArrayTaskStates` keeps each task's own state ('0=COMPLETED 1=RUNNING ...')."""
    per_task = sorted(
        (task_id, base_state(task.get("JobState", "")), task)
        for task in tasks
        for task_id in array_tasks(task.get("ArrayTaskId", ""))
    )
    states = " ".join(f"{task_id}={state}" for task_id, state, _ in per_task)
    running = [task for _, state, task in per_task if state in _RUNNING]
    waiting = [task for _, state, task in per_task if state not in _RUNNING and state not in TERMINAL_STATES]
    failed = [task for _, state, task in per_task if state in TERMINAL_STATES and state != "COMPLETED"]
    stuck = [task for task in waiting if task.get("Reason") in UNSATISFIABLE_REASONS]
    chosen = (stuck or running or waiting or failed or [task for _, _, task in per_task] or [{}])[0]
    restarts = max((int(task.get("Restarts", "0") or 0) for _, _, task in per_task), default=0)
    nodes = ",".join(dict.fromkeys(task.get("NodeList", "") for task in running if task.get("NodeList")))
    return {
        **chosen,
        "JobId": array_id,
        "JobState": "RUNNING" if running and not stuck else base_state(chosen.get("JobState", "")),
        "Restarts": str(restarts),
        "NodeList": nodes or chosen.get("NodeList", ""),
        "ArrayTaskStates": states,
    }


def base_state(state: str) -> str:
    """'CANCELLED by 0' -> 'CANCELLED', 'RUNNING+COMPLETING' -> 'RUNNING'."""
    return state.split()[0].split("+")[0] if state.strip() else ""


def is_terminal(state: str) -> bool:
    return base_state(state) in TERMINAL_STATES


@dataclass(frozen=True)
class Observation:
    """What a Slurm job's state means for a TrainJob/TestJob: the phase and the condition to set."""

    phase: Phase
    condition_type: str
    reason: str
    message: str
    terminal: bool = False
    unsatisfiable: bool = False


def job_phase(info: dict[str, str]) -> Observation:
    """Phase and condition of a job from its `scontrol show job` fields (JobState, Reason, Restarts...);
    of a job array (array_record), with each run's state in the message."""
    seen = _job_phase(info)
    runs = task_states(info)
    return dataclasses.replace(seen, message=f"{seen.message}; runs: {_ranges(runs)}") if runs else seen


def task_states(info: dict[str, str]) -> dict[int, str]:
    """A job array record's state of each task ({} for a plain job)."""
    pairs = (item.partition("=") for item in info.get("ArrayTaskStates", "").split())
    return {int(task): state for task, _, state in pairs if task.isdigit()}


def _ranges(states: dict[int, str]) -> str:
    """{0: 'COMPLETED', 1: 'COMPLETED', 2: 'RUNNING'} -> '0-1 COMPLETED, 2 RUNNING'."""
    groups: list[list] = []  # [first, last, state]
    for task, state in sorted(states.items()):
        if groups and groups[-1][2] == state and groups[-1][1] == task - 1:
            groups[-1][1] = task
        else:
            groups.append([task, task, state])
    return ", ".join(f"{a}-{b} {s}" if a != b else f"{a} {s}" for a, b, s in groups)


def _job_phase(info: dict[str, str]) -> Observation:
    state = base_state(info.get("JobState", ""))
    reason = info.get("Reason", "None")
    restarts = int(info.get("Restarts", "0") or 0)
    job = f"Slurm job {info.get('JobId', '?')}"
    if state not in _STATES:
        return Observation(Phase.PENDING, c.CREATED, c.UNKNOWN, f"{job} is in state {state or '?'}")
    phase, condition, constant = _STATES[state]
    if state == "PENDING":
        if reason in UNSATISFIABLE_REASONS:
            return Observation(
                Phase.PENDING,
                c.CREATED,
                c.UNSCHEDULABLE,
                f"{job} cannot start ({reason}): it asks for {UNSATISFIABLE_REASONS[reason]}; "
                "fix the spec, cancel the job and submit again",
                unsatisfiable=True,
            )
        if restarts:
            phase, condition, constant = Phase.RESTARTING, c.RESTARTING, c.REQUEUED
            return Observation(
                phase, condition, constant, f"{job} was requeued ({restarts}x) and waits to start ({reason})"
            )
        if reason == "Resources":
            return Observation(
                phase, condition, c.WAITING_FOR_RESOURCES, f"{job} waits for free nodes (Reason=Resources)"
            )
        return Observation(phase, condition, constant, f"{job} is queued (Reason={reason})")
    exit_code = info.get("ExitCode", "")
    details = {
        "RUNNING": f"on {info.get('NodeList', '?')} for {info.get('RunTime', '?')}",
        "COMPLETED": f"after {info.get('RunTime', '?')}",
        "TIMEOUT": f"hit its time limit {info.get('TimeLimit', '?')}",
        "OUT_OF_MEMORY": "ran out of memory (raise spec.resources memory)",
        "NODE_FAIL": f"lost a node ({info.get('NodeList', '?')})",
    }.get(state, f"exit code {exit_code}" if exit_code else "")
    message = f"{job} {state}" + (f": {details}" if details else "")
    if phase is Phase.FAILED and reason not in ("None", ""):
        message += f" (Reason={reason})"

    return Observation(phase, condition, constant, message, terminal=state in TERMINAL_STATES)
