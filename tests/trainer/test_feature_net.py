"""The digits feature network shipped for FID/IS: it loads safely, classifies digits well, and its tool is
deterministic."""

from __future__ import annotations

import importlib.resources

import pytest
import torch

from torchyard.trainer.metrics.generation import DEFAULT_EXTRACTOR, resolve_asset
from torchyard.trainer.tasks.feature_net import DigitsFeatureNet
from torchyard.trainer.tools import train_feature_net
from torchyard.trainer.tools.train_feature_net import held_out_accuracy


def test_the_shipped_weights_load_with_weights_only_and_classify_digits_well():
    path = importlib.resources.files("torchyard.trainer") / "assets" / "digits_feature_net.pth"
    assert resolve_asset(DEFAULT_EXTRACTOR["checkpoint"]) == path
    assert path.stat().st_size < 200 * 1024
    state = torch.load(path, weights_only=True)
    model = DigitsFeatureNet()
    model.load_state_dict(state["state_dict"])

    measured = held_out_accuracy(model.eval())

    assert measured > 95.0
    assert measured == pytest.approx(state["meta"]["val_accuracy"])
    assert model.features(torch.rand(3, 1, 8, 8)).shape == (3, 64)


def test_the_tool_is_deterministic_and_writes_a_loadable_file(tmp_path, capsys):
    first, second = tmp_path / "a.pth", tmp_path / "b.pth"
    for out in (first, second):
        assert train_feature_net.main(["--out", str(out), "--epochs", "1"]) == 0
    assert "held-out accuracy" in capsys.readouterr().out
    a, b = (torch.load(p, weights_only=True)["state_dict"] for p in (first, second))
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.e2e
def test_the_tool_reproduces_a_network_as_good_as_the_shipped_one(tmp_path):
    out = tmp_path / "net.pth"
    train_feature_net.main(["--out", str(out)])
    shipped = torch.load(resolve_asset(DEFAULT_EXTRACTOR["checkpoint"]), weights_only=True)
    trained = torch.load(out, weights_only=True)
    assert trained["meta"]["val_accuracy"] > 95.0
    assert trained["state_dict"].keys() == shipped["state_dict"].keys()
    assert out.stat().st_size < 200 * 1024
