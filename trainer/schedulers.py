"""``param_scheduler`` with mmengine's meaning, so that OpenMMLab schedule files act as they do there.

    param_scheduler = [dict(type="LinearLR", start_factor=1e-3, by_epoch=False, begin=0, end=500),
                       dict(type="PolyLR", eta_min=1e-4, power=0.9, by_epoch=False, begin=500, end=20000)]

A scheduler steps after every epoch (``by_epoch=True``) or iteration and acts on the steps
``begin <= t < end``; ``end`` defaults to the run's length. Like mmengine's, each one updates the value from
the one the optimizer holds now (the chainable form), so schedulers whose ranges overlap multiply.
``convert_to_iter_based=True`` steps an epoch schedule every iteration: its begin, end and lengths counted in
epochs are multiplied by the epoch's length.

Every ``<Name>LR`` has a ``<Name>Momentum`` twin (SGD's momentum, or beta1 of the Adam family) and a
``<Name>ParamScheduler`` form that takes ``param_name``. mmengine's arguments keep their names and defaults.
"""

from __future__ import annotations

import inspect
import math
from collections import Counter
from typing import Any

import torch

from torchyard.trainer.config import ConfigError
from torchyard.trainer.registry import PARAM_SCHEDULERS

INF = math.inf


class ParamScheduler:
    """One hyper-parameter (``param_name``) of every param group of ``optimizer``."""

    # The arguments counted in epochs, which convert_to_iter_based multiplies by the epoch's length.
    epoch_counted: tuple[str, ...] = ()

    def __init__(self, optimizer: torch.optim.Optimizer, param_name: str, begin: int = 0, end: float = INF,
                 by_epoch: bool = True) -> None:
        if not 0 <= begin < end:
            raise ValueError(f"needs 0 <= begin < end, got begin={begin}, end={end}")
        self.optimizer = optimizer
        self.param_name = param_name
        self.begin = begin
        self.end = end
        self.by_epoch = by_epoch
        # The Adam family keeps its momentum as betas[0]; scheduled as "momentum", written back to betas.
        self._in_betas = (param_name == "momentum" and "momentum" not in optimizer.defaults
                          and "betas" in optimizer.defaults)
        for group in optimizer.param_groups:
            if self._in_betas:
                group["momentum"] = group["betas"][0]
            if param_name not in group:
                raise ValueError(f"{type(optimizer).__name__} has no {param_name!r} to schedule")
            group.setdefault(f"initial_{param_name}", group[param_name])
        self.base_values = [group[f"initial_{param_name}"] for group in optimizer.param_groups]
        self.global_step = -1  # steps taken, in range or not
        self.last_step = -1  # steps taken within [begin, end)
        self.step()

    def step(self) -> None:
        """Called once when built and then after every epoch or iteration (``by_epoch``)."""
        self.global_step += 1
        if not self.begin <= self.global_step < self.end:
            return
        self.last_step += 1
        for group, value in zip(self.optimizer.param_groups, self.values(), strict=True):
            group[self.param_name] = value
            if self._in_betas:
                group["betas"] = (value, *group["betas"][1:])

    def values(self) -> list[float]:
        """The values for step ``last_step`` of the range, from the current ones (``self.current()``)."""
        raise NotImplementedError

    def current(self) -> list[float]:
        return [group[self.param_name] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"global_step": self.global_step, "last_step": self.last_step,
                "base_values": list(self.base_values)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.global_step = state["global_step"]
        self.last_step = state["last_step"]
        self.base_values = list(state["base_values"])


class StepParamScheduler(ParamScheduler):
    """Multiply by ``gamma`` every ``step_size`` steps."""

    epoch_counted = ("step_size",)

    def __init__(self, optimizer, param_name, step_size: int, gamma: float = 0.1, **span) -> None:
        if step_size < 1:
            raise ValueError(f"step_size must be a positive integer, got {step_size}")
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, param_name, **span)

    def values(self) -> list[float]:
        if self.last_step == 0 or self.last_step % self.step_size:
            return self.current()
        return [value * self.gamma for value in self.current()]


class MultiStepParamScheduler(ParamScheduler):
    """Multiply by ``gamma`` at each of ``milestones`` (steps counted from ``begin``)."""

    epoch_counted = ("milestones",)

    def __init__(self, optimizer, param_name, milestones: list[int], gamma: float = 0.1, **span) -> None:
        self.milestones = Counter(milestones)
        self.gamma = gamma
        super().__init__(optimizer, param_name, **span)

    def values(self) -> list[float]:
        times = self.milestones.get(self.last_step, 0)
        return [value * self.gamma ** times for value in self.current()] if times else self.current()


