"""A thin client for Slurm's commands: sbatch, squeue, scontrol, scancel. No state, no policy.

Every call has a timeout (a dead munged makes Slurm's clients hang for minutes) and every failure is a
SlurmError whose message says what to do. Job details come from `scontrol show job -o` (works without
accounting); a job slurmctld has forgotten (finished longer than MinJobAge ago) from sacct, where the
cluster keeps accounting or a job completion log, else None.

    client = SlurmClient()
    job_id = client.sbatch(Path("work_dirs/x/torchyard.sbatch"))
    info = client.show_job(job_id)            # {'JobState': 'RUNNING', 'NodeList': 'n[1-2]', ...} or None
    client.cancel(job_id)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from torchyard.operator.errors import SlurmError
from torchyard.operator.slurm.observe import array_record, parse_job_record, parse_sacct

DEFAULT_TIMEOUT = 30.0
_INVALID_JOB = "Invalid job id specified"


class SlurmClient:
    def __init__(self, timeout: float = DEFAULT_TIMEOUT, env: Mapping[str, str] | None = None) -> None:
        self.timeout = timeout
        self.env = dict(os.environ if env is None else env)

    def run(self, argv: Sequence[str], cwd: str | Path | None = None, check: bool = True) -> str:
        """Run a Slurm command; its stdout, or SlurmError (with its stderr) when it fails."""
        program = argv[0]
        if shutil.which(program, path=self.env.get("PATH")) is None:
            raise SlurmError(
                f"{program} not found on PATH: run this where Slurm's commands work (a login node), "
                "or install them (Debian: apt-get install slurm-client)"
            )
        try:
            result = subprocess.run(
                list(argv), cwd=cwd, env=self.env, capture_output=True, text=True, timeout=self.timeout
            )
        except subprocess.TimeoutExpired:
            conf = self.env.get("SLURM_CONF", "/etc/slurm/slurm.conf")
            raise SlurmError(
                f"{' '.join(argv[:3])} did not answer within {self.timeout:g} s: is slurmctld reachable "
                f"and munged running (munge -n)? SLURM_CONF={conf}"
            ) from None
        if check and result.returncode != 0:
            raise SlurmError(_explain(argv, result.stderr.strip() or result.stdout.strip()))
        return result.stdout

    def sbatch(
        self,
        script: str | Path,
        cwd: str | Path | None = None,
        options: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> str:
        """Submit a batch script; its job id. `options` go before the script (e.g. --dependency=...)."""
        client = self if env is None else SlurmClient(self.timeout, env)
        out = client.run(["sbatch", "--parsable", *options, str(script)], cwd=cwd)
        job_id = out.strip().splitlines()[-1].split(";")[0] if out.strip() else ""
        if not job_id.isdigit():
            raise SlurmError(f"sbatch printed no job id: {out.strip()!r}")
        return job_id

    def show_job(self, job_id: str) -> dict[str, str] | None:
        """`scontrol show job -o ID` as a dict (of a job array's id: array_record of its tasks); for a job
        slurmctld has forgotten (MinJobAge after its end) what sacct keeps of it; None when neither knows
        the job."""
        argv = ["scontrol", "show", "job", "-o", str(job_id)]
        try:
            out = self.run(argv)
        except SlurmError as err:
            if _INVALID_JOB in str(err):
                return self.accounted_job(job_id)
            raise
        records = [parse_job_record(line) for line in out.splitlines() if line.strip()]
        if not records:
            return self.accounted_job(job_id)
        if records[0].get("ArrayJobId") == str(job_id) and "ArrayTaskId" in records[0]:
            return array_record(str(job_id), records)  # the array's id: all of its tasks' lines
        return records[0]

    def accounted_job(self, job_id: str) -> dict[str, str] | None:
        """A finished job's state and exit code from Slurm's accounting (sacct, with slurmdbd) or, on a
        cluster without it, its job completion log (sacct -c, JobCompType=jobcomp/filetxt); None when the
        cluster keeps neither or neither has the job."""
        fields = ["-n", "-P", "-o", "JobID,State,ExitCode", "-j", str(job_id)]
        for argv in (["sacct", "-X", *fields], ["sacct", "-c", *fields]):
            try:
                record = parse_sacct(self.run(argv), str(job_id))
            except SlurmError:
                continue  # accounting storage disabled, or no completion log: the next source, or none
            if record is not None:
                return record
        return None

    def jobs(self, user: str | None = None, name: str | None = None) -> list[dict[str, str]]:
        """Jobs Slurm knows (any state, newest last) as dicts of squeue fields."""
        fields = {"JobId": "%i", "JobName": "%j", "JobState": "%T", "Reason": "%r", "RunTime": "%M"}
        fields |= {"NumNodes": "%D", "NodeList": "%N", "Command": "%o", "UserName": "%u"}
        sep = "\x1f"
        argv = ["squeue", "-h", "-t", "all", "-o", sep.join(fields.values())]
        argv += ["-u", user] if user else []
        argv += ["-n", name] if name else []
        rows = [dict(zip(fields, line.split(sep), strict=False)) for line in self.run(argv).splitlines()]
        return sorted((row for row in rows if row.get("JobId")), key=lambda row: _job_number(row["JobId"]))

    def cancel(self, job_id: str, signal: str | None = None, batch: bool = False) -> None:
        """scancel the job, or only send it `signal` (to its steps; to the batch script with batch=True)."""
        argv = ["scancel"]
        argv += [f"--signal={signal}"] if signal else []
        argv += ["--batch"] if batch else []
        self.run([*argv, str(job_id)])

    def requeue(self, job_id: str) -> None:
        self.run(["scontrol", "requeue", str(job_id)])

    def start_now(self, job_id: str) -> None:
        """Clear a pending job's begin time (a requeued job waits about two minutes otherwise)."""
        self.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"])

    def partitions(self) -> list[str]:
        out = self.run(["scontrol", "show", "partition", "-o"])
        return re.findall(r"^PartitionName=(\S+)", out, flags=re.MULTILINE)


def _job_number(job_id: str) -> tuple[int, str]:
    head = re.match(r"\d+", job_id)
    return (int(head.group()) if head else 0, job_id)


def _explain(argv: Sequence[str], stderr: str) -> str:
    """Slurm's error text, with what it means for a torchyard job file where we know."""
    command = " ".join(argv[:2])
    hints = {
        "Invalid partition name": "the partition does not exist: set spec.slurm.partition to one "
        "that `sinfo -s` lists, or leave it unset for the cluster's default",
        "Requested node configuration is not available": "no node has what the job asks for: check "
        "spec.nodes, procsPerNode, gpusPerNode, resources and slurm.extraArgs against `sinfo -N -l`",
        "Node count specification invalid": "more nodes than the partition has: lower spec.nodes",
        "Invalid account": "spec.slurm.account is not an account you may use (sacctmgr show assoc)",
        "Invalid qos": "spec.slurm.qos is not a QOS you may use",
        "Requested time limit is invalid": "spec.slurm.time exceeds the partition's MaxTime",
        "Unable to contact slurm controller": "slurmctld is not reachable: check SLURM_CONF and the cluster",
        "Munge encode failed": "munged is not running or not reachable (check with munge -n)",
    }
    hint = next((text for key, text in hints.items() if key.lower() in stderr.lower()), "")
    return f"{command} failed: {stderr or 'no message'}" + (f"\n  -> {hint}" if hint else "")
