"""Record what mmengine does, for tests to compare torchyard with: its param schedulers
(tests/trainer/test_schedulers.py), its paramwise optimizer settings (tests/trainer/test_paramwise.py) and
its checkpoints.

mmengine lives only in the bench's environment (see trainer_overhead.py for how to make it):

    bench/.venv/bin/python bench/record_mmengine.py     # writes tests/trainer/mmengine_*.json

Schedules: each case is a ``param_scheduler`` list and a run's shape, stepped the way mmengine's
ParamSchedulerHook steps it: after every iteration the iteration-based schedulers, after every epoch the
epoch-based ones. For every iteration the file holds the learning rate and momentum (SGD's momentum, or
Adam's beta1) that the iteration trains with.

Paramwise: each case is an ``optim_wrapper`` over ``PartsNet`` (below; the test builds the same model from
this file); the file holds every param group's parameter shape, learning rate and weight decay.

Checkpoint: mmengine_digits_mlp.pth, saved as mmengine's Runner saves, for load_from (test_checkpoint.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parents[1] / "tests" / "trainer"
SGD = {"type": "SGD", "lr": 0.1, "momentum": 0.9}
ADAM = {"type": "Adam", "lr": 0.01, "betas": [0.9, 0.999]}

CASES = {
    # The two runs of tests/trainer/test_openmmlab_configs.py: MMSegmentation's schedule_20k and MMPretrain's
    # imagenet_bs256, shortened there with --cfg-options, on the digits data (23 iterations per epoch).
    "mmseg-poly": dict(optimizer={**SGD, "lr": 0.01}, max_epochs=2, iters_per_epoch=23, max_iters=40,
                       param_scheduler=[dict(type="PolyLR", eta_min=1e-4, power=0.9, begin=0, end=40,
                                             by_epoch=False)]),
    "mmpretrain-multistep": dict(optimizer=SGD, max_epochs=3, iters_per_epoch=23,
                                 param_scheduler=[dict(type="MultiStepLR", by_epoch=True, milestones=[1, 2],
                                                       gamma=0.1)]),
    "warmup-then-cosine-converted": dict(
        optimizer=SGD, max_epochs=5, iters_per_epoch=4,
        param_scheduler=[dict(type="LinearLR", start_factor=1e-3, by_epoch=False, begin=0, end=6),
                         dict(type="CosineAnnealingLR", eta_min=1e-5, by_epoch=True, begin=1, end=5,
                              convert_to_iter_based=True)]),
    "warmup-then-cosine-by-epoch": dict(
        optimizer=SGD, max_epochs=5, iters_per_epoch=3,
        param_scheduler=[dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=5),
                         dict(type="CosineAnnealingLR", by_epoch=True)]),
    "constant-and-exponential-overlap": dict(
        optimizer=SGD, max_epochs=6, iters_per_epoch=2,
        param_scheduler=[dict(type="ConstantLR", factor=0.5, end=3), dict(type="ExponentialLR", gamma=0.8)]),
    "step-and-delayed-linear": dict(
        optimizer=SGD, max_epochs=8, iters_per_epoch=1,
        param_scheduler=[dict(type="LinearLR", start_factor=0.1, begin=2, end=4),
                         dict(type="StepLR", step_size=2, gamma=0.5, begin=1)]),
    "step-and-multistep-converted": dict(
        optimizer=SGD, max_epochs=6, iters_per_epoch=3,
        param_scheduler=[dict(type="StepLR", step_size=2, gamma=0.5, convert_to_iter_based=True),
                         dict(type="MultiStepLR", milestones=[3, 5], gamma=0.5, begin=1,
                              convert_to_iter_based=True)]),
    "cosine-short-period-restarts": dict(
        optimizer=SGD, max_epochs=1, iters_per_epoch=20,
        param_scheduler=[dict(type="CosineAnnealingLR", T_max=4, eta_min_ratio=0.1, by_epoch=False)]),
    "one-cycle": dict(optimizer=SGD, max_epochs=3, iters_per_epoch=10,
                      param_scheduler=[dict(type="OneCycleLR", eta_max=0.5, by_epoch=False)]),
    "one-cycle-three-phase-linear": dict(
        optimizer=SGD, max_epochs=2, iters_per_epoch=10,
        param_scheduler=[dict(type="OneCycleLR", eta_max=0.4, total_steps=20, pct_start=0.25,
                              anneal_strategy="linear", three_phase=True, by_epoch=False)]),
    "cosine-restarts": dict(
        optimizer=SGD, max_epochs=1, iters_per_epoch=18,
        param_scheduler=[dict(type="CosineRestartLR", periods=[5, 10], restart_weights=[1, 0.5], eta_min=0.01,
                              by_epoch=False)]),
    "poly-with-begin": dict(
        optimizer=SGD, max_epochs=1, iters_per_epoch=30,
        param_scheduler=[dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=10),
                         dict(type="PolyLR", power=2.0, eta_min=1e-3, by_epoch=False, begin=10, end=30)]),
    "sgd-momentum": dict(
        optimizer=SGD, max_epochs=4, iters_per_epoch=3,
        param_scheduler=[dict(type="LinearMomentum", start_factor=0.9, by_epoch=False, end=6),
                         dict(type="CosineAnnealingMomentum", eta_min=0.8, by_epoch=True, begin=1)]),
    "adam-beta1": dict(
        optimizer=ADAM, max_epochs=4, iters_per_epoch=3,
        param_scheduler=[dict(type="CosineAnnealingLR", by_epoch=True),
                         dict(type="MultiStepMomentum", milestones=[1, 2], gamma=0.95, by_epoch=True)]),
    "generic-param-scheduler": dict(
        optimizer=SGD, max_epochs=4, iters_per_epoch=2,
        param_scheduler=[dict(type="ExponentialParamScheduler", param_name="lr", gamma=0.7, by_epoch=False),
                         dict(type="StepParamScheduler", param_name="momentum", step_size=1, gamma=0.99)]),
}


def momentum_of(group: dict) -> float:
    return group["betas"][0] if "betas" in group else group["momentum"]


def make_optimizer(cfg: dict) -> torch.optim.Optimizer:
    cfg = dict(cfg)
    return getattr(torch.optim, cfg.pop("type"))(torch.nn.Linear(2, 1).parameters(), **cfg)


def max_iters_of(case: dict) -> int:
    return case.get("max_iters", case["max_epochs"] * case["iters_per_epoch"])


def step_through(case: dict, optimizer: torch.optim.Optimizer, schedulers: list) -> list[list[float]]:
    """Step ``schedulers`` (mmengine's or torchyard's: both step() after a unit) over the run ``case``
    describes; the (lr, momentum) each iteration trains with."""
    rows, done, length = [], 0, case["iters_per_epoch"]
    while done < max_iters_of(case):
        for _ in range(min(length, max_iters_of(case) - done)):
            group = optimizer.param_groups[0]
            rows.append([group["lr"], momentum_of(group)])
            optimizer.step()
            done += 1
            for scheduler in schedulers:
                if not scheduler.by_epoch:
                    scheduler.step()
        for scheduler in schedulers:
            if scheduler.by_epoch:
                scheduler.step()
    return rows


def run(case: dict) -> list[list[float]]:
    import mmengine.optim  # noqa: F401 - registers the schedulers
    from mmengine.registry import PARAM_SCHEDULERS

    optimizer = make_optimizer(case["optimizer"])
    schedulers = []
    for cfg in case["param_scheduler"]:
        cfg = dict(cfg)
        cfg.setdefault("end", case["max_epochs"] if cfg.get("by_epoch", True) else max_iters_of(case))
        schedulers.append(PARAM_SCHEDULERS.build(cfg, default_args=dict(optimizer=optimizer,
                                                                         epoch_length=case["iters_per_epoch"])))
    return step_through(case, optimizer, schedulers)


class PartsNet(torch.nn.Module):
    """Every kind of parameter paramwise_cfg tells apart: conv, norm, depthwise conv, bias, 1-D, frozen."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.cls_token = nn.Parameter(torch.zeros(8))
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3, groups=8),
                                      nn.GroupNorm(2, 8))
        self.head = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 4))
        self.frozen = nn.Linear(2, 2).requires_grad_(False)


