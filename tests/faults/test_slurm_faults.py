"""SIGKILL of one node's trainer on the real single-host Slurm (tests/slurm/cluster.sh).

What the product promises on Slurm, as on Kubernetes: after a crash the batch script requeues the whole job
(up to backoffLimit times), the next run resumes from the last checkpoint and finishes with weights
bit-identical to an uninterrupted `torchyard run` of the same spec. A job stopped at a checkpoint (time
limit, USR1) requeues itself up to slurm.maxRequeues times: tests/slurm.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ..trainer.runner_helpers import assert_same_training_state, final_state
from .faults_helpers import job_folder

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]
TORCHYARD = str(Path(sys.executable).with_name("torchyard"))
KILL_AT = random.Random(11).randint(24, 68)  # in epoch 2 or 3 of 4 (23 iterations each), after a checkpoint


def _torchyard(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TORCHYARD, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


OPTIONS = ["optim_wrapper.optimizer.lr=0.05", "train_cfg.max_epochs=4"]


def test_sigkill_of_one_node_requeues_the_job_which_resumes_bit_identical(slurm_cluster, tmp_path):
    submit, local = tmp_path / "submit", tmp_path / "local"
    job_folder(submit, OPTIONS, kill_at=KILL_AT)
    job_folder(local, OPTIONS)
    work_dir = submit / "work_dirs/digits-mlp"

    ran = _torchyard("slurm", "submit", "job.yaml", "--wait", cwd=submit)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    job_id = ran.stdout.split()[0]
    assert (work_dir / f".killed_at_{KILL_AT}").exists(), ran.stderr
    err = (work_dir / f"slurm-{job_id}.err").read_text()
    assert f"a trainer failed (exit 1) (backoffLimit); requeueing job {job_id} (1 of 3)" in err, err
    status = _torchyard("slurm", "status", "digits-mlp", cwd=submit)
    assert re.search(r"^restarts\s+1$", status.stdout, re.M), status.stdout + status.stderr
    log = (work_dir / "train.log").read_text()
    resumed = re.findall(r"resumed from (\S+)", log)
    assert len(resumed) == 1 and Path(resumed[0]).name.startswith("epoch_"), log[-3000:]

    reference = _torchyard("run", "job.yaml", cwd=local)
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert_same_training_state(final_state(local / "work_dirs/digits-mlp"), final_state(work_dir))


def test_a_config_error_is_not_requeued(slurm_cluster, tmp_path):
    job_folder(tmp_path, ["model.type=NoSuchModel"])
    ran = _torchyard("slurm", "submit", "job.yaml", "--wait", cwd=tmp_path)
    assert ran.returncode != 0, ran.stdout + ran.stderr
    job_id = ran.stdout.split()[0]
    err = (tmp_path / f"work_dirs/digits-mlp/slurm-{job_id}.err").read_text()
    assert "NoSuchModel" in err and "a restart cannot fix: no requeue" in err, err
    assert "requeueing" not in err, err


def test_restart_policy_never_is_not_requeued_after_a_crash(slurm_cluster, tmp_path):
    job_folder(tmp_path, OPTIONS, kill_at=KILL_AT, restartPolicy="Never")
    ran = _torchyard("slurm", "submit", "job.yaml", "--wait", cwd=tmp_path)
    assert ran.returncode != 0, ran.stdout + ran.stderr
    job_id = ran.stdout.split()[0]
    err = (tmp_path / f"work_dirs/digits-mlp/slurm-{job_id}.err").read_text()
    assert "restartPolicy Never does not restart a failure (exit 1): no requeue" in err, err
    assert "requeueing" not in err, err
