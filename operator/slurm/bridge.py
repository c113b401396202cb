"""The Slurm bridge: submit a TrainJob/TestJob through sbatch and find it again, from any login node.

Submitting renders the script (render_slurm), creates the work dir (Slurm opens --output there before the
script runs), writes the script next to the checkpoints as `torchyard.sbatch`, calls sbatch and leaves a
record `torchyard-slurm.json` (name, kind, job id, previous ids) in the work dir: on a shared filesystem
every login node finds the job by name. `torchyard slurm ...` (cli/slurm.py) and the operator's Slurm
mode both use these functions with a SlurmClient.

    record = submit_job(job, train_job=None, client=SlurmClient())
    info = client.show_job(record.job_id); observed = job_phase(info)
    found = find_record("digits-mlp")          # the record in work_dirs/digits-mlp, or None
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from torchyard.contract import workdir
from torchyard.operator.api import conditions as c
from torchyard.operator.api.jobfile import train_job_of
from torchyard.operator.api.spec import Job
from torchyard.operator.errors import SlurmError, Unschedulable
from torchyard.operator.launch.command import work_dir_path
from torchyard.operator.slurm.client import SlurmClient
from torchyard.operator.slurm.observe import Observation, job_phase
from torchyard.operator.slurm.render import render_slurm

RECORD = "torchyard-slurm.json"
SCRIPT = "torchyard.sbatch"
DEFAULT_WORK_DIRS = "work_dirs"  # where work_dir_path puts jobs without workDir.path


@dataclass
class Record:
    """What a login node needs to find a submitted job again; stored as JSON in the job's work dir."""

    name: str
    kind: str
    job_id: str
    work_dir: str  # absolute
    submit_dir: str
    script: str
    submitted_at: str
    previous_job_ids: list[str] = field(default_factory=list)
    runs: list[list[str]] = field(default_factory=list)  # a sweep's runs (their cfgOptions), else []
    last_state: str = ""  # the last state seen (Slurm forgets finished jobs after MinJobAge)
    last_reason: str = ""
    exit_code: str = ""

    def save(self) -> None:
        path = Path(self.work_dir) / RECORD
        temp = path.with_name(f".{RECORD}.{os.getpid()}.tmp")
        temp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        temp.replace(path)

    def remember(self, info: Mapping[str, str]) -> None:
        """Keep the last observed state, so status works after Slurm has forgotten the job."""
        seen = (info.get("JobState", ""), info.get("Reason", ""), info.get("ExitCode", ""))
        if seen != (self.last_state, self.last_reason, self.exit_code):
            self.last_state, self.last_reason, self.exit_code = seen
            with contextlib.suppress(OSError):  # a read-only work dir must not break `status`
                self.save()


