"""CheckpointHook: periodic checkpoints, ``max_keep_ckpts`` and the best checkpoint by a validation metric.

    default_hooks = dict(checkpoint=dict(type="CheckpointHook", interval=1, max_keep_ckpts=3,
                                         save_best="accuracy/top1", rule="greater"))
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from torchyard.trainer.config import ConfigError
from torchyard.trainer.hooks import Hook
from torchyard.trainer.registry import HOOKS

if TYPE_CHECKING:
    import torch

    from torchyard.trainer.runner import Runner

RULES = {"greater": lambda new, best: new > best, "less": lambda new, best: new < best}
# Metrics where smaller is better, for save_best="auto" and rule=None.
LESS_IS_BETTER = re.compile(r"loss|error|fid|mse|mae|rmse|lpips|niqe|perplexity", re.IGNORECASE)


@HOOKS.register()
class CheckpointHook(Hook):
    priority = 70

    def __init__(self, interval: int = 1, by_epoch: bool | None = None, max_keep_ckpts: int = -1,
                 save_best: str | None = None, rule: str | None = None, save_last: bool = True) -> None:
        if interval < 1:
            raise ConfigError(f"default_hooks.checkpoint.interval must be >= 1, got {interval}")
        if rule is not None and rule not in RULES:
            raise ConfigError(f"default_hooks.checkpoint.rule must be one of {', '.join(RULES)}, "
                              f"got {rule!r}")
        self.interval = interval
        self.by_epoch = by_epoch
        self.max_keep_ckpts = max_keep_ckpts
        self.save_best = save_best
        self.rule = rule
        self.save_last = save_last
        self.best_score: float | None = None

    def before_train(self, runner: Runner) -> None:
        if self.by_epoch is None:
            self.by_epoch = runner.by_epoch
        runner.checkpoints.max_keep_ckpts = self.max_keep_ckpts
        accumulate = runner.optim_wrapper.accumulative_counts
        if not self.by_epoch and self.interval % accumulate:
            raise ConfigError(f"default_hooks.checkpoint.interval={self.interval} iterations must be a "
                              f"multiple of optim_wrapper.accumulative_counts={accumulate}, so that no "
                              "checkpoint falls inside a gradient accumulation window")

    def after_train_iter(self, runner: Runner, losses: dict[str, torch.Tensor]) -> None:
        if self.by_epoch:
            return
        if runner.iter % self.interval == 0 or (self.save_last and runner.iter == runner.max_iters):
            runner.save_checkpoint(f"iter_{runner.iter}.pth")

    def after_train_epoch(self, runner: Runner) -> None:
        if not self.by_epoch:
            return
        if runner.epoch % self.interval == 0 or (self.save_last and runner.epoch == runner.max_epochs):
            runner.save_checkpoint(f"epoch_{runner.epoch}.pth")

    def after_val(self, runner: Runner, metrics: dict[str, float]) -> None:
        if not self.save_best or not metrics:
            return
        key = next(iter(metrics)) if self.save_best == "auto" else self.save_best
        if key not in metrics:
            raise ConfigError(f"default_hooks.checkpoint.save_best={key!r} is not a validation metric; "
                              f"the metrics are: {', '.join(metrics)}")
        rule = self.rule or ("less" if LESS_IS_BETTER.search(key) else "greater")
        score = metrics[key]
        if self.best_score is not None and not RULES[rule](score, self.best_score):
            return
        self.best_score = score
        unit = f"epoch_{runner.epoch}" if self.by_epoch else f"iter_{runner.iter}"
        runner.logger.info(f"new best {key}: {score:.4f}")
        runner.save_best_checkpoint(f"best_{key.replace('/', '_')}_{unit}.pth")

    def before_save_checkpoint(self, runner: Runner, state: dict) -> None:
        state["hooks"]["CheckpointHook"] = {"best_score": self.best_score}

    def after_load_checkpoint(self, runner: Runner, state: dict) -> None:
        self.best_score = state.get("hooks", {}).get("CheckpointHook", {}).get("best_score")