PARAMWISE = {
    "by-kind": dict(optimizer=dict(type="SGD", lr=0.1, momentum=0.9, weight_decay=1e-4),
                    paramwise_cfg=dict(bias_lr_mult=2.0, bias_decay_mult=0.0, norm_decay_mult=0.0,
                                       dwconv_decay_mult=0.5, flat_decay_mult=0.1)),
    "custom-keys": dict(optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.05),
                        paramwise_cfg=dict(norm_decay_mult=0.0,
                                           custom_keys={"backbone": dict(lr_mult=0.1),
                                                        "backbone.2": dict(lr_mult=0.5, decay_mult=0.0),
                                                        "head": dict(decay_mult=2.0)})),
    "no-weight-decay-given": dict(optimizer=dict(type="AdamW", lr=1e-3),
                                  paramwise_cfg=dict(bias_lr_mult=0.5, flat_decay_mult=0.0)),
}


def param_groups_of(optimizer: torch.optim.Optimizer) -> list[list]:
    return [[list(group["params"][0].shape), group["lr"], group["weight_decay"]]
            for group in optimizer.param_groups]


def record_paramwise(cfg: dict) -> list[list]:
    from mmengine.optim import build_optim_wrapper

    torch.manual_seed(0)
    return param_groups_of(build_optim_wrapper(PartsNet(), cfg).optimizer)