def read_record(work_dir: str | Path) -> Record | None:
    path = Path(work_dir) / RECORD
    try:
        data = json.loads(path.read_text())
        return Record(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as err:
        raise SlurmError(
            f"{path} is not a torchyard Slurm record ({err}); delete it and submit again"
        ) from None


def submit_env(job: Job, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """sbatch exports this environment to the job. Without pythonEnv or a container the job runs with the
    Python environment torchyard runs from: its bin/ (torchrun, torchyard) goes first on PATH."""
    env = dict(os.environ if environ is None else environ)
    slurm = job.spec.slurm
    if slurm.python_env is None and slurm.container is None:
        here = str(Path(sys.executable).parent)
        if here not in env.get("PATH", "").split(os.pathsep):
            env["PATH"] = os.pathsep.join(filter(None, [here, env.get("PATH", "")]))
    return env


def submit_job(
    job: Job,
    train_job: Job | None = None,
    client: SlurmClient | None = None,
    cwd: str | Path | None = None,
    after: str | None = None,
) -> Record:
    """Render, create the work dir, sbatch, record; `after` is a job id this one waits for (afterok)."""
    client = client or SlurmClient()
    cwd = Path(cwd or Path.cwd()).resolve()
    script = render_slurm(job, train_job)  # RenderError before anything is written
    work_dir = (cwd / work_dir_path(job)).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    runs = job.spec.slurm.sweep.runs() if job.spec.slurm.sweep else []
    for index in range(len(runs)):
        run_dir(work_dir, index).mkdir(exist_ok=True)  # each run's --output is opened there
    script_path = work_dir / SCRIPT
    script_path.write_text(script)
    options = [f"--dependency=afterok:{after}"] if after else []
    job_id = client.sbatch(script_path, cwd=cwd, options=options, env=submit_env(job, client.env))
    previous = read_record(work_dir)
    record = Record(
        name=job.metadata.name,
        kind=job.kind,
        job_id=job_id,
        work_dir=str(work_dir),
        submit_dir=str(cwd),
        script=str(script_path),
        submitted_at=datetime.now(UTC).isoformat(timespec="seconds"),
        previous_job_ids=[*previous.previous_job_ids, previous.job_id] if previous else [],
        runs=runs,
    )
    record.save()
    return record


def submit_jobs(
    jobs: list[Job],
    extra: list[Job] | None = None,
    client: SlurmClient | None = None,
    cwd: str | Path | None = None,
    on_submitted: Callable[[Record, str | None], None] = lambda record, after: None,
) -> list[Record]:
    """Submit a file's jobs in order; a TestJob whose TrainJob comes earlier waits for it (afterok), one in
    `extra` (another file) is read only. `on_submitted(record, after)` hears of each before the next goes."""
    client = client or SlurmClient()
    submitted: dict[str, str] = {}  # TrainJob name -> job id, for TestJobs later in the same file
    records = []
    for job in jobs:
        after = submitted.get(job.spec.train_job_name) if job.spec.train_job_name is not None else None
        record = submit_job(job, train_job_of(job, jobs, extra or []), client, cwd=cwd, after=after)
        if job.kind == "TrainJob":
            submitted[job.metadata.name] = record.job_id
        records.append(record)
        on_submitted(record, after)
    return records


def find_record(
    target: str, client: SlurmClient | None = None, cwd: str | Path | None = None
) -> Record | None:
    """The record for a job name, a job id, or a job file (its work dir); None when nothing matches."""
    cwd = Path(cwd or Path.cwd())
    path = cwd / target
    if target.endswith((".yaml", ".yml")) and path.is_file():
        from torchyard.operator.api.jobfile import load_jobs

        jobs = load_jobs(path)
        return next((r for r in (read_record(cwd / work_dir_path(j)) for j in jobs) if r), None)
    if not target.isdigit():
        found = read_record(cwd / DEFAULT_WORK_DIRS / target)
        if found:
            return found
        named = [r for r in local_records(cwd) if r.name == target]
        if named:
            return max(named, key=lambda r: int(r.job_id))
    # a job id, or a name whose work dir is elsewhere: ask Slurm where the job's script lives
    client = client or SlurmClient()
    rows = client.jobs(name=None if target.isdigit() else target)
    for row in reversed(rows):
        if target.isdigit() and row["JobId"].split("_")[0] != target:  # an array's runs are <id>_<task>
            continue
        script = Path(row.get("Command", ""))
        if script.name == SCRIPT:
            found = read_record(script.parent)
            if found:
                return found
    return None


def run_dir(work_dir: str | Path, index: int) -> Path:
    """The work dir of a sweep's run `index` (render.py's "$work_dir/$SLURM_ARRAY_TASK_ID")."""
    return Path(work_dir) / str(index)


def read_progress(
    kind: str,
    work_dir: str | Path,
    runs: list[list[str]] | None = None,
    states: Mapping[int, str] | None = None,
) -> dict[str, Any]:
    """Status fields from the work dir, as the pod path takes them from rank 0's termination message; of a
    sweep (`runs`: each run's cfgOptions), `runs`: each run's own, with its Slurm state from `states`."""
    if runs:
        return {"runs": [_run_progress(kind, work_dir, index, options, states or {})
                         for index, options in enumerate(runs)]}  # fmt: skip
    if kind == "TestJob":
        result = workdir.read_test_result(work_dir)
        if result is None:
            return {}
        raw = result.get("metrics") or {}
        return {
            "metrics": c.status_metrics(raw)[0],
            "headlineMetric": c.headline(raw),
            "checkpoint": result.get("checkpoint"),
        }
    return {
        "metrics": c.status_metrics(workdir.last_val_metrics(work_dir))[0],
        "lastCheckpoint": workdir.read_pointer(work_dir, "latest"),
        "bestCheckpoint": workdir.read_pointer(work_dir, "best"),
    }


def _run_progress(
    kind: str, work_dir: str | Path, index: int, options: list[str], states: Mapping[int, str]
) -> dict[str, Any]:
    """One run of a sweep as a status entry (SweepRun): options, state, metrics, checkpoints."""
    entry = {"index": index, "cfgOptions": options, "state": states.get(index),
             **read_progress(kind, run_dir(work_dir, index))}  # fmt: skip
    return {key: value for key, value in entry.items() if value is not None}


def local_records(cwd: str | Path | None = None) -> list[Record]:
    """Records under ./work_dirs/*/ (the default work dirs), oldest job first."""
    root = Path(cwd or Path.cwd()) / DEFAULT_WORK_DIRS
    found = [read_record(p.parent) for p in root.glob(f"*/{RECORD}")]
    return sorted((r for r in found if r), key=lambda r: int(r.job_id))


def log_paths(record: Record, job_id: str | None = None, run: int | None = None) -> list[Path]:
    """The job's stdout and stderr files (the script's --output/--error); of a sweep, those of `run`."""
    job_id = job_id or record.job_id
    if not record.runs:
        if run is not None:
            raise SlurmError(f"job {job_id} ({record.name}) is not a sweep: it has no runs to choose from")
        return [Path(record.work_dir) / f"slurm-{job_id}.{ext}" for ext in ("out", "err")]
    if run is None or not 0 <= run < len(record.runs):
        chosen = "" if run is None else f"; {run} is not one of them"
        raise SlurmError(
            f"{record.name} is a sweep of {len(record.runs)} runs (0-{len(record.runs) - 1}){chosen}: "
            "choose one, e.g. --run 0"
        )
    return [run_dir(record.work_dir, run) / f"slurm-{job_id}_{run}.{ext}" for ext in ("out", "err")]


def wait_for_job(
    client: SlurmClient,
    job_id: str,
    on_change: Callable[[dict[str, str], Observation], None] = lambda info, seen: None,
    poll_seconds: float = 1.0,
    tick: Callable[[], None] = lambda: None,
    timeout: float | None = None,
) -> dict[str, str] | None:
    """Poll until the job finishes; its last fields (None if Slurm forgot it). on_change hears every new
    state/reason; an unsatisfiable request raises Unschedulable instead of waiting forever."""
    last: tuple[str, ...] | None = None
    info: dict[str, str] | None = None
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        current = client.show_job(job_id)
        tick()
        if current is None:
            return info
        info = current
        seen = job_phase(info)
        key = tuple(info.get(k, "") for k in ("JobState", "Reason", "Restarts", "ArrayTaskStates"))
        if key != last:
            last = key
            on_change(info, seen)
        if seen.unsatisfiable:
            raise Unschedulable(seen.message)
        if seen.terminal:
            return info
        if deadline is not None and time.monotonic() > deadline:
            raise SlurmError(f"Slurm job {job_id} did not finish within {timeout:g} s ({seen.message})")
        time.sleep(poll_seconds)
