"""paramwise_cfg against what mmengine's DefaultOptimWrapperConstructor built for the same model and config
(tests/trainer/mmengine_paramwise.json, recorded by bench/record_mmengine.py, whose PartsNet this builds)."""

import json
from pathlib import Path

import pytest
import torch

from torchyard.trainer.config import ConfigError
from torchyard.trainer.optim import build_optim_wrapper

from .runner_helpers import bench_module

RECORDED = json.loads((Path(__file__).parent / "mmengine_paramwise.json").read_text())


RECORDER = bench_module("record_mmengine")


@pytest.mark.parametrize("name", sorted(RECORDED["cases"]))
def test_param_groups_match_what_mmengine_built(name: str) -> None:
    case = RECORDED["cases"][name]
    torch.manual_seed(0)

    wrapper = build_optim_wrapper(case["optim_wrapper"], RECORDER.PartsNet(), amp=False,
                                  device=torch.device("cpu"))

    assert RECORDER.param_groups_of(wrapper.optimizer) == [
        [shape, pytest.approx(lr, rel=1e-12), pytest.approx(wd, rel=1e-12)]
        for shape, lr, wd in case["param_groups"]]


@pytest.mark.parametrize(("paramwise_cfg", "optimizer", "message"), [
    ({"norm_decay_mult": 0.0}, {"type": "SGD", "lr": 0.1},
     r"paramwise_cfg: norm_decay_mult multiply optimizer.weight_decay, which is not given"),
    ({"custom_keys": {"head": {"decay_mult": 0.0}}}, {"type": "SGD", "lr": 0.1},
     r"custom_keys\['head'\].decay_mult multiply optimizer.weight_decay"),
    ({"dcn_offset_lr_mult": 0.1}, {"type": "SGD", "lr": 0.1}, "needs mmcv's deformable convolutions"),
    ({"bias_lr": 2}, {"type": "SGD", "lr": 0.1}, r"paramwise_cfg: unknown key\(s\) bias_lr; known: "),
    ({"custom_keys": {"head": 0.1}}, {"type": "SGD", "lr": 0.1}, r"custom_keys: expected \{'name part'"),
])
def test_bad_paramwise_cfg_says_what_and_where(paramwise_cfg: dict, optimizer: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_optim_wrapper({"optimizer": optimizer, "paramwise_cfg": paramwise_cfg}, RECORDER.PartsNet(),
                            amp=False, device=torch.device("cpu"))