def record_checkpoint(path: Path) -> None:
    """A checkpoint as mmengine's Runner saves one (meta, state_dict, optimizer, message_hub with its
    HistoryBuffers and numpy values), of torchyard's DigitsMLP built after torch.manual_seed(0)."""
    import mmengine
    from mmengine.logging import MessageHub
    from mmengine.runner.checkpoint import get_state_dict, save_checkpoint, weights_to_cpu

    from torchyard.trainer.models import DigitsMLP

    torch.manual_seed(0)
    model = DigitsMLP()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    hub = MessageHub.get_instance("record_mmengine")
    for loss in (2.3, 2.1, 1.9):
        hub.update_scalar("train/loss", loss)
    hub.update_info("iter", 30)
    meta = {"epoch": 1, "iter": 30, "seed": 0, "experiment_name": "digits_mlp", "mmengine_version":
            mmengine.__version__, "dataset_meta": {"classes": [str(digit) for digit in range(10)]}}
    save_checkpoint({"meta": meta, "state_dict": weights_to_cpu(get_state_dict(model)),
                     "optimizer": optimizer.state_dict(), "message_hub": hub.state_dict()}, str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=TESTS)
    args = parser.parse_args()
    import mmengine

    versions = {"mmengine_version": mmengine.__version__, "torch_version": torch.__version__}
    schedules = {**versions,
                 "cases": {name: {**case, "lr_momentum": run(case)} for name, case in CASES.items()}}
    (args.out_dir / "mmengine_schedules.json").write_text(json.dumps(schedules, indent=1) + "\n")
    paramwise = {**versions, "cases": {name: {"optim_wrapper": cfg, "param_groups": record_paramwise(cfg)}
                                       for name, cfg in PARAMWISE.items()}}
    (args.out_dir / "mmengine_paramwise.json").write_text(json.dumps(paramwise, indent=1) + "\n")
    record_checkpoint(args.out_dir / "mmengine_digits_mlp.pth")
    print(f"wrote {len(CASES)} schedules, {len(PARAMWISE)} paramwise cases and a checkpoint recorded with "
          f"mmengine {mmengine.__version__} to {args.out_dir}")


if __name__ == "__main__":
    main()
