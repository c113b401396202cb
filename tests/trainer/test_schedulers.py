import json
from pathlib import Path

import pytest

from torchyard.trainer.config import ConfigError
from torchyard.trainer.schedulers import build_param_schedulers

from .runner_helpers import bench_module

RECORDED = json.loads((Path(__file__).parent / "mmengine_schedules.json").read_text())


RECORDER = bench_module("record_mmengine")


def run_schedule(case: dict) -> list[list[float]]:
    """The (lr, momentum) each iteration trains with, stepping schedulers as loops.TrainLoop does."""
    optimizer = RECORDER.make_optimizer(case["optimizer"])
    schedulers = build_param_schedulers(case["param_scheduler"], optimizer, case["max_epochs"],
                                        RECORDER.max_iters_of(case), case["iters_per_epoch"])
    return RECORDER.step_through(case, optimizer, schedulers)


@pytest.mark.parametrize("name", sorted(RECORDED["cases"]))
def test_schedules_match_what_mmengine_recorded(name: str) -> None:
    """bench/record_mmengine.py ran each case with mmengine's own schedulers."""
    case = RECORDED["cases"][name]

    assert run_schedule(case) == [pytest.approx(row, rel=1e-9, abs=1e-15) for row in case["lr_momentum"]]


def test_the_recording_covers_every_lr_scheduler_mmengine_has() -> None:
    recorded = {cfg["type"] for case in RECORDED["cases"].values() for cfg in case["param_scheduler"]}

    assert RECORDED["mmengine_version"] == "0.10.7"
    assert {"LinearLR", "ConstantLR", "MultiStepLR", "StepLR", "ExponentialLR", "CosineAnnealingLR", "PolyLR",
            "OneCycleLR", "CosineRestartLR"} <= recorded


def test_quadratic_warmup_reaches_the_initial_lr_on_a_square_curve() -> None:
    case = dict(optimizer={"type": "SGD", "lr": 0.5, "momentum": 0.9}, max_epochs=1, iters_per_epoch=8,
                param_scheduler=[dict(type="QuadraticWarmupLR", by_epoch=False, end=5)])

    lrs = [lr for lr, _ in run_schedule(case)]

    assert lrs == pytest.approx([0.5 * (t + 1) ** 2 / 25 for t in range(5)] + [0.5] * 3)


def test_state_dict_round_trip_continues_the_schedule() -> None:
    cfg = [{"type": "LinearLR", "start_factor": 0.1, "by_epoch": False, "end": 10},
           {"type": "CosineAnnealingMomentum", "eta_min": 0.5, "by_epoch": False}]
    optimizer = RECORDER.make_optimizer({"type": "SGD", "lr": 1.0, "momentum": 0.9})
    schedulers = build_param_schedulers(cfg, optimizer, 2, 20, 10)
    for _ in range(4):
        for scheduler in schedulers:
            scheduler.step()
    resumed_optimizer = RECORDER.make_optimizer({"type": "SGD", "lr": 1.0, "momentum": 0.9})
    resumed = build_param_schedulers(cfg, resumed_optimizer, 2, 20, 10)

    resumed_optimizer.load_state_dict(optimizer.state_dict())
    for scheduler, twin in zip(schedulers, resumed, strict=True):
        twin.load_state_dict(scheduler.state_dict())
        scheduler.step()
        twin.step()

    lr = optimizer.param_groups[0]["lr"]
    assert resumed_optimizer.param_groups[0]["lr"] == pytest.approx(lr, rel=1e-12)
    assert resumed_optimizer.param_groups[0]["momentum"] == optimizer.param_groups[0]["momentum"]


@pytest.mark.parametrize(("cfg", "message"), [
    ({"type": "CosineAnnealing"},
     r"param_scheduler\[0\]\.type: 'CosineAnnealing' .*Did you mean 'CosineAnnealingLR'"),
    ({"type": "LinearLR", "begin": 5, "end": 5},
     r"param_scheduler\[0\]: .*needs 0 <= begin < end, got begin=5"),
    ({"type": "LinearLR", "begin": -1, "end": 3}, r"needs 0 <= begin < end, got begin=-1, end=3"),
    ({"type": "LinearLR", "warmup_iters": 5}, r"wrong arguments for LinearLR: .*'warmup_iters'"),
    ({"type": "LinearLR", "start_factor": 0}, r"start_factor must be in \(0, 1\]"),
    ({"type": "MultiStepLR"}, r"wrong arguments for MultiStepLR: .*'milestones'"),
    ({"type": "CosineAnnealingLR", "eta_min": 0, "eta_min_ratio": 0.1},
     "eta_min or eta_min_ratio, not both"),
    ({"type": "OneCycleLR", "eta_max": 1, "anneal_strategy": "exp"},
     "anneal_strategy must be 'cos' or 'linear'"),
    ({"type": "LinearLR", "by_epoch": False, "convert_to_iter_based": True},
     r"param_scheduler\[0\]: convert_to_iter_based converts an epoch schedule; it needs by_epoch=True"),
    ({"type": "CosineRestartLR", "periods": [2, 3], "restart_weights": [1], "eta_min": 0},
     "periods and restart_weights need the same length"),
], ids=lambda value: value.get("type") if isinstance(value, dict) else None)
def test_bad_scheduler_configs_name_the_entry_and_the_problem(cfg: dict, message: str) -> None:
    optimizer = RECORDER.make_optimizer({"type": "SGD", "lr": 1.0})

    with pytest.raises(ConfigError, match=message):
        build_param_schedulers([cfg], optimizer, 10, 100, 10)


def test_momentum_of_an_optimizer_without_one_is_refused() -> None:
    optimizer = RECORDER.make_optimizer({"type": "Adagrad", "lr": 1.0})

    expected = r"LinearMomentum rejected its arguments: Adagrad has no 'momentum'"
    with pytest.raises(ConfigError, match=expected):
        build_param_schedulers([{"type": "LinearMomentum"}], optimizer, 10, 100, 10)


def test_no_param_scheduler_gives_none() -> None:
    assert build_param_schedulers(None, RECORDER.make_optimizer({"type": "SGD", "lr": 1.0}), 1, 1, 1) == []
