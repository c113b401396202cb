import signal

import pytest
import torch
from torch import nn

from torchyard.trainer.config import Config, ConfigError
from torchyard.trainer.hooks import Hook
from torchyard.trainer.hooks.ema import (
    EMAHook,
    ExponentialMovingAverage,
    MomentumAnnealingEMA,
    StochasticWeightAverage,
)
from torchyard.trainer.loops import TrainingInterrupted
from torchyard.trainer.runner import Runner

from ..runner_helpers import final_state, make_cfg


def linear() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(3, 2)


def shifted(model: nn.Module, by: float) -> None:
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(by)


def test_the_first_update_copies_and_later_ones_move_by_momentum() -> None:
    model = linear()
    ema = ExponentialMovingAverage(model, momentum=0.25)
    shifted(model, 1.0)
    ema.update_parameters(model)
    assert torch.equal(ema.module.weight, model.weight)
    before = ema.module.weight.clone()

    shifted(model, 4.0)
    ema.update_parameters(model)

    torch.testing.assert_close(ema.module.weight, before + 0.25 * (model.weight - before))
    assert int(ema.steps) == 2


def test_interval_averages_only_every_nth_update() -> None:
    model = linear()
    ema = ExponentialMovingAverage(model, momentum=0.5, interval=2)
    ema.update_parameters(model)
    start = ema.module.weight.clone()
    shifted(model, 2.0)
    ema.update_parameters(model)  # step 1: not a multiple of 2
    assert torch.equal(ema.module.weight, start)
    ema.update_parameters(model)  # step 2
    torch.testing.assert_close(ema.module.weight, start + 1.0)


def test_stochastic_weight_average_is_the_mean_of_the_weights_seen() -> None:
    model = linear()
    swa = StochasticWeightAverage(model)
    seen = []
    for by in (0.0, 3.0, -1.5, 6.0):
        shifted(model, by)
        seen.append(model.weight.clone())
        swa.update_parameters(model)

    torch.testing.assert_close(swa.module.weight, torch.stack(seen).mean(0))


def test_momentum_annealing_starts_high_and_ends_at_momentum() -> None:
    model = linear()
    ema = MomentumAnnealingEMA(model, momentum=0.01, gamma=3)
    ema.update_parameters(model)
    before = ema.module.weight.clone()
    shifted(model, 1.0)
    ema.update_parameters(model)  # steps=1: momentum max(0.01, 3 / 4)
    torch.testing.assert_close(ema.module.weight, before + 0.75 * (model.weight - before))


def test_bad_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"EMAHook.ema_type: 'EMA' is not one of ExponentialMovingAverage"):
        EMAHook(ema_type="EMA")
    with pytest.raises(ConfigError, match="give begin_iter or begin_epoch"):
        EMAHook(begin_iter=3, begin_epoch=1)
    with pytest.raises(ConfigError, match=r"EMAHook.momentum must be in \(0, 1\)"):
        ExponentialMovingAverage(linear(), momentum=2)


class FirstWeightInValidation(Hook):
    seen: torch.Tensor | None = None

    def after_val_iter(self, runner, batch, outputs) -> None:
        type(self).seen = next(runner.unwrapped_model.parameters()).detach().clone()


def ema_cfg(work_dir, *hooks, **ema_args) -> dict:
    ema = dict(type="EMAHook", momentum=0.3, update_buffers=True, **ema_args)
    return make_cfg(work_dir, custom_hooks=[ema, *hooks], train_cfg=dict(by_epoch=True, max_epochs=2))


def test_validation_sees_the_average_and_the_checkpoint_keeps_both(tmp_path) -> None:
    runner = Runner(Config(ema_cfg(tmp_path, dict(type=FirstWeightInValidation))))
    runner.train()
    hook = next(hook for hook in runner.hooks if isinstance(hook, EMAHook))
    averaged, trained = hook.ema.module.state_dict(), runner.unwrapped_model.state_dict()
    state = final_state(tmp_path)

    assert torch.equal(FirstWeightInValidation.seen, next(hook.ema.module.parameters()))
    assert not torch.equal(FirstWeightInValidation.seen, next(runner.unwrapped_model.parameters()))
    assert all(torch.equal(state["state_dict"][name], value) for name, value in averaged.items())
    assert all(torch.equal(state["ema_state_dict"][f"module.{name}"], value)
               for name, value in trained.items())


class TermAt(Hook):
    def after_train_iter(self, runner, losses) -> None:
        if runner.iter == 30:
            signal.raise_signal(signal.SIGTERM)


def test_resume_restores_the_trained_and_the_averaged_weights_exactly(tmp_path) -> None:
    Runner(Config(ema_cfg(tmp_path / "straight"))).train()
    with pytest.raises(TrainingInterrupted):
        Runner(Config(ema_cfg(tmp_path / "stopped", dict(type=TermAt)))).train()
    Runner(Config({**ema_cfg(tmp_path / "stopped"), "resume": True})).train()

    straight, resumed = final_state(tmp_path / "straight"), final_state(tmp_path / "stopped")
    for key in ("state_dict", "ema_state_dict"):
        assert straight[key].keys() == resumed[key].keys()
        for name, value in straight[key].items():
            assert torch.equal(value, resumed[key][name]), (key, name)


def test_before_begin_iter_the_average_is_a_copy_of_the_weights() -> None:
    from types import SimpleNamespace

    model = linear()
    runner = SimpleNamespace(unwrapped_model=model, epoch=0, iter=0, max_epochs=1, max_iters=10)
    hook = EMAHook(momentum=0.5, begin_iter=3)
    hook.before_train(runner)
    for step in (1, 2, 3):  # 1, 2: copies; 3: the average starts, its first update a copy
        shifted(model, 1.0)
        runner.iter = step
        hook.after_train_iter(runner, {})
        assert torch.equal(hook.ema.module.weight, model.weight)
    before = hook.ema.module.weight.clone()
    shifted(model, 2.0)
    runner.iter = 4
    hook.after_train_iter(runner, {})

    torch.testing.assert_close(hook.ema.module.weight, before + 0.5 * (model.weight - before))
