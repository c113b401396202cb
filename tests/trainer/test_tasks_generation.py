"""The digits VAE: deterministic generation per data set index, its losses and pictures; marked e2e, a short
training run that beats an untrained VAE and noise on FID, and 2 processes that give exactly the 1-process
metrics."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from torchyard.trainer.config import Config
from torchyard.trainer.data import DigitsDataset
from torchyard.trainer.dist import DistEnv
from torchyard.trainer.evaluation import Evaluator
from torchyard.trainer.runner import Runner
from torchyard.trainer.tasks.generation import DigitsVAE

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "digits_vae.py"
BIN = Path(sys.executable).parent


@functools.cache
def val_images() -> torch.Tensor:
    return DigitsDataset("val").images


def batch_of(indices: list[int]) -> dict:
    return {"inputs": val_images()[indices], "index": torch.tensor(indices)}


def test_generation_depends_only_on_the_index_and_the_seed():
    torch.manual_seed(0)
    model = DigitsVAE().eval()
    with torch.no_grad():
        whole = model(batch_of(list(range(10))), mode="predict")
        part = model(batch_of([7, 3]), mode="predict")
        model.sample_seed = 1
        reseeded = model(batch_of([3]), mode="predict")

    assert whole.shape == (10, 1, 8, 8) and whole.min() >= 0 and whole.max() <= 1
    assert torch.equal(part, whole[[7, 3]])
    assert not torch.equal(whole[3], whole[4])
    assert not torch.equal(reseeded[0], whole[3])


def test_loss_is_reconstruction_plus_kl_and_trains_encoder_and_decoder():
    torch.manual_seed(0)
    model = DigitsVAE()
    losses = model(batch_of(list(range(16))), mode="loss")

    assert set(losses) == {"loss_rec", "loss_kl"}
    assert all(torch.isfinite(v) and v >= 0 for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_visualize_draws_one_generated_digit_per_index():
    model = DigitsVAE().eval()
    batch = batch_of([4, 9])
    with torch.no_grad():
        pictures = model.visualize(batch, model(batch, mode="predict"))

    assert [index for index, _ in pictures] == [4, 9]
    assert all(p.dtype == np.uint8 and p.ndim == 3 and p.shape[2] == 3 for _, p in pictures)


def test_the_config_evaluates_with_fid_and_is_under_mmagic_style_keys(tmp_path):
    cfg = Config.fromfile(CONFIG)
    evaluator = Evaluator.build(cfg.test_evaluator, where="test_evaluator")
    model = DigitsVAE().eval()
    batch = batch_of(list(range(20)))
    evaluator.metrics[0].real_stats_cache = tmp_path / "real.pth"
    with torch.no_grad():
        evaluator.process(batch, model(batch, mode="predict"))

    metrics = evaluator.evaluate(DistEnv())

    assert set(metrics) == {"FID-Full/fid", "IS/is", "IS/is_std"}


# ---- short training runs (e2e) ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_vae(tmp_path_factory) -> Path:
    """The example config, trained for 20 epochs instead of 60; the path of its last checkpoint."""
    work_dir = tmp_path_factory.mktemp("vae")
    cfg = Config.fromfile(CONFIG, cfg_options={
        "work_dir": str(work_dir), "train_cfg.max_epochs": 20, "train_cfg.val_interval": 20,
        "param_scheduler.0.end": 20, "val_evaluator.0.real_stats_cache": str(work_dir / "real.pth"),
        "randomness.deterministic": True,
    })
    runner = Runner(cfg)
    try:
        runner.train()
    finally:
        runner.close()
    return Path((work_dir / "last_checkpoint").read_text())


def fid_of(checkpoint: Path, work_dir: Path) -> dict[str, float]:
    cfg = Config.fromfile(CONFIG, cfg_options={
        "work_dir": str(work_dir), "test_evaluator.0.real_stats_cache": str(work_dir / "real.pth")})
    runner = Runner(cfg, log_name="test.log")
    try:
        return runner.test(checkpoint)
    finally:
        runner.close()


@pytest.mark.e2e
def test_a_trained_vae_has_a_far_lower_fid_than_an_untrained_one_and_than_noise(trained_vae, tmp_path):
    untrained = tmp_path / "untrained.pth"
    torch.manual_seed(0)
    torch.save({"state_dict": DigitsVAE().state_dict()}, untrained)
    val = DigitsDataset("val")
    noise_cfg = Config.fromfile(CONFIG, cfg_options={"test_evaluator.0.real_stats_cache": None})
    noise_evaluator = Evaluator.build(noise_cfg.test_evaluator, where="test_evaluator")
    noise = torch.rand(len(val), 1, 8, 8, generator=torch.Generator().manual_seed(0))
    noise_evaluator.process({"inputs": val.images, "index": torch.arange(len(val))}, noise)

    trained_metrics = fid_of(trained_vae, tmp_path / "trained")
    untrained_metrics = fid_of(untrained, tmp_path / "untrained")
    noise_metrics = noise_evaluator.evaluate(DistEnv())

    print(f"trained {trained_metrics}, untrained {untrained_metrics}, uniform noise {noise_metrics}")
    assert trained_metrics["FID-Full/fid"] < untrained_metrics["FID-Full/fid"] / 3
    assert trained_metrics["FID-Full/fid"] < noise_metrics["FID-Full/fid"]
    assert trained_metrics["IS/is"] > 2 * untrained_metrics["IS/is"]


@pytest.mark.e2e
def test_two_processes_give_exactly_the_one_process_metrics(trained_vae, tmp_path):
    # 179 test images over 2 processes in batches of 50: uneven shards, and other batches than on 1 process.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {}
    for nproc in (1, 2):
        work_dir = tmp_path / f"nproc{nproc}"
        options = ["--cfg-options", "test_dataloader.batch_size=50",
                   f"test_evaluator.0.real_stats_cache={work_dir / 'real.pth'}"]
        command = [str(BIN / "torchyard-test"), str(CONFIG), str(trained_vae)] if nproc == 1 else [
            str(BIN / "torchrun"), "--standalone", "--nproc-per-node=2", "-m", "torchyard.trainer.test",
            str(CONFIG), str(trained_vae), "--launcher", "pytorch"]
        result = subprocess.run([*command, "--work-dir", str(work_dir), "--show-dir", str(work_dir / "show"),
                                 "--show-limit", "8", *options], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[nproc] = work_dir

    one, two = (json.loads((runs[n] / "metrics.json").read_text())["metrics"] for n in (1, 2))
    assert one == two
    assert set(one) == {"FID-Full/fid", "IS/is", "IS/is_std"}
    cached = [torch.load(runs[n] / "real.pth", weights_only=True) for n in (1, 2)]
    assert cached[0]["key"] == cached[1]["key"] and cached[0]["num_images"] == 179
    assert torch.equal(cached[0]["mean"], cached[1]["mean"])
    assert torch.equal(cached[0]["cov"], cached[1]["cov"])
    assert len(list((runs[1] / "show").glob("*.png"))) == 8
