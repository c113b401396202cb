"""The Slurm backend's edge helpers (operator/slurm/backend.py): work-dir progress, the record, errors, CLI.
The loop itself runs end to end in test_backend_e2e.py."""

from __future__ import annotations

import json

from torchyard.operator.errors import SlurmError
from torchyard.operator.slurm.backend import is_transient
from torchyard.operator.slurm.bridge import read_progress


def test_progress_comes_from_the_work_dir(tmp_path, train_job, test_job):
    (tmp_path / "scalars.jsonl").write_text(
        json.dumps({"mode": "val", "epoch": 1, "iter": 9, "accuracy/top1": 50.0}) + "\n"
    )
    (tmp_path / "last_checkpoint").write_text(f"{tmp_path}/epoch_1.pth\n")
    progress = read_progress("TrainJob", tmp_path)
    assert progress == {
        "metrics": {"accuracy/top1": 50.0},
        "lastCheckpoint": f"{tmp_path}/epoch_1.pth",
        "bestCheckpoint": None,
    }
    (tmp_path / "metrics.json").write_text(json.dumps({"metrics": {"a/b": 1.5}, "checkpoint": "/c.pth"}))
    tested = read_progress("TestJob", tmp_path)
    assert tested == {"metrics": {"a/b": 1.5}, "headlineMetric": "a/b: 1.5", "checkpoint": "/c.pth"}


def test_only_unreachable_slurm_is_transient():
    assert is_transient(SlurmError("scontrol show did not answer within 30 s: is slurmctld reachable"))
    assert is_transient(SlurmError("sbatch failed: Unable to contact slurm controller (connect failure)"))
    assert not is_transient(SlurmError("sbatch failed: Invalid partition name specified"))


def test_operator_run_takes_the_slurm_backend(tmp_path):
    from torchyard.operator.cli.main import build_parser

    args = build_parser().parse_args(
        ["operator", "run", "--backend", "slurm", "--submit-dir", str(tmp_path), "--poll-seconds", "2"]
    )
    assert (args.backend, args.submit_dir, args.poll_seconds) == ("slurm", tmp_path, 2.0)
    assert build_parser().parse_args(["operator", "run"]).backend == "pods"


def test_the_slurm_registry_watches_no_pods():
    from torchyard.operator.control.handlers import build_registry
    from torchyard.operator.slurm.backend import SlurmBackend

    registry = build_registry(SlurmBackend())  # kopf has no public listing: its per-purpose registries
    parts = (registry._indexing, registry._watching, registry._spawning, registry._changing)
    names = {handler.selector.any_name for part in parts for handler in part.get_all_handlers()}
    assert names == {"trainjobs", "testjobs"}


class ForgetfulSlurm:
    """show_job as Slurm answers after MinJobAge: it no longer knows the job (or `info`)."""

    def __init__(self, info: dict | None = None) -> None:
        self.info = info

    def show_job(self, job_id: str) -> dict | None:
        return self.info


def test_a_forgotten_job_is_its_last_finished_state_in_the_record(tmp_path):
    from torchyard.operator.slurm.backend import observe
    from torchyard.operator.slurm.bridge import Record, read_record

    record = Record("x", "TrainJob", "7", str(tmp_path), str(tmp_path), "s", "2026-01-01T00:00:00+00:00")
    record.save()
    assert observe(ForgetfulSlurm(), "7", tmp_path) is None  # never seen: unknown
    running = {"JobId": "7", "JobState": "RUNNING", "Reason": "None", "ExitCode": "0:0"}
    assert observe(ForgetfulSlurm(running), "7", tmp_path) == running
    assert observe(ForgetfulSlurm(), "7", tmp_path) is None  # last seen running: still unknown
    done = {**running, "JobState": "COMPLETED"}
    observe(ForgetfulSlurm(done), "7", tmp_path)
    assert read_record(tmp_path).last_state == "COMPLETED"
    assert observe(ForgetfulSlurm(), "7", tmp_path) == {
        k: done[k] for k in ("JobId", "JobState", "Reason", "ExitCode")
    }
    assert observe(ForgetfulSlurm(), "8", tmp_path) is None  # another job's record says nothing
