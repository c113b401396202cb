"""Helpers of the trainer's end-to-end tests, shared with tests/faults: small configs, fault hooks written
beside them, a trainer run as the user runs it, and comparisons of the training state two runs leave.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from torchyard.trainer.config import Config
from torchyard.trainer.hooks import Hook

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def make_cfg(work_dir: Path, **overrides) -> dict:
    """A small deterministic run with everything that carries random state: dropout, BN, augmentation."""
    cfg = dict(
        work_dir=str(work_dir),
        model=dict(type="DigitsCNN", channels=8, dropout=0.2),
        train_dataloader=dict(batch_size=32, sampler=dict(shuffle=True), dataset=dict(
            type="DigitsDataset", split="train", pipeline=[dict(type="RandomShift", max_shift=1)])),
        val_dataloader=dict(batch_size=100, dataset=dict(type="DigitsDataset", split="val")),
        val_evaluator=dict(type="Accuracy"),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.05, momentum=0.9)),
        param_scheduler=[dict(type="LinearLR", start_factor=0.2, by_epoch=False, begin=0, end=10),
                         dict(type="CosineAnnealingLR", by_epoch=True, begin=0, end=3)],
        train_cfg=dict(by_epoch=True, max_epochs=3, val_interval=1),
        default_hooks=dict(logger=dict(type="LoggerHook", interval=20),
                           checkpoint=dict(type="CheckpointHook", interval=1, save_best="auto")),
        randomness=dict(seed=3, deterministic=True),
    )
    cfg.update(overrides)
    return cfg


class SignalAt(Hook):
    """Sends this process SIGTERM after iteration ``at``, as Kubernetes or Slurm would."""

    def __init__(self, at: int) -> None:
        self.at = at

    def after_train_iter(self, runner, losses) -> None:
        if runner.iter == self.at:
            os.kill(os.getpid(), signal.SIGTERM)


def assert_same_training_state(a: dict, b: dict) -> None:
    for key, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][key]), f"model weight {key} differs"
    state_a, state_b = a["optim_wrapper"]["optimizer"]["state"], b["optim_wrapper"]["optimizer"]["state"]
    assert state_a.keys() == state_b.keys()
    for index in state_a:
        for name, value in state_a[index].items():
            assert torch.equal(value, state_b[index][name]), f"optimizer state {index}.{name} differs"
    assert a["optim_wrapper"]["optimizer"]["param_groups"] == b["optim_wrapper"]["optimizer"]["param_groups"]
    assert a["meta"]["iter"] == b["meta"]["iter"]


def final_state(work_dir: Path) -> dict:
    return torch.load(Path((work_dir / "last_checkpoint").read_text()), weights_only=True)


def write_config(path: Path, cfg: dict, hooks_module: str | None = None) -> Path:
    if hooks_module:
        cfg = {**cfg, "custom_imports": dict(imports=[hooks_module])}
    Config(cfg).dump(path)
    return path


FAULT_HOOKS = textwrap.dedent('''
    import os, signal
    import torch
    from torchyard.trainer.hooks import Hook
    from torchyard.trainer.registry import HOOKS

    @HOOKS.register()
    class DumpParams(Hook):
        """Each rank saves its own parameters, to compare ranks with each other."""
        def after_train(self, runner):
            torch.save(runner.unwrapped_model.state_dict(), runner.work_dir / f"rank{runner.env.rank}.pt")

    @HOOKS.register()
    class KillAt(Hook):
        """SIGKILL this rank after iteration `at`: no handler runs, as when a node dies."""
        def __init__(self, at, rank=0):
            self.at, self.rank = at, rank
        def after_train_iter(self, runner, losses):
            if runner.iter == self.at and runner.env.rank == self.rank:
                os.kill(os.getpid(), signal.SIGKILL)

    @HOOKS.register()
    class TermAtEpochEnd(Hook):
        """SIGTERM every rank after the last iteration of epoch `epoch`, as Kubernetes or Slurm stop a job."""
        def __init__(self, epoch):
            self.epoch = epoch
        def after_train_iter(self, runner, losses):
            if runner.epoch + 1 == self.epoch and runner.inner_iter == runner.iters_per_epoch:
                os.kill(os.getpid(), signal.SIGTERM)

    @HOOKS.register()
    class DieWhileSaving(Hook):
        """At iteration `at`, write half of the checkpoint file, then die."""
        def __init__(self, at):
            self.at = at
        def before_save_checkpoint(self, runner, state):
            if runner.iter != self.at:
                return
            real_save = torch.save
            def half_then_die(obj, f):
                real_save(obj, f)
                f.truncate(f.tell() // 2)
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            torch.save = half_then_die
''')


def run_trainer(
    tmp_path: Path, config: Path, *args: str, nproc: int = 1, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    if nproc == 1:
        command = [str(BIN / "torchyard-train"), str(config)]
    else:
        command = [str(BIN / "torchrun"), "--standalone", f"--nproc-per-node={nproc}", "-m",
                   "torchyard.trainer.train", str(config), "--launcher", "pytorch"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([*command, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)


def bench_module(name: str):
    """A script of bench/ as a module (record_mmengine.py builds the cases both it and the tests run)."""
    path = Path(__file__).resolve().parents[2] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

