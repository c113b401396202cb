"""The shapes segmentation task: generated data, the FCN, a short training run against the all-background
baseline, and (marked e2e) torchyard-test over 2 processes giving exactly the 1-process metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from torchyard.trainer.config import Config, ConfigError
from torchyard.trainer.dist import DistEnv
from torchyard.trainer.evaluation import _gather_records
from torchyard.trainer.metrics.segmentation import IoUMetric
from torchyard.trainer.runner import Runner
from torchyard.trainer.tasks.segmentation import SHAPE_CLASSES, ShapesDataset, ShapesFCN

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_the_data_set_is_deterministic_per_seed_and_split():
    a, b = ShapesDataset("val", num_samples=20), ShapesDataset("val", num_samples=20)
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.targets, ShapesDataset("test", num_samples=20).targets)
    assert not torch.equal(a.targets, ShapesDataset("val", num_samples=20, seed=1).targets)


def test_items_have_every_class_and_ignored_borders():
    data = ShapesDataset("train", num_samples=50, size=32)
    item = data[3]
    assert item["inputs"].shape == (3, 32, 32) and item["inputs"].dtype == torch.float32
    assert item["targets"].shape == (32, 32) and item["targets"].dtype == torch.long and item["index"] == 3
    assert float(data.images.min()) >= 0.0 and float(data.images.max()) <= 1.0
    assert set(data.targets.unique().tolist()) == {*range(len(SHAPE_CLASSES)), 255}
    # Without the ignore band every pixel takes its majority class, so the band is only border pixels.
    plain = ShapesDataset("train", num_samples=50, size=32, ignore_boundary=False)
    assert set(plain.targets.unique().tolist()) == set(range(len(SHAPE_CLASSES)))
    labelled = data.targets != 255
    assert torch.equal(plain.targets[labelled], data.targets[labelled])
    assert 0 < (~labelled).float().mean() < 0.1


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(split="training"), "'training' is not one of train, val, test"),
    (dict(size=8), "needs size >= 16"),
])
def test_bad_data_set_options_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ShapesDataset(**kwargs)


def test_the_model_predicts_logits_at_input_size_and_its_loss_skips_ignored_pixels():
    torch.manual_seed(0)
    model = ShapesFCN(channels=4).eval()
    data = ShapesDataset("val", num_samples=2)
    batch = {"inputs": data.images, "targets": data.targets, "index": torch.arange(2)}
    logits = model(batch, mode="predict")
    assert logits.shape == (2, len(SHAPE_CLASSES), 48, 48)
    only_one_pixel = torch.full_like(data.targets, 255)
    only_one_pixel[0, 5, 5] = 2
    expected = F.cross_entropy(logits[0, :, 5, 5][None], torch.tensor([2]))
    loss = model({**batch, "targets": only_one_pixel}, mode="loss")["loss"]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_visualize_puts_input_ground_truth_and_prediction_side_by_side():
    model = ShapesFCN(channels=4).eval()
    data = ShapesDataset("val", num_samples=2)
    batch = {"inputs": data.images, "targets": data.targets, "index": torch.tensor([7, 8])}
    pictures = model.visualize(batch, model(batch, mode="predict"))
    assert [index for index, _ in pictures] == [7, 8]
    picture = pictures[0][1]
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    assert picture.shape[1] == 3 * 144 + 2 * 4  # three panels, upscaled to 144 pixels, 4 pixels apart


def background_everywhere_miou(dataset_cfg: dict) -> float:
    """The trivial baseline, scored by the same metric: predict background at every pixel."""
    data = ShapesDataset(**{k: v for k, v in dataset_cfg.items() if k != "type"})
    logits = torch.zeros(len(data), len(SHAPE_CLASSES), *data.targets.shape[1:])
    logits[:, 0] = 1.0
    metric = IoUMetric(num_classes=len(SHAPE_CLASSES))
    metric.process({"index": torch.arange(len(data)), "targets": data.targets}, logits)
    return metric.compute(_gather_records(metric.records, DistEnv()))["mIoU"]


@pytest.mark.e2e
def test_a_short_training_run_beats_the_all_background_baseline(tmp_path):
    cfg = Config.fromfile(REPO / "configs" / "shapes_fcn.py", cfg_options=[
        f"work_dir={tmp_path}", "train_cfg.max_epochs=8", "train_cfg.val_interval=8",
        "param_scheduler.1.end=8", "default_hooks.logger.interval=50"])
    runner = Runner(cfg)
    try:
        metrics = runner.train()
    finally:
        runner.close()
    baseline = background_everywhere_miou(cfg.val_dataloader.dataset)
    assert baseline < 25
    assert metrics["mIoU"] > baseline + 30, (metrics, baseline)
    assert metrics["aAcc"] > 90


@pytest.mark.e2e
def test_torchyard_test_on_2_processes_gives_exactly_the_1_process_metrics(tmp_path):
    # 101 test images: one rank gets 51, the other 50. Batches of one image make every image's logits
    # bit-identical however the ranks split the set, so any difference would come from the gathering.
    options = [f"work_dir={tmp_path / 'train'}", "train_cfg.by_epoch=False", "train_cfg.max_iters=30",
               "param_scheduler=None", "val_dataloader=None", "test_dataloader.dataset.num_samples=101",
               "test_dataloader.batch_size=1", "model.channels=4"]
    config = Config.fromfile(REPO / "configs" / "shapes_fcn.py", cfg_options=options)
    runner = Runner(config)
    try:
        runner.train()
    finally:
        runner.close()
    config_file = config.dump(tmp_path / "shapes.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results = {}
    for nproc in (1, 2):
        command = [str(BIN / "torchyard-test")] if nproc == 1 else [
            str(BIN / "torchrun"), "--standalone", f"--nproc-per-node={nproc}", "-m",
            "torchyard.trainer.test"]
        launcher = [] if nproc == 1 else ["--launcher", "pytorch"]
        out = tmp_path / f"out{nproc}.json"
        done = subprocess.run([*command, str(config_file), str(tmp_path / "train"), "--work-dir",
                               str(tmp_path / f"test{nproc}"), "--out", str(out), *launcher],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        results[nproc] = json.loads((tmp_path / f"test{nproc}" / "metrics.json").read_text())["metrics"]
        assert len(json.loads(out.read_text())["predictions"]) == 101
    assert results[1] == results[2]
    assert {"mIoU", "mAcc", "aAcc", "IoU.circle"} <= results[1].keys()
