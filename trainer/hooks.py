"""Lifecycle hooks: named points of the run with no-op defaults, as in mmengine.

    @HOOKS.register()
    class PrintLoss(Hook):
        def after_train_iter(self, runner, losses):
            ...

and in the config: ``custom_hooks = [dict(type="PrintLoss")]``. ``default_hooks`` holds the built-in ones
(``logger``, ``checkpoint``); setting one to None switches it off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
    def after_val(self, runner: Runner, metrics: dict[str, float]) -> None: ...
    def before_save_checkpoint(self, runner: Runner, state: dict) -> None: ...
    def after_load_checkpoint(self, runner: Runner, state: dict) -> None: ...
    def after_train(self, runner: Runner) -> None: ...
    def after_test(self, runner: Runner, metrics: dict[str, float]) -> None: ...
    def after_run(self, runner: Runner) -> None: ...


def build_hooks(default_hooks: dict | None, custom_hooks: list | None) -> list[Hook]:
    hooks = [HOOKS.build(cfg, where=f"default_hooks.{name}") for name, cfg in (default_hooks or {}).items() if cfg]
    hooks += [HOOKS.build(cfg, where=f"custom_hooks[{i}]") for i, cfg in enumerate(custom_hooks or [])]
    return sorted(hooks, key=lambda hook: hook.priority)
