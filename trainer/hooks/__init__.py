"""Lifecycle hooks: named points of the run with no-op defaults, as in mmengine.

    @HOOKS.register()
    class PrintLoss(Hook):
        def after_train_iter(self, runner, losses):
            ...

and in the config: ``custom_hooks = [dict(type="PrintLoss", priority="ABOVE_NORMAL")]``. ``default_hooks``
holds the built-in ones (``logger``, ``checkpoint``); setting one to None switches it off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torchyard.trainer.config import ConfigError
from torchyard.trainer.registry import HOOKS

if TYPE_CHECKING:
    import torch

    from torchyard.trainer.runner import Runner


class Hook:
    priority = 50  # lower runs first

    def before_run(self, runner: Runner) -> None: ...
    def before_train(self, runner: Runner) -> None: ...
    def before_train_epoch(self, runner: Runner) -> None: ...
    def after_train_iter(self, runner: Runner, losses: dict[str, torch.Tensor]) -> None: ...
    def after_train_epoch(self, runner: Runner) -> None: ...
    def before_val(self, runner: Runner) -> None: ...
    def after_val_iter(self, runner: Runner, batch: dict, outputs: torch.Tensor) -> None: ...
    def after_val(self, runner: Runner, metrics: dict[str, float]) -> None: ...
    def before_save_checkpoint(self, runner: Runner, state: dict) -> None: ...
    def after_load_checkpoint(self, runner: Runner, state: dict) -> None: ...
    def after_train(self, runner: Runner) -> None: ...
    def after_test_iter(self, runner: Runner, batch: dict, outputs: torch.Tensor) -> None: ...
    def after_test(self, runner: Runner, metrics: dict[str, float]) -> None: ...
    def after_run(self, runner: Runner) -> None: ...


# mmengine's priority names; a hook with a lower number runs first, equal ones in the order configured.
PRIORITIES = {"HIGHEST": 0, "VERY_HIGH": 10, "HIGH": 30, "ABOVE_NORMAL": 40, "NORMAL": 50, "BELOW_NORMAL": 60,
              "LOW": 70, "VERY_LOW": 90, "LOWEST": 100}


def build_hooks(default_hooks: dict | None, custom_hooks: list | None) -> list[Hook]:
    hooks = [_build(cfg, f"default_hooks.{name}") for name, cfg in (default_hooks or {}).items() if cfg]
    hooks += [_build(cfg, f"custom_hooks[{i}]") for i, cfg in enumerate(custom_hooks or [])]
    return sorted(hooks, key=lambda hook: hook.priority)


def _build(cfg: dict, where: str) -> Hook:
    cfg = dict(cfg) if isinstance(cfg, dict) else cfg
    priority = cfg.pop("priority", None) if isinstance(cfg, dict) else None
    hook = HOOKS.build(cfg, where=where)
    if priority is not None:
        hook.priority = _priority(priority, f"{where}.priority")
    return hook


def _priority(value: int | str, where: str) -> int:
    if isinstance(value, str) and value.upper() in PRIORITIES:
        return PRIORITIES[value.upper()]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 100:
        return value
    raise ConfigError(f"{where}: {value!r} is not a priority; use 0 (first) to 100 (last) or one of "
                      f"{', '.join(PRIORITIES)}")