class ConstantParamScheduler(ParamScheduler):
    """Multiply by ``factor`` over the whole range, then restore."""

    def __init__(self, optimizer, param_name, factor: float = 1.0 / 3, **span) -> None:
        if not 0 < factor <= 1:
            raise ValueError(f"factor must be in (0, 1], got {factor}")
        self.factor = factor
        super().__init__(optimizer, param_name, **span)

    def values(self) -> list[float]:
        if self.last_step == 0:
            return [value * self.factor for value in self.current()]
        if self.last_step == self.end - self.begin - 1:
            return [value / self.factor for value in self.current()]
        return self.current()


class ExponentialParamScheduler(ParamScheduler):
    """Multiply by ``gamma`` every step."""

    def __init__(self, optimizer, param_name, gamma: float, **span) -> None:
        self.gamma = gamma
        super().__init__(optimizer, param_name, **span)

    def values(self) -> list[float]:
        if self.last_step == 0:
            return self.current()
        return [value * self.gamma for value in self.current()]


def _eta_min(eta_min: float | None, eta_min_ratio: float | None, base: float) -> float:
    return base * eta_min_ratio if eta_min_ratio is not None else eta_min


def _check_eta_min(eta_min: float | None, eta_min_ratio: float | None) -> float | None:
    if eta_min is not None and eta_min_ratio is not None:
        raise ValueError("give eta_min or eta_min_ratio, not both")
    return 0.0 if eta_min is None and eta_min_ratio is None else eta_min


class CosineAnnealingParamScheduler(ParamScheduler):
    """Cosine from the current value down to ``eta_min`` (or ``eta_min_ratio`` x the initial value) over
    ``T_max`` steps (default: the whole range), back up over the next ``T_max``."""

    epoch_counted = ("T_max",)

    def __init__(self, optimizer, param_name, T_max: int | None = None, eta_min: float | None = None,
                 eta_min_ratio: float | None = None, **span) -> None:
        self.eta_min = _check_eta_min(eta_min, eta_min_ratio)
        self.eta_min_ratio = eta_min_ratio
        self.T_max = T_max or (span.get("end", INF) - span.get("begin", 0))
        super().__init__(optimizer, param_name, **span)

    def values(self) -> list[float]:
        t, period = self.last_step, self.T_max
        if t == 0:
            return self.current()
        values = []
        for base, value in zip(self.base_values, self.current(), strict=True):
            floor = _eta_min(self.eta_min, self.eta_min_ratio, base)
            if (t - 1 - period) % (2 * period) == 0:  # the bottom: the ratio below would divide by zero
                values.append(value + (base - floor) * (1 - math.cos(math.pi / period)) / 2)
            else:
                values.append(_cosine_step(value, floor, t, period))
        return values


def _cosine_step(value: float, floor: float, t: int, period: float) -> float:
    """Step ``t`` of a cosine down to ``floor`` over ``period``, from the value at step t-1."""
    ratio = (1 + math.cos(math.pi * t / period)) / (1 + math.cos(math.pi * (t - 1) / period))
    return ratio * (value - floor) + floor


class LinearParamScheduler(ParamScheduler):
    """Scale the value from ``start_factor`` x to ``end_factor`` x, linearly over the range."""

    def __init__(self, optimizer, param_name, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 **span) -> None:
        if not 0 < start_factor <= 1 or not 0 <= end_factor <= 1:
            raise ValueError(f"start_factor must be in (0, 1] and end_factor in [0, 1], "
                             f"got {start_factor} and {end_factor}")
        self.start_factor = start_factor
        self.end_factor = end_factor
        super().__init__(optimizer, param_name, **span)

    def values(self) -> list[float]:
        if self.last_step == 0:
            return [value * self.start_factor for value in self.current()]
        steps = self.end - self.begin - 1
        change = self.end_factor - self.start_factor
        ratio = 1 + change / (steps * self.start_factor + (self.last_step - 1) * change)
        return [value * ratio for value in self.current()]


class PolyParamScheduler(ParamScheduler):
    """Decay polynomially (``power``) to ``eta_min``, reached on the range's last step."""

    def __init__(self, optimizer, param_name, eta_min: float = 0.0, power: float = 1.0, **span) -> None:
        self.eta_min = eta_min
        self.power = power
        super().__init__(optimizer, param_name, **span)

    def values(self) -> list[float]:
        if self.last_step == 0:
            return self.current()
        left = self.end - self.begin - self.last_step  # steps left, this one included
        return [(value - self.eta_min) * (1 - 1 / left) ** self.power + self.eta_min
                for value in self.current()]


