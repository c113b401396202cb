"""The Slurm bridge without a cluster: state mapping, records, dry runs, missing sbatch, shellcheck."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from torchyard.contract.workdir import read_pointer
from torchyard.operator.api.conditions import (
    CANCELLED,
    COMPLETED,
    NODE_FAILURE,
    OUT_OF_MEMORY,
    PREEMPTED,
    QUEUED,
    REQUEUED,
    SLURM_RUNNING,
    TIME_LIMIT,
    UNSCHEDULABLE,
    WAITING_FOR_RESOURCES,
)
from torchyard.operator.api.jobfile import load_jobs
from torchyard.operator.api.spec import JobStatus, Phase
from torchyard.operator.errors import SlurmError
from torchyard.operator.slurm.bridge import RECORD, Record, find_record, log_paths, read_progress, read_record
from torchyard.operator.slurm.observe import job_phase, parse_job_record, parse_sacct
from torchyard.operator.slurm.render import render_slurm

REPO = Path(__file__).resolve().parents[2]
SCONTROL = (
    "JobId=12 JobName=digits-mlp UserId=root(0) JobState=RUNNING Reason=None Dependency=(null) Requeue=1 "
    "Restarts=0 BatchFlag=1 ExitCode=0:0 RunTime=00:00:05 TimeLimit=01:00:00 NodeList=n[1-2] "
    "Command=/runs/my job/torchyard.sbatch WorkDir=/runs StdOut=/runs/work_dirs/x/slurm-12.out Power="
)


def test_parse_job_record_keeps_values_with_spaces():
    info = parse_job_record(SCONTROL)
    assert info["JobState"] == "RUNNING" and info["NodeList"] == "n[1-2]"
    assert info["Command"] == "/runs/my job/torchyard.sbatch"
    assert info["Power"] == ""


@pytest.mark.parametrize(
    ("state", "reason", "restarts", "phase", "constant"),
    [
        ("PENDING", "None", "0", Phase.PENDING, QUEUED),
        ("PENDING", "Priority", "0", Phase.PENDING, QUEUED),
        ("PENDING", "Resources", "0", Phase.PENDING, WAITING_FOR_RESOURCES),
        ("PENDING", "PartitionNodeLimit", "0", Phase.PENDING, UNSCHEDULABLE),
        ("PENDING", "BeginTime", "1", Phase.RESTARTING, REQUEUED),
        ("REQUEUED", "None", "1", Phase.RESTARTING, REQUEUED),
        ("RUNNING", "None", "0", Phase.RUNNING, SLURM_RUNNING),
        ("COMPLETING", "None", "0", Phase.RUNNING, SLURM_RUNNING),
        ("COMPLETED", "None", "0", Phase.SUCCEEDED, COMPLETED),
        ("FAILED", "NonZeroExitCode", "0", Phase.FAILED, "Failed"),
        ("CANCELLED by 0", "None", "0", Phase.FAILED, CANCELLED),
        ("TIMEOUT", "TimeLimit", "0", Phase.FAILED, TIME_LIMIT),
        ("PREEMPTED", "None", "0", Phase.FAILED, PREEMPTED),
        ("NODE_FAIL", "None", "0", Phase.FAILED, NODE_FAILURE),
        ("OUT_OF_MEMORY", "OutOfMemory", "0", Phase.FAILED, OUT_OF_MEMORY),
        ("SUSPENDED", "None", "0", Phase.SUSPENDED, "Suspended"),
    ],
)
def test_job_phase(state, reason, restarts, phase, constant):
    seen = job_phase({"JobId": "7", "JobState": state, "Reason": reason, "Restarts": restarts})
    assert (seen.phase, seen.reason) == (phase, constant)
    assert seen.terminal == (phase in (Phase.FAILED, Phase.SUCCEEDED))
    assert seen.unsatisfiable == (constant == UNSCHEDULABLE)
    assert "7" in seen.message


def test_unsatisfiable_message_names_the_field():
    seen = job_phase({"JobId": "7", "JobState": "PENDING", "Reason": "PartitionNodeLimit"})
    assert "spec.nodes" in seen.message and "cannot start" in seen.message


def _record(work_dir: Path, job_id: str = "5", name: str = "digits-mlp") -> Record:
    return Record(name, "TrainJob", job_id, str(work_dir), str(work_dir.parent), "s", "t")


def test_record_round_trip_and_lookup_by_name_and_file(tmp_path):
    work_dir = tmp_path / "work_dirs/digits-mlp"
    work_dir.mkdir(parents=True)
    _record(work_dir).save()
    assert read_record(work_dir) == _record(work_dir)
    assert find_record("digits-mlp", cwd=tmp_path).job_id == "5"
    shutil.copy(REPO / "examples/trainjob.yaml", tmp_path / "trainjob.yaml")
    assert find_record("trainjob.yaml", cwd=tmp_path).job_id == "5"
    (work_dir / "last_checkpoint").write_text(f"{work_dir}/epoch_2.pth\n")
    assert read_pointer(work_dir, "latest") == f"{work_dir}/epoch_2.pth"


def test_a_sweeps_progress_is_each_runs_for_the_operators_status(tmp_path):
    work_dir = tmp_path / "work_dirs/sweep"
    record = _record(work_dir, name="sweep")
    record.runs = [["lr=0.1"], ["lr=0.2"]]
    (work_dir / "1").mkdir(parents=True)
    record.save()
    validated = {"mode": "val", "epoch": 1, "iter": 9, "accuracy/top1": 90.0}
    (work_dir / "1/scalars.jsonl").write_text(json.dumps(validated) + "\n")
    (work_dir / "1/last_checkpoint").write_text(f"{work_dir}/1/epoch_1.pth\n")

    runs = read_progress("TrainJob", work_dir, record.runs)["runs"]

    assert runs == [{"index": 0, "cfgOptions": ["lr=0.1"], "metrics": {}},
                    {"index": 1, "cfgOptions": ["lr=0.2"], "metrics": {"accuracy/top1": 90.0},
                     "lastCheckpoint": f"{work_dir}/1/epoch_1.pth"}]  # fmt: skip
    assert JobStatus(runs=runs).runs[1].last_checkpoint.endswith("1/epoch_1.pth")  # what status.runs takes


def test_a_sweeps_logs_are_a_runs(tmp_path):
    record = _record(tmp_path, job_id="70")
    record.runs = [["a=1"], ["a=2"]]

    assert log_paths(record, run=1) == [tmp_path / "1/slurm-70_1.out", tmp_path / "1/slurm-70_1.err"]
    with pytest.raises(SlurmError, match=r"a sweep of 2 runs \(0-1\); 2 is not one of them"):
        log_paths(record, run=2)
    with pytest.raises(SlurmError, match="is not a sweep"):
        log_paths(_record(tmp_path), run=0)


def test_remember_keeps_the_last_state(tmp_path):
    record = _record(tmp_path)
    record.save()
    record.remember({"JobState": "COMPLETED", "Reason": "None", "ExitCode": "0:0"})
    assert read_record(tmp_path).last_state == "COMPLETED"


def test_a_broken_record_says_what_to_do(tmp_path):
    (tmp_path / RECORD).write_text("{not json")
    with pytest.raises(Exception, match="delete it and submit again"):
        read_record(tmp_path)


def _cli(*args, cwd, env=None):
    torchyard = Path(sys.executable).with_name("torchyard")
    return subprocess.run(
        [str(torchyard), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120
    )


def test_dry_run_prints_the_script_and_writes_nothing(tmp_path):
    shutil.copy(REPO / "examples/trainjob.yaml", tmp_path / "trainjob.yaml")
    result = _cli("slurm", "submit", "trainjob.yaml", "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == render_slurm(load_jobs(tmp_path / "trainjob.yaml")[0])
    assert not (tmp_path / "work_dirs").exists()


def test_missing_sbatch_is_a_clear_error(tmp_path):
    shutil.copy(REPO / "examples/trainjob.yaml", tmp_path / "trainjob.yaml")
    result = _cli(
        "slurm", "submit", "trainjob.yaml", cwd=tmp_path, env={**os.environ, "PATH": "/nonexistent"}
    )
    assert result.returncode == 1
    assert "sbatch not found on PATH" in result.stderr and "slurm-client" in result.stderr


def test_an_invalid_file_exits_2(tmp_path):
    (tmp_path / "bad.yaml").write_text("kind: TrainJob\nmetadata: {name: x}\nspec: {nodes: 0}\n")
    result = _cli("slurm", "submit", "bad.yaml", cwd=tmp_path)
    assert result.returncode == 2 and "spec.nodes" in result.stderr


SHELLCHECK = shutil.which("shellcheck")


@pytest.mark.parametrize("example", sorted(p.name for p in (REPO / "examples").glob("*.yaml")))
def test_every_example_script_passes_shellcheck(example, tmp_path):
    if SHELLCHECK is None:
        pytest.fail("shellcheck is not installed: run `make system-deps` (apt-get install shellcheck)")
    jobs = load_jobs(REPO / "examples" / example)
    train_jobs = load_jobs(REPO / "examples/trainjob.yaml")
    for i, job in enumerate(jobs):
        path = tmp_path / f"{i}.sbatch"
        path.write_text(render_slurm(job, train_jobs[0]))
        result = subprocess.run([SHELLCHECK, "--severity=style", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


def test_parse_sacct_reads_the_jobs_own_row_not_its_steps():
    rows = "41.batch|COMPLETED|0:0\n41|CANCELLED by 0|0:15\n41.0|CANCELLED|0:15\n"

    assert parse_sacct(rows, "41") == {"JobId": "41", "JobState": "CANCELLED", "ExitCode": "0:15",
                                       "Reason": "None"}
    assert parse_sacct(rows, "4") is None
    assert parse_sacct("", "41") is None
