"""Children of OpenMMLab's own runtime and schedule files (tests/trainer/openmmlab/) train unchanged, with the
schedules acting as mmengine's: the learning rates logged are the ones mmengine computed for the same
schedule (tests/trainer/mmengine_schedules.json, recorded by bench/record_mmengine.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from torchyard.contract.workdir import SCALARS

from .runner_helpers import BIN

CONFIGS = Path(__file__).parent / "openmmlab"
RECORDED = json.loads((Path(__file__).parent / "mmengine_schedules.json").read_text())["cases"]


def train(config: Path, work_dir: Path, *options: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    result = subprocess.run([str(BIN / "torchyard-train"), str(config), "--work-dir", str(work_dir),
                             "--cfg-options", *options], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [json.loads(line) for line in (work_dir / SCALARS).read_text().splitlines()]
    return result, [row for row in rows if row["mode"] == "train"]


@pytest.mark.e2e
def test_mmsegmentation_schedule_20k_shortened_trains_with_mmengines_poly_lr(tmp_path):
    result, rows = train(CONFIGS / "mmseg/digits_poly_20k.py", tmp_path,
                         "train_cfg.max_iters=40", "train_cfg.val_interval=20", "param_scheduler.0.end=40",
                         "default_hooks.logger.interval=1", "default_hooks.checkpoint.interval=20")

    # The iteration-based PolyLR has stepped when iteration k is logged: the lr shown is iteration k+1's.
    expected = [lr for lr, _ in RECORDED["mmseg-poly"]["lr_momentum"]]
    assert [row["iter"] for row in rows] == list(range(1, 41))
    assert [row["lr"] for row in rows[:-1]] == [pytest.approx(lr, rel=1e-9) for lr in expected[1:]]
    assert sorted(path.name for path in tmp_path.glob("iter_*.pth")) == ["iter_20.pth", "iter_40.pth"]
    assert "tta_model: ignored: used only by test-time augmentation" in result.stdout + result.stderr


@pytest.mark.e2e
def test_mmpretrain_imagenet_bs256_shortened_trains_with_mmengines_multistep_lr(tmp_path):
    result, rows = train(CONFIGS / "mmpretrain/digits_bs256.py", tmp_path,
                         "train_cfg.max_epochs=3", "param_scheduler.milestones=[1,2]",
                         "default_hooks.logger.interval=1")

    # The epoch-based MultiStepLR steps after an epoch's last log: iteration k shows its own lr.
    expected = [lr for lr, _ in RECORDED["mmpretrain-multistep"]["lr_momentum"]]
    assert len(rows) == len(expected) == 69
    assert [row["lr"] for row in rows] == [pytest.approx(lr, rel=1e-9) for lr in expected]
    assert sorted(path.name for path in tmp_path.glob("epoch_*.pth")) == [f"epoch_{e}.pth" for e in (1, 2, 3)]
    assert "randomness.seed=None: drew seed" in result.stdout + result.stderr
