"""The x2 super-resolution task: scikit-image patches, the VDSR-style model, and a short training run whose
PSNR beats the bicubic input scored by the same metric."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from torchyard.trainer.config import Config, ConfigError
from torchyard.trainer.dist import DistEnv
from torchyard.trainer.evaluation import Evaluator
from torchyard.trainer.metrics.restoration import psnr
from torchyard.trainer.runner import Runner
from torchyard.trainer.tasks.restoration import VDSR, SkimageSRDataset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def val_set() -> SkimageSRDataset:
    return SkimageSRDataset("val", images=("chelsea",), patch_size=96)


def test_training_validation_and_test_use_different_photos():
    defaults = SkimageSRDataset.default_images
    assert not set(defaults["train"]) & set(defaults["val"])
    assert not set(defaults["train"]) & set(defaults["test"])
    assert not set(defaults["val"]) & set(defaults["test"])


def test_patches_pair_the_bicubic_upsampling_with_the_original(val_set):
    assert len(val_set) == (300 // 96) * (450 // 96)  # chelsea is 300x451, cropped to even 300x450
    item = val_set[1]
    assert item["inputs"].shape == item["targets"].shape == (3, 96, 96) and item["index"] == 1
    assert 25 < psnr(val_set.inputs, val_set.targets) < 45  # close to the original, not equal to it
    strided = SkimageSRDataset("val", images=("chelsea",), patch_size=96, stride=48)
    assert len(strided) == (1 + (300 - 96) // 48) * (1 + (450 - 96) // 48)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(images=("lena",)), "lena not among the photos that ship with scikit-image"),
    (dict(patch_size=33), "patch_size=33 must be a multiple of scale=2"),
    (dict(split="validation"), "'validation' is not one of train, val, test"),
])
def test_bad_data_set_options_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SkimageSRDataset(**kwargs)


def test_an_untrained_model_is_about_the_bicubic_baseline(val_set):
    torch.manual_seed(0)
    model = VDSR(channels=8, depth=3).eval()
    batch = {"inputs": val_set.inputs[:4], "targets": val_set.targets[:4], "index": torch.arange(4)}
    with torch.no_grad():
        outputs = model(batch, mode="predict")
    assert outputs.shape == batch["targets"].shape
    assert float(outputs.min()) >= 0.0 and float(outputs.max()) <= 1.0
    assert psnr(outputs, batch["targets"]) == pytest.approx(psnr(batch["inputs"], batch["targets"]), abs=0.05)
    assert model(batch, mode="loss")["loss"].item() == pytest.approx(  # the MSE before clamping
        float(((outputs - batch["targets"]) ** 2).mean()), rel=0.05)


def test_visualize_shows_input_output_and_target_with_their_psnr(val_set):
    model = VDSR(channels=8, depth=3).eval()
    batch = {"inputs": val_set.inputs[:2], "targets": val_set.targets[:2], "index": torch.tensor([4, 5])}
    pictures = model.visualize(batch, model(batch, mode="predict"))
    assert [index for index, _ in pictures] == [4, 5]
    picture = pictures[0][1]
    assert picture.dtype == np.uint8 and picture.shape[1] == 3 * 192 + 2 * 4


def test_the_config_reports_the_bicubic_baseline_beside_the_model(val_set):
    cfg = Config.fromfile(REPO / "configs" / "vdsr_x2_skimage.py")
    evaluator = Evaluator.build(cfg.test_evaluator, where="test_evaluator")
    batch = {"inputs": val_set.inputs, "targets": val_set.targets, "index": torch.arange(len(val_set))}
    evaluator.process(batch, val_set.inputs)  # an "output" equal to the bicubic input
    metrics = evaluator.evaluate(DistEnv())
    assert list(metrics) == ["PSNR", "SSIM", "bicubic/PSNR", "bicubic/SSIM"]
    assert metrics["PSNR"] == metrics["bicubic/PSNR"] and metrics["SSIM"] == metrics["bicubic/SSIM"]


@pytest.mark.e2e
def test_a_short_training_run_beats_bicubic(tmp_path):
    cfg = Config.fromfile(REPO / "configs" / "vdsr_x2_skimage.py", cfg_options=[
        f"work_dir={tmp_path}", "train_cfg.max_epochs=6", "train_cfg.val_interval=6",
        "param_scheduler.0.end=6", "default_hooks.logger.interval=50"])
    runner = Runner(cfg)
    try:
        metrics = runner.train()
    finally:
        runner.close()
    assert metrics["PSNR"] > metrics["bicubic/PSNR"] + 0.2, metrics
    assert metrics["SSIM"] > metrics["bicubic/SSIM"], metrics
