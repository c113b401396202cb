"""The Python client for jobs on Slurm, for notebooks and sweep scripts: what `Client` is on Kubernetes,
through sbatch from a login node, with the same typed statuses.

    from torchyard.operator import SlurmJobs

    jobs = SlurmJobs(cwd="~/project")                   # the submit dir: work_dirs/ and the configs are there
    [name] = jobs.submit("examples/trainjob.yaml")      # a file, a dict or a model; a TestJob waits
    status = jobs.wait(name, timeout=3600)              # a JobStatus once Succeeded or Failed
    print(status.phase, status.metrics, status.slurm_job_id)   # a sweep: status.runs, one per run
    print(jobs.logs(name, tail=20))                     # the job's stdout (stderr=True: its stderr)
    jobs.list()                                         # [JobSummary(kind, name, phase, ...)]
    jobs.cancel(name)

Jobs are found by name from the records in their work dirs (bridge.py), as `torchyard slurm ...` finds them.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any

from torchyard.operator.api import conditions as c
from torchyard.operator.api.jobfile import load_jobs
from torchyard.operator.api.spec import Condition, Job, JobStatus, Phase, TestJobStatus, load_job
from torchyard.operator.client import JobSummary
from torchyard.operator.errors import ClientError, SlurmError
from torchyard.operator.slurm.bridge import (
    Record,
    find_record,
    local_records,
    log_paths,
    read_progress,
    submit_jobs,
)
from torchyard.operator.slurm.client import SlurmClient
from torchyard.operator.slurm.observe import job_phase, task_states

FINISHED = (Phase.SUCCEEDED, Phase.FAILED)


class SlurmJobs:
    """TrainJobs and TestJobs submitted from one submit dir."""

    def __init__(self, cwd: str | Path | None = None, client: SlurmClient | None = None) -> None:
        self.cwd = Path(cwd or Path.cwd()).expanduser().resolve()
        self.client = client or SlurmClient()

    def submit(self, job: str | Path | dict[str, Any] | Job) -> list[str]:
        """sbatch the job(s) of a file, a dict or a model (validated first); their names."""
        if isinstance(job, (str, Path)):
            path = Path(job).expanduser()
            jobs = load_jobs(path if path.is_absolute() else self.cwd / path)
        else:
            jobs = [job if not isinstance(job, dict) else load_job(job, "the job")]
        return [record.name for record in submit_jobs(jobs, client=self.client, cwd=self.cwd)]

    def status(self, name: str) -> JobStatus:
        """The job's status, as the operator's Slurm mode would write it: phase and its condition from Slurm
        (sacct once scontrol has forgotten it), metrics and checkpoints from the work dir."""
        record = self._record(name)
        info = self.client.show_job(record.job_id)
        if info is not None:
            record.remember(info)
        elif record.last_state:
            info = {"JobId": record.job_id, "JobState": record.last_state, "Reason": record.last_reason,
                    "ExitCode": record.exit_code}  # fmt: skip
        fields: dict[str, Any] = {"slurm_job_id": record.job_id}
        if info is None:
            fields["conditions"] = [Condition(type=c.FAILED, status="Unknown", reason=c.UNKNOWN,
                                              message=f"Slurm no longer knows job {record.job_id}")]
        else:
            seen = job_phase(info)
            fields["phase"] = seen.phase
            fields["restarts"] = int(info.get("Restarts") or 0)
            fields["conditions"] = [Condition(type=seen.condition_type, status="True", reason=seen.reason,
                                              message=seen.message)]
        progress = read_progress(record.kind, record.work_dir, record.runs, task_states(info or {}))
        fields["runs"] = progress.get("runs") or []
        fields["metrics"] = progress.get("metrics") or {}
        model = TestJobStatus if record.kind == "TestJob" else JobStatus
        if record.kind == "TestJob":
            fields["headline_metric"] = progress.get("headlineMetric")
            fields["checkpoint"] = progress.get("checkpoint")
        else:
            fields["last_checkpoint"] = progress.get("lastCheckpoint")
            fields["best_checkpoint"] = progress.get("bestCheckpoint")
        return model(**fields)

    def wait(self, name: str, timeout: float | None = None, poll_seconds: float = 2.0,
             until: tuple[Phase, ...] = FINISHED) -> JobStatus:  # fmt: skip
        """The status once the job is in a phase of `until`; TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status(name)
            if status.phase in until:
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{name} is still {status.phase.value} after {timeout:.0f} s")
            time.sleep(poll_seconds)

    def logs(self, name: str, tail: int | None = None, stderr: bool = False, run: int | None = None) -> str:
        """The job's stdout (rank 0's log lines) or stderr, the last `tail` lines if given; of a sweep, those
        of `run`."""
        try:
            path = log_paths(self._record(name), run=run)[1 if stderr else 0]
        except SlurmError as err:
            raise ClientError(str(err)) from None
        try:
            with path.open(errors="replace") as handle:
                lines = deque(handle, maxlen=tail) if tail else handle.readlines()
        except FileNotFoundError:
            return ""  # Slurm opens it when the job starts
        return "".join(lines)

    def cancel(self, name: str) -> None:
        self.client.cancel(self._record(name).job_id)

    def list(self) -> list[JobSummary]:
        """The jobs recorded under this submit dir's work_dirs/, oldest first."""
        rows = []
        for record in local_records(self.cwd):
            status = self.status(record.name)
            rows.append(JobSummary(record.kind, record.name, status.phase.value, _nodes(record),
                                   status.restarts, record.submitted_at,
                                   getattr(status, "headline_metric", None) or ""))  # fmt: skip
        return rows

    def _record(self, name: str) -> Record:
        record = find_record(name, self.client, self.cwd)
        if record is None:
            raise ClientError(f"no job {name!r} submitted from {self.cwd}: no record in work_dirs/{name}/ "
                              "and none in squeue; pass the name it was submitted with")
        return record


def _nodes(record: Record) -> int:
    """From the script's `#SBATCH --nodes=N` (render.sbatch_options), which outlives Slurm's memory."""
    try:
        text = Path(record.script).read_text()
    except OSError:
        return 0
    found = [line.split("=", 1)[1] for line in text.splitlines() if line.startswith("#SBATCH --nodes=")]
    return int(found[0]) if found and found[0].isdigit() else 0
