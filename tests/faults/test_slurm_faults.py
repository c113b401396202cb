"""SIGKILL of one node's trainer on the real single-host Slurm (tests/slurm/cluster.sh).

What the product promises on Slurm: a job stopped at a checkpoint (time limit, USR1) requeues itself up to
slurm.maxRequeues times (tests/slurm). A crash is not a stop at a checkpoint: the job fails, visibly, and is
not requeued; its checkpoints stay, and submitting the same file again (resume: auto) resumes from the last
one and finishes with weights bit-identical to an uninterrupted `torchyard run` of the same spec.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from faults_helpers import module_text
from test_runner import assert_same_training_state, final_state

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]
REPO = Path(__file__).resolve().parents[2]
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


def _job(config: str) -> dict:
    job = yaml.safe_load((REPO / "examples/trainjob.yaml").read_text())
    job["spec"].update(
        config=config, cfgOptions=["optim_wrapper.optimizer.lr=0.05", "train_cfg.max_epochs=4"]
    )
    return job


def test_sigkill_of_one_node_fails_the_job_and_a_resubmission_resumes_bit_identical(slurm_cluster, tmp_path):
    submit, local = tmp_path / "submit", tmp_path / "local"
    for folder in (submit, local):
        folder.mkdir()
        (folder / "configs").symlink_to(REPO / "configs")
    (submit / "fault_hooks.py").write_text(module_text())
    (submit / "faulty.py").write_text(
        "_base_ = ['configs/digits_mlp.py']\n"
        "custom_imports = dict(imports=['fault_hooks'])\n"
        f"custom_hooks = [dict(type='KillOnceAt', at={KILL_AT}, rank=1)]\n"
    )
    (submit / "job.yaml").write_text(yaml.safe_dump(_job("faulty.py")))
    (local / "job.yaml").write_text(yaml.safe_dump(_job("configs/digits_mlp.py")))
    work_dir = submit / "work_dirs/digits-mlp"

    killed = _torchyard("slurm", "submit", "job.yaml", "--wait", cwd=submit)
    assert killed.returncode != 0, killed.stdout + killed.stderr
    job_id = killed.stdout.split()[0]
    assert (work_dir / f".killed_at_{KILL_AT}").exists(), killed.stderr
    state = subprocess.run(
        ["sacct", "-n", "-X", "-j", job_id, "-o", "State,Restarts"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.split()
    assert state[:1] in (["FAILED"], []), state  # failed, not requeued (sacct may be absent: no accounting)
    status = _torchyard("slurm", "status", "digits-mlp", cwd=submit)
    assert "Failed" in status.stdout + status.stderr, status.stdout + status.stderr
    assert "Traceback" not in killed.stderr
    checkpoint = (work_dir / "last_checkpoint").read_text()
    assert Path(checkpoint).exists()

    resumed = _torchyard("slurm", "submit", "job.yaml", "--wait", cwd=submit)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resumed from {checkpoint}" in (work_dir / "train.log").read_text()

    reference = _torchyard("run", "job.yaml", cwd=local)
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert_same_training_state(final_state(local / "work_dirs/digits-mlp"), final_state(work_dir))
