"""SIGKILL of one rank of a 2-process torchrun job at seeded steps, during a checkpoint write and during
validation; `--resume` then finishes with weights bit-identical to an uninterrupted deterministic run. And
through `torchyard run` of a job file, which restarts the whole gang by itself.

(tests/trainer/test_runner.py kills at two fixed steps; these add seeded steps and the two risky moments.)
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from ..trainer.runner_helpers import (
    assert_same_training_state,
    final_state,
    make_cfg,
    run_trainer,
    write_config,
)
from .faults_helpers import job_folder, module_text

MAX_ITERS, CKPT_EVERY, VAL_EVERY = 40, 8, 20


def _cfg(work_dir: Path, hooks: list | None = None) -> dict:
    return make_cfg(
        work_dir,
        train_cfg=dict(by_epoch=False, max_iters=MAX_ITERS, val_interval=VAL_EVERY),
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=CKPT_EVERY)),
        custom_hooks=hooks or [],
        # 90 validation images per rank in 3 batches: a kill after the second is inside the validation
        val_dataloader=dict(batch_size=32, dataset=dict(type="DigitsDataset", split="val")),
    )


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict:
    """The uninterrupted run every case compares with (run once for the module)."""
    tmp = tmp_path_factory.mktemp("straight")
    (tmp / "fault_hooks.py").write_text(module_text())
    result = run_trainer(tmp, write_config(tmp / "cfg.py", _cfg(tmp / "wd")), nproc=2)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return final_state(tmp / "wd")


def _seeded_step(seed: int) -> int:
    return random.Random(seed).randint(1, MAX_ITERS - 1)


CASES = [
    *(
        pytest.param(
            [dict(type="KillAt", at=step, rank=1)],
            step // CKPT_EVERY * CKPT_EVERY,
            id=f"seed{seed}-iter{step}",
        )
        for seed, step in ((s, _seeded_step(s)) for s in (0, 1, 2))
    ),
    # rank 0 (the only writer) dies half-way through writing iter_24.pth: iter_16.pth is the last one
    pytest.param([dict(type="DieWhileSaving", at=24)], 16, id="during-checkpoint-write"),
    # rank 1 dies inside the validation of iteration 20 (after two val batches): iter_16.pth is the last one
    pytest.param(
        [dict(type="KillInValidation", at=VAL_EVERY, rank=1, batches=2)], 16, id="during-validation"
    ),
]


@pytest.mark.e2e
@pytest.mark.timeout(900)
@pytest.mark.parametrize(("hooks", "resumed_at"), CASES)
def test_rank_killed_then_resumed_is_bit_identical(tmp_path, straight, hooks, resumed_at):
    (tmp_path / "fault_hooks.py").write_text(module_text())
    work_dir = tmp_path / "wd"
    killed = run_trainer(
        tmp_path, write_config(tmp_path / "killed.py", _cfg(work_dir, hooks), "fault_hooks"), nproc=2
    )
    assert killed.returncode != 0, "the killed run must fail, not finish"
    assert not (work_dir / f"iter_{MAX_ITERS}.pth").exists()

    resumed_cfg = write_config(tmp_path / "resumed.py", _cfg(work_dir))
    resumed = run_trainer(tmp_path, resumed_cfg, "--resume", nproc=2)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    if resumed_at:
        assert f"resumed from {work_dir / f'iter_{resumed_at}.pth'}" in resumed.stdout, resumed.stdout[-3000:]
    assert_same_training_state(straight, final_state(work_dir))


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_torchyard_run_restarts_the_whole_gang_which_resumes_bit_identical(tmp_path):
    """The job-file path on one machine: `torchyard run` restarts the gang itself, as the operator does."""
    kill_at = 24 + random.Random(7).randint(0, 21)  # in epoch 2 of digits_mlp (23 iterations each)
    runs = {}
    for name, kill in (("killed", kill_at), ("straight", None)):
        job_folder(tmp_path / name, ["train_cfg.max_epochs=3"], kill_at=kill)
        runs[name] = subprocess.run(
            [str(Path(sys.executable).with_name("torchyard")), "run", "job.yaml"],
            cwd=tmp_path / name,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert runs[name].returncode == 0, runs[name].stderr[-3000:]

    killed = tmp_path / "killed/work_dirs/digits-mlp"
    assert (killed / f".killed_at_{kill_at}").exists()
    stderr = runs["killed"].stderr
    assert "restarting the whole job (1 of 3), from the last checkpoint" in stderr, stderr[-3000:]
    assert f"resumed from {killed / 'epoch_1.pth'}" in (killed / "train.log").read_text()
    assert "restarting" not in runs["straight"].stderr
    assert_same_training_state(final_state(tmp_path / "straight/work_dirs/digits-mlp"), final_state(killed))
