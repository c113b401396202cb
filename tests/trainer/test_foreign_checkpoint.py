"""load_from a checkpoint that mmengine's Runner saved (tests/trainer/mmengine_digits_mlp.pth, written by
bench/record_mmengine.py with mmengine's own save_checkpoint: meta, state_dict, optimizer, and a
message_hub of HistoryBuffers and numpy values that weights_only loading refuses)."""

from pathlib import Path

import pytest
import torch

from torchyard.trainer.checkpoint import CheckpointError
from torchyard.trainer.config import Config
from torchyard.trainer.foreign_checkpoint import load_weights_of, revise_keys
from torchyard.trainer.models import DigitsMLP
from torchyard.trainer.runner import Runner

from .runner_helpers import make_cfg

MMENGINE_CHECKPOINT = Path(__file__).parent / "mmengine_digits_mlp.pth"


def test_the_weights_of_an_mmengine_checkpoint_load_without_mmengine():
    torch.manual_seed(0)
    expected = DigitsMLP().state_dict()

    weights = load_weights_of(MMENGINE_CHECKPOINT)

    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[name], value) for name, value in expected.items())


def test_load_from_an_mmengine_checkpoint_trains_from_its_weights(tmp_path):
    cfg = make_cfg(tmp_path, model=dict(type="DigitsMLP"), load_from=str(MMENGINE_CHECKPOINT),
                   train_cfg=dict(by_epoch=True, max_epochs=1))
    runner = Runner(Config(cfg))
    runner.load_weights(cfg["load_from"])
    torch.manual_seed(0)
    expected = DigitsMLP().state_dict()

    loaded = runner.unwrapped_model.state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in loaded.items())
    runner.train()
    assert f"loaded weights from {MMENGINE_CHECKPOINT}" in (tmp_path / "train.log").read_text()


class Exploit:
    def __reduce__(self):
        return (Path.write_text, (Path("/tmp/torchyard-pwned"), "ran"))


def test_code_the_file_names_never_runs(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.ones(1)}, "payload": Exploit()}, path)
    Path("/tmp/torchyard-pwned").unlink(missing_ok=True)

    expected = r"evil.pth: cannot read it even with stand-ins for its classes: .*call reduce for unrecognized"
    with pytest.raises(CheckpointError, match=expected):
        load_weights_of(path)
    assert not Path("/tmp/torchyard-pwned").exists()


def test_ddp_prefixes_are_stripped_as_mmengine_does():
    revised = revise_keys({"module.net.0.weight": 1, "head.module.x": 2})
    assert list(revised) == ["net.0.weight", "head.module.x"]


def test_a_file_without_weights_says_so(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2], path)
    with pytest.raises(CheckpointError, match="holds no state_dict of weights"):
        load_weights_of(path)