class OneCycleParamScheduler(ParamScheduler):
    """The 1cycle policy: up from ``eta_max / div_factor`` to ``eta_max`` over ``pct_start`` of
    ``total_steps`` (default: the range), then down to ``initial / final_div_factor``; ``three_phase``
    returns to the initial value before going down. The learning rate only."""

    epoch_counted = ("total_steps",)

    def __init__(self, optimizer, param_name, eta_max: float | list[float] = 0,
                 total_steps: int | None = None, pct_start: float = 0.3, anneal_strategy: str = "cos",
                 div_factor: float = 25.0, final_div_factor: float = 1e4, three_phase: bool = False,
                 **span) -> None:
        if param_name != "lr":
            raise ValueError(f"the 1cycle policy schedules the learning rate only, not {param_name!r}")
        self.total_steps = total_steps or span.get("end", INF) - span.get("begin", 0)
        if not math.isfinite(self.total_steps) or self.total_steps < 1:
            raise ValueError(f"needs a positive total_steps or a finite end, got {self.total_steps}")
        if not 0 <= pct_start <= 1:
            raise ValueError(f"pct_start must be in [0, 1], got {pct_start}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        self.anneal_strategy = anneal_strategy
        up = pct_start * self.total_steps - 1
        last = self.total_steps - 1
        # (last step of the phase, value it starts from, value it reaches)
        self.phases = ([(up, "initial", "max"), (2 * up, "max", "initial"), (last, "initial", "min")]
                       if three_phase else [(up, "initial", "max"), (last, "max", "min")])
        peaks = eta_max if isinstance(eta_max, (list, tuple)) else [eta_max] * len(optimizer.param_groups)
        if len(peaks) != len(optimizer.param_groups):
            raise ValueError(f"eta_max has {len(peaks)} values for {len(optimizer.param_groups)} "
                             "param groups")
        for group, peak in zip(optimizer.param_groups, peaks, strict=True):
            group["initial_lr"] = peak / div_factor
            group["max_lr"] = peak
            group["min_lr"] = group["initial_lr"] / final_div_factor
        super().__init__(optimizer, param_name, **span)

    def values(self) -> list[float]:
        t = self.last_step
        if t > self.total_steps:
            raise ValueError(f"stepped {t + 1} times, past total_steps={self.total_steps}")
        values = []
        for group in self.optimizer.param_groups:
            start = 0.0
            for i, (end, low, high) in enumerate(self.phases):
                if t <= end or i == len(self.phases) - 1:
                    fraction = (t - start) / (end - start)
                    values.append(self._anneal(group[f"{low}_lr"], group[f"{high}_lr"], fraction))
                    break
                start = end
        return values

    def _anneal(self, start: float, end: float, fraction: float) -> float:
        if self.anneal_strategy == "linear":
            return start + (end - start) * fraction
        return end + (start - end) / 2 * (1 + math.cos(math.pi * fraction))


class CosineRestartParamScheduler(ParamScheduler):
    """Cosine annealing in ``periods``, each restarting from the initial value x its ``restart_weights``."""

    epoch_counted = ("periods",)

    def __init__(self, optimizer, param_name, periods: list[int], restart_weights: list[float] = (1,),
                 eta_min: float | None = None, eta_min_ratio: float | None = None, **span) -> None:
        if (eta_min is None and eta_min_ratio is None) or (eta_min is not None and eta_min_ratio is not None):
            raise ValueError("give one of eta_min and eta_min_ratio")
        if len(periods) != len(restart_weights):
            raise ValueError(f"periods and restart_weights need the same length, got {len(periods)} "
                             f"and {len(restart_weights)}")
        self.periods = list(periods)
        self.restart_weights = list(restart_weights)
        self.eta_min = eta_min
        self.eta_min_ratio = eta_min_ratio
        super().__init__(optimizer, param_name, **span)

    def values(self) -> list[float]:
        restart = 0
        for period, weight in zip(self.periods, self.restart_weights, strict=True):
            if self.last_step < restart + period:
                return self._in_period(self.last_step - restart, period, weight)
            restart += period
        return self.current()  # past the last period

    def _in_period(self, t: int, period: int, weight: float) -> list[float]:
        values = []
        for base, value in zip(self.base_values, self.current(), strict=True):
            floor = _eta_min(self.eta_min, self.eta_min_ratio, base)
            values.append(base * weight if t == 0 else _cosine_step(value, floor, t, period))
        return values


class QuadraticWarmupParamScheduler(ParamScheduler):
    """Warm up quadratically from 0 to the initial value over the range (MMDetection's, as in YOLOX)."""

    def __init__(self, optimizer, param_name, **span) -> None:
        if not math.isfinite(span.get("end", INF)):
            raise ValueError("needs a finite end")
        super().__init__(optimizer, param_name, **span)

    def values(self) -> list[float]:
        length = self.end - self.begin
        added = [base * (2 * self.last_step + 1) / length ** 2 for base in self.base_values]
        if self.last_step == 0:
            return added
        return [value + more for value, more in zip(self.current(), added, strict=True)]


def _signature(scheduler: type[ParamScheduler]) -> inspect.Signature:
    """The arguments a config may give: the scheduler's own and the range's (begin, end, by_epoch)."""
    own = [p for p in inspect.signature(scheduler).parameters.values() if p.kind is not p.VAR_KEYWORD]
    span = [p.replace(kind=p.KEYWORD_ONLY) for name, p in inspect.signature(ParamScheduler).parameters.items()
            if name in ("begin", "end", "by_epoch")]
    return inspect.Signature([*own, *span])


def _for_param(scheduler: type[ParamScheduler], name: str, param_name: str) -> type[ParamScheduler]:
    """``scheduler`` with ``param_name`` fixed, under its own name."""

    def __init__(self, optimizer, **kwargs) -> None:
        scheduler.__init__(self, optimizer, param_name, **kwargs)

    fixed = type(name, (scheduler,), {"__init__": __init__, "__doc__": scheduler.__doc__})
    signature = inspect.signature(scheduler)
    fixed.__signature__ = signature.replace(
        parameters=[p for p in signature.parameters.values() if p.name != "param_name"])
    return fixed


def _register() -> None:
    for scheduler in (StepParamScheduler, MultiStepParamScheduler, ConstantParamScheduler,
                      ExponentialParamScheduler, CosineAnnealingParamScheduler, LinearParamScheduler,
                      PolyParamScheduler, OneCycleParamScheduler, CosineRestartParamScheduler,
                      QuadraticWarmupParamScheduler):
        scheduler.__signature__ = _signature(scheduler)
        PARAM_SCHEDULERS.register(scheduler)
        stem = scheduler.__name__.removesuffix("ParamScheduler")
        PARAM_SCHEDULERS.register(_for_param(scheduler, f"{stem}LR", "lr"))
        if scheduler is not OneCycleParamScheduler:
            PARAM_SCHEDULERS.register(_for_param(scheduler, f"{stem}Momentum", "momentum"))


_register()


def build_param_schedulers(cfgs: list[dict] | dict | None, optimizer: torch.optim.Optimizer, max_epochs: int,
                           max_iters: int, epoch_length: int) -> list[ParamScheduler]:
    if not cfgs:
        return []
    schedulers = []
    for i, cfg in enumerate([cfgs] if isinstance(cfgs, dict) else cfgs):
        where = f"param_scheduler[{i}]"
        if not isinstance(cfg, dict):
            raise ConfigError(f"{where}: expected a dict with a 'type' key, got {cfg!r}")
        cfg = dict(cfg)
        cfg.setdefault("end", max_epochs if cfg.get("by_epoch", True) else max_iters)
        if cfg.pop("convert_to_iter_based", False):
            cfg = _iter_based(cfg, where, epoch_length)
        schedulers.append(PARAM_SCHEDULERS.build(cfg, where=where, optimizer=optimizer))
    return schedulers


def _iter_based(cfg: dict, where: str, epoch_length: int) -> dict:
    if not cfg.get("by_epoch", True):
        raise ConfigError(f"{where}: convert_to_iter_based converts an epoch schedule; "
                          "it needs by_epoch=True (or leave it out)")
    scheduler = PARAM_SCHEDULERS.get(cfg.get("type"), where=f"{where}.type")
    converted = {**cfg, "by_epoch": False, "begin": int(cfg.get("begin", 0) * epoch_length)}
    if math.isfinite(cfg["end"]):
        converted["end"] = int(cfg["end"] * epoch_length)
    for key in getattr(scheduler, "epoch_counted", ()):
        value = cfg.get(key)
        if isinstance(value, (list, tuple)):
            converted[key] = [item * epoch_length for item in value]
        elif value is not None:
            converted[key] = value * epoch_length
    return converted
