"""EMAHook: validate and save an averaged copy of the weights, with mmengine's arguments and checkpoints.

    custom_hooks = [dict(type="EMAHook", ema_type="ExponentialMovingAverage", momentum=0.0002,
                         update_buffers=True, priority=49)]

The averaged weights are used for validation and are what a checkpoint's ``state_dict`` holds (so that
torchyard-test and ``load_from`` use them); the trained ones go to its ``ema_state_dict``, swapped back on
``--resume``, as in mmengine.
"""

from __future__ import annotations

import copy
import itertools
from typing import TYPE_CHECKING

import torch
from torch import nn

from torchyard.trainer.config import ConfigError
from torchyard.trainer.hooks import Hook
from torchyard.trainer.registry import HOOKS

if TYPE_CHECKING:
    from torchyard.trainer.runner import Runner


class AveragedModel(nn.Module):
    """A frozen copy of ``model`` whose parameters (and buffers, with ``update_buffers``) follow the
    model's: copied at the first update, averaged every ``interval`` updates after that."""

    def __init__(self, model: nn.Module, interval: int = 1, update_buffers: bool = False) -> None:
        super().__init__()
        if interval < 1:
            raise ConfigError(f"EMAHook.interval must be >= 1, got {interval}")
        self.module = copy.deepcopy(model).requires_grad_(False)
        self.interval = interval
        self.update_buffers = update_buffers
        self.register_buffer("steps", torch.tensor(0, dtype=torch.long))

    def average(self, averaged: torch.Tensor, source: torch.Tensor, steps: int) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        source = model.state_dict() if self.update_buffers else dict(model.named_parameters())
        averaged = self.module.state_dict() if self.update_buffers else dict(self.module.named_parameters())
        steps = int(self.steps)
        for name, value in averaged.items():
            if steps == 0:
                value.copy_(source[name])
            elif steps % self.interval == 0 and value.is_floating_point():
                self.average(value, source[name], steps)
        if not self.update_buffers:  # not averaged: kept equal to the model's
            for mine, theirs in zip(self.module.buffers(), model.buffers(), strict=True):
                mine.copy_(theirs)
        self.steps += 1

    def averaged_tensors(self) -> list[torch.Tensor]:
        own = self.module.parameters()
        return list(itertools.chain(own, self.module.buffers()) if self.update_buffers else own)


class ExponentialMovingAverage(AveragedModel):
    """averaged += momentum * (source - averaged)."""

    def __init__(self, model: nn.Module, momentum: float = 0.0002, interval: int = 1,
                 update_buffers: bool = False) -> None:
        if not 0 < momentum < 1:
            raise ConfigError(f"EMAHook.momentum must be in (0, 1), got {momentum}")
        super().__init__(model, interval, update_buffers)
        self.momentum = momentum

    def average(self, averaged: torch.Tensor, source: torch.Tensor, steps: int) -> None:
        averaged.lerp_(source, self.momentum)


class MomentumAnnealingEMA(ExponentialMovingAverage):
    """An exponential moving average whose momentum starts high, ``gamma / (gamma + steps)``, and anneals
    down to ``momentum``."""

    def __init__(self, model: nn.Module, momentum: float = 0.0002, gamma: int = 100, interval: int = 1,
                 update_buffers: bool = False) -> None:
        if gamma <= 0:
            raise ConfigError(f"EMAHook.gamma must be > 0, got {gamma}")
        super().__init__(model, momentum, interval, update_buffers)
        self.gamma = gamma

    def average(self, averaged: torch.Tensor, source: torch.Tensor, steps: int) -> None:
        averaged.lerp_(source, max(self.momentum, self.gamma / (self.gamma + steps)))


