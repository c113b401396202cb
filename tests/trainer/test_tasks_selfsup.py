"""SimCLR on digits and the linear probe: NT-Xent against its closed form, the views, a backbone that stays
frozen under training, and (e2e) a probe on pretrained features that beats one on random features."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from torchyard.trainer.config import Config
from torchyard.trainer.data import DigitsDataset
from torchyard.trainer.runner import Runner
from torchyard.trainer.tasks.selfsup import DigitsLinearProbe, DigitsSimCLR, augment, nt_xent

REPO = Path(__file__).resolve().parents[2]


def test_nt_xent_matches_its_closed_form():
    n, temperature = 4, 0.5
    z = torch.eye(n)  # each view equals its partner and is orthogonal to every other view

    loss = nt_xent(z, z.clone(), temperature)

    # The partner scores 1 / T; the other 2n - 2 candidates score 0.
    expected = -math.log(math.exp(1 / temperature) / (math.exp(1 / temperature) + 2 * n - 2))
    assert float(loss) == pytest.approx(expected)
    assert float(nt_xent(z, z[[1, 0, 3, 2]], temperature)) > float(loss)


def test_augment_draws_a_different_valid_view_each_time():
    images = DigitsDataset("val").images[:32]
    torch.manual_seed(0)
    first, second = augment(images), augment(images)

    assert first.shape == images.shape
    assert first.min() >= 0 and first.max() <= 1
    assert not torch.equal(first, second)
    assert not torch.equal(first, images)


def test_probe_and_pretraining_share_backbone_names_and_the_probe_trains_only_its_head():
    probe, simclr = DigitsLinearProbe(), DigitsSimCLR()
    backbone_keys = {k for k in probe.state_dict() if k.startswith("backbone.")}

    assert backbone_keys == {k for k in simclr.state_dict() if k.startswith("backbone.")}
    assert all(not p.requires_grad for p in probe.backbone.parameters())
    assert all(p.requires_grad for p in probe.head.parameters())
    probe.train()
    assert not probe.backbone.training and probe.head.training


def test_load_from_fills_the_backbone_and_training_leaves_it_untouched(tmp_path, capsys):
    torch.manual_seed(1)
    pretrained = tmp_path / "simclr.pth"
    simclr_state = DigitsSimCLR().state_dict()
    torch.save({"state_dict": simclr_state}, pretrained)
    cfg = Config.fromfile(REPO / "configs" / "digits_linear_probe.py", cfg_options={
        "work_dir": str(tmp_path / "probe"), "load_from": str(pretrained), "val_dataloader": None,
        "train_cfg": dict(by_epoch=False, max_iters=5), "param_scheduler": None,
        "default_hooks.checkpoint": None,
    })
    runner = Runner(cfg)
    try:
        runner.train()
    finally:
        runner.close()

    state = runner.unwrapped_model.state_dict()
    for key, value in simclr_state.items():
        if key.startswith("backbone."):  # weights and batch-norm statistics alike
            assert torch.equal(state[key], value), key
    assert "unexpected in checkpoint: projector." in capsys.readouterr().out


# ---- pretraining then probing (e2e) -----------------------------------------------------------------------

def train(config: str, work_dir: Path, **options) -> tuple[Runner, dict[str, float]]:
    cfg = Config.fromfile(REPO / "configs" / config, cfg_options={"work_dir": str(work_dir), **options})
    runner = Runner(cfg)
    try:
        metrics = runner.train()
    finally:
        runner.close()
    return runner, metrics


@pytest.mark.e2e
def test_a_probe_on_simclr_features_beats_a_probe_on_random_features(tmp_path):
    train("digits_simclr.py", tmp_path / "simclr")
    pretrained = (tmp_path / "simclr" / "last_checkpoint").read_text()

    _, probe = train("digits_linear_probe.py", tmp_path / "probe", load_from=pretrained)
    _, random = train("digits_linear_probe.py", tmp_path / "random")

    print(f"linear probe accuracy: SimCLR backbone {probe['accuracy/top1']:.2f}%, "
          f"random backbone {random['accuracy/top1']:.2f}%")
    assert probe["accuracy/top1"] > random["accuracy/top1"]
    assert probe["accuracy/top1"] > 97.0
