"""model_wrapper_cfg=dict(type="FullyShard"): FSDP2 with gloo on CPU, two real processes under torchrun."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

from torchyard.trainer import fsdp
from torchyard.trainer.config import ConfigError

from .runner_helpers import (
    BIN,
    assert_same_training_state,
    final_state,
    make_cfg,
    run_trainer,
    write_config,
)

FULLY_SHARD = dict(type="FullyShard")


def config(work_dir, **overrides) -> dict:
    """Iteration-based, with gradient clipping (the norm of sharded gradients) and a short last val batch."""
    cfg = make_cfg(work_dir, model=dict(type="DigitsMLP", hidden=32), param_scheduler=None,
                   optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.05, momentum=0.9),
                                      clip_grad=dict(max_norm=1.0)),
                   train_cfg=dict(by_epoch=False, max_iters=60, val_interval=30),
                   default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=8, by_epoch=False)))
    cfg["train_dataloader"]["dataset"]["pipeline"] = []
    cfg["val_dataloader"]["batch_size"] = 7  # 90 samples per rank: 12 batches of 7 and one of 6
    cfg["test_dataloader"] = dict(batch_size=100, dataset=dict(type="DigitsDataset", split="test"))
    cfg["test_evaluator"] = dict(type="Accuracy")
    cfg.update(overrides)
    return cfg


@pytest.mark.e2e
def test_fully_shard_trains_as_ddp_does_and_resumes_bit_identically_after_a_kill(tmp_path, fault_hooks):
    runs = {}
    for name, wrapper in (("ddp", None), ("fsdp", FULLY_SHARD)):
        cfg = config(tmp_path / name, **({"model_wrapper_cfg": wrapper} if wrapper else {}))
        result = run_trainer(tmp_path, write_config(tmp_path / f"{name}.py", cfg, fault_hooks), nproc=2)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        runs[name] = final_state(tmp_path / name)
    for key, weight in runs["ddp"]["state_dict"].items():  # full weights, as one file, either way
        torch.testing.assert_close(runs["fsdp"]["state_dict"][key], weight, rtol=1e-5, atol=1e-6)
    assert set(runs["fsdp"]["optim_wrapper"]["optimizer"]["state"]) == set(runs["ddp"]["state_dict"])

    killed_cfg = config(tmp_path / "killed", model_wrapper_cfg=FULLY_SHARD,
                        custom_hooks=[dict(type="KillAt", at=20, rank=1)])
    killed = run_trainer(tmp_path, write_config(tmp_path / "killed.py", killed_cfg, fault_hooks), nproc=2)
    assert killed.returncode != 0
    resumed_cfg = config(tmp_path / "killed", model_wrapper_cfg=FULLY_SHARD)
    resumed = run_trainer(tmp_path, write_config(tmp_path / "resumed.py", resumed_cfg, fault_hooks),
                          "--resume", nproc=2)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resumed from {tmp_path / 'killed' / 'iter_16.pth'}" in resumed.stdout
    assert_same_training_state(runs["fsdp"], final_state(tmp_path / "killed"))

    # the sharded run's checkpoint is a plain one: one process tests it
    command = [str(BIN / "torchyard-test"), str(tmp_path / "fsdp.py"), str(tmp_path / "fsdp"),
               "--work-dir", str(tmp_path / "test")]
    tested = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert "accuracy/top1" in json.loads((tmp_path / "test" / "metrics.json").read_text())["metrics"]


def test_fully_shard_in_one_process_runs_unsharded_and_says_so(tmp_path):
    cfg = config(tmp_path / "wd", model_wrapper_cfg=FULLY_SHARD, train_cfg=dict(by_epoch=False, max_iters=5))
    result = run_trainer(tmp_path, write_config(tmp_path / "cfg.py", cfg))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "FullyShard: one process, nothing to shard across; the model runs unsharded" in result.stdout


@pytest.mark.parametrize(("wrapper", "message"), [
    (dict(type="FullyShard", shard_children=True), r"unknown key\(s\) shard_children for FullyShard"),
    (dict(type="FullyShard", reshard_after_forward="yes"), "reshard_after_forward: must be True or False"),
    (dict(type="FullyShard", mp_policy=dict(param_dtype="bf16")), "mp_policy.param_dtype: 'bf16' is not one"),
])
def test_bad_fully_shard_arguments(wrapper, message):
    with pytest.raises(ConfigError, match=message):
        fsdp.options({"model_wrapper_cfg": wrapper})


def test_mp_policy_names_its_dtypes():
    kwargs = fsdp.options({"model_wrapper_cfg": dict(type="FullyShard", reshard_after_forward=False,
                                                     mp_policy=dict(param_dtype="bfloat16"))})
    assert kwargs["reshard_after_forward"] is False and kwargs["mp_policy"].param_dtype == torch.bfloat16
    assert fsdp.options({"model_wrapper_cfg": dict(type="MMDistributedDataParallel")}) is None
