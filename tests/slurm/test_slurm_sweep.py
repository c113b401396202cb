"""A sweep (slurm.sweep) as one job array on the session's real Slurm: each run in its own work dir with
its own options, the array's state from its runs', status and logs per run, the SDK's status.runs."""

from __future__ import annotations

import re

import pytest

from torchyard.operator import SlurmJobs
from torchyard.operator.api.spec import Phase

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]

NAME = "digits-mlp-sweep"


@pytest.fixture(scope="module")
def swept(slurm_cluster, yard, tmp_path_factory):
    """examples/sweep.yaml cut to two learning rates of two epochs, and a third run whose option is wrong."""
    submit = yard.workspace(tmp_path_factory.mktemp("sweep"))
    sweep = {"grid": {"optim_wrapper.optimizer.lr": [0.05, 0.2]}, "points": [["model.hidden=abc"]],
             "maxParallel": 2}  # fmt: skip
    spec = yard.example("sweep.yaml", cfgOptions=["train_cfg.max_epochs=2"], slurm={"sweep": sweep})
    job = yard.write_job(submit, spec, "sweep.yaml")
    submitted = yard.torchyard("slurm", "submit", str(job), "--wait", cwd=submit)
    return {"submit": submit, "spec": spec, "result": submitted, "job_id": submitted.stdout.split()[0],
            "work_dir": submit / "work_dirs" / NAME}  # fmt: skip


def test_the_array_fails_because_one_run_failed_and_says_which(swept):
    result = swept["result"]
    assert result.returncode == 1, result.stderr  # --wait: not every run COMPLETED
    assert "a sweep of 3 runs (array tasks 0-2" in result.stderr
    assert re.search(r"job \d+ FAILED: .*runs: 0-1 COMPLETED, 2 FAILED", result.stderr), result.stderr


def test_each_run_trains_with_its_own_options_in_its_own_work_dir(swept, yard):
    runs = [swept["work_dir"] / str(i) for i in range(2)]
    for run, lr in zip(runs, (0.05, 0.2), strict=True):
        assert (run / "last_checkpoint").read_text().strip().endswith("epoch_2.pth")
        assert f"'lr': {lr}" in (run / "digits_mlp.py").read_text()
    assert yard.val_metrics(runs[0]) != yard.val_metrics(runs[1])
    assert not list(swept["work_dir"].glob("epoch_*.pth"))  # nothing of a run lands in the sweep's own dir


def test_a_run_matches_the_same_options_as_a_job_of_its_own(swept, yard, tmp_path):
    single = dict(swept["spec"], spec=dict(swept["spec"]["spec"]))
    single["spec"]["cfgOptions"] = ["train_cfg.max_epochs=2", "optim_wrapper.optimizer.lr=0.2"]
    single["spec"]["slurm"] = {k: v for k, v in single["spec"]["slurm"].items() if k != "sweep"}
    local = yard.workspace(tmp_path / "local")
    ran = yard.torchyard("run", str(yard.write_job(local, single, "one.yaml")), cwd=local)
    assert ran.returncode == 0, ran.stderr
    assert yard.val_metrics(swept["work_dir"] / "1") == yard.val_metrics(local / "work_dirs" / NAME)


def test_status_shows_the_array_and_one_line_per_run(swept, yard):
    status = yard.torchyard("slurm", "status", NAME, cwd=swept["submit"])
    assert status.returncode == 0, status.stderr
    assert re.search(r"^state\s+FAILED -> Failed", status.stdout, re.M), status.stdout
    runs = {line.split()[0]: line for line in status.stdout.splitlines()[-3:]}
    assert runs["0"].split()[1] == "COMPLETED" and "accuracy/top1" in runs["0"]
    assert runs["0"].endswith("optim_wrapper.optimizer.lr=0.05")
    assert runs["2"].split()[1:3] == ["FAILED", "-"] and runs["2"].endswith("model.hidden=abc")
    by_id = yard.torchyard("slurm", "status", swept["job_id"], cwd=swept["submit"])
    assert by_id.stdout == status.stdout
    listed = yard.torchyard("slurm", "list", cwd=swept["submit"])
    row = next(line for line in listed.stdout.splitlines() if NAME in line)
    assert row.split()[:5] == [swept["job_id"], "TrainJob", NAME, "FAILED", "(3"], listed.stdout


def test_logs_are_per_run(swept, yard):
    failed = yard.torchyard("slurm", "logs", NAME, "--run", "2", cwd=swept["submit"])
    assert failed.returncode == 0 and "model.hidden" in failed.stderr, failed.stderr
    unchosen = yard.torchyard("slurm", "logs", NAME, cwd=swept["submit"])
    assert unchosen.returncode == 1
    assert "is a sweep of 3 runs (0-2): choose one, e.g. --run 0" in unchosen.stderr


def test_the_sdk_status_has_each_runs_state_and_progress(swept):
    status = SlurmJobs(cwd=swept["submit"]).status(NAME)

    assert status.phase is Phase.FAILED and status.slurm_job_id == swept["job_id"]
    states = [(run.index, run.state) for run in status.runs]
    assert states == [(0, "COMPLETED"), (1, "COMPLETED"), (2, "FAILED")]
    assert status.runs[1].cfg_options == ["optim_wrapper.optimizer.lr=0.2"]
    assert status.runs[1].last_checkpoint.endswith("1/epoch_2.pth") and status.runs[1].metrics
    assert not status.runs[2].metrics
    assert "#SBATCH --array=0-2%2" in (swept["work_dir"] / "torchyard.sbatch").read_text()