class StochasticWeightAverage(AveragedModel):
    """The plain mean of the weights seen at every ``interval``-th update."""

    def average(self, averaged: torch.Tensor, source: torch.Tensor, steps: int) -> None:
        averaged.add_(source - averaged, alpha=1 / (steps // self.interval + 1))


AVERAGES = {cls.__name__: cls for cls in (ExponentialMovingAverage, MomentumAnnealingEMA,
                                           StochasticWeightAverage)}


@HOOKS.register()
class EMAHook(Hook):
    """Keeps the average from iteration ``begin_iter`` (or epoch ``begin_epoch``) on; before that it is a
    copy of the weights."""

    def __init__(self, ema_type: str = "ExponentialMovingAverage", strict_load: bool = False,
                 begin_iter: int = 0, begin_epoch: int = 0, **average_args) -> None:
        if ema_type not in AVERAGES:
            raise ConfigError(f"EMAHook.ema_type: {ema_type!r} is not one of {', '.join(AVERAGES)}")
        if begin_iter < 0 or begin_epoch < 0 or (begin_iter and begin_epoch):
            raise ConfigError(f"EMAHook: give begin_iter or begin_epoch (>= 0), not both; got "
                              f"begin_iter={begin_iter}, begin_epoch={begin_epoch}")
        self.average_type = AVERAGES[ema_type]
        self.average_args = average_args
        self.strict_load = strict_load
        self.begin_iter = begin_iter
        self.begin_epoch = begin_epoch
        self.ema: AveragedModel | None = None

    def _averaged(self, runner: Runner) -> AveragedModel:
        if self.ema is None:
            try:
                self.ema = self.average_type(runner.unwrapped_model, **self.average_args)
            except TypeError as err:
                raise ConfigError(f"EMAHook: wrong arguments for {self.average_type.__name__}: "
                                  f"{err}") from None
        return self.ema

    def before_train(self, runner: Runner) -> None:
        self._averaged(runner)
        if self.begin_epoch > runner.max_epochs or self.begin_iter > runner.max_iters:
            raise ConfigError(f"EMAHook: begins after the run ends (begin_epoch={self.begin_epoch}, "
                              f"begin_iter={self.begin_iter}; the run has {runner.max_epochs} epochs, "
                              f"{runner.max_iters} iterations)")

    def after_train_iter(self, runner: Runner, losses: dict[str, torch.Tensor]) -> None:
        ema = self._averaged(runner)
        started = (runner.epoch + 1 >= self.begin_epoch if self.begin_epoch
                   else runner.iter >= self.begin_iter)
        if started:
            ema.update_parameters(runner.unwrapped_model)
        else:
            trained = runner.unwrapped_model.state_dict()
            with torch.no_grad():
                for name, value in ema.module.state_dict().items():
                    value.copy_(trained[name])

    def before_val(self, runner: Runner) -> None:
        self._swap(runner)

    def after_val(self, runner: Runner, metrics: dict[str, float]) -> None:
        self._swap(runner)

    def _swap(self, runner: Runner) -> None:
        ema = self._averaged(runner)
        model = runner.unwrapped_model
        trained = itertools.chain(model.parameters(), model.buffers()) if ema.update_buffers \
            else model.parameters()
        with torch.no_grad():
            for averaged, own in zip(ema.averaged_tensors(), trained, strict=True):
                kept = averaged.clone()
                averaged.copy_(own)
                own.copy_(kept)

    def before_save_checkpoint(self, runner: Runner, state: dict) -> None:
        state["ema_state_dict"] = self._averaged(runner).state_dict()
        _swap_state_dicts(state)

    def after_load_checkpoint(self, runner: Runner, state: dict) -> None:
        """On --resume the runner loaded the averaged weights into the model: swap them back."""
        ema = self._averaged(runner)
        if "ema_state_dict" not in state:
            runner.logger.warning("EMAHook: the checkpoint has no ema_state_dict; the average starts from "
                                  "its weights")
            ema.module.load_state_dict(state["state_dict"], strict=self.strict_load)
            return
        _swap_state_dicts(state)
        ema.load_state_dict(state["ema_state_dict"], strict=self.strict_load)
        runner.unwrapped_model.load_state_dict(state["state_dict"])


def _swap_state_dicts(state: dict) -> None:
    """Exchange the values of ``state_dict`` and of ``ema_state_dict``'s ``module.*`` entries."""
    model, averaged = state["state_dict"], state["ema_state_dict"]
    for key in averaged:
        if key.startswith("module."):
            averaged[key], model[key[len("module."):]] = model[key[len("module."):]], averaged[key]
