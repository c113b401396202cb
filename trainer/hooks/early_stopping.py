"""EarlyStoppingHook: end training when a validation metric stops improving, with mmengine's arguments.

    custom_hooks = [dict(type="EarlyStoppingHook", monitor="accuracy/top1", patience=3, min_delta=0.1)]
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from torchyard.trainer.config import ConfigError
from torchyard.trainer.hooks import Hook
from torchyard.trainer.hooks.checkpoint import LESS_IS_BETTER, RULES
from torchyard.trainer.registry import HOOKS

if TYPE_CHECKING:
    from torchyard.trainer.runner import Runner

# The metric names mmengine knows to be better when greater.
GREATER_IS_BETTER = re.compile(r"acc|top|ar@|auc|precision|map|mdice|miou|macc|aacc|psnr|ssim", re.IGNORECASE)


@HOOKS.register()
class EarlyStoppingHook(Hook):
    """Stop after ``patience`` validations without an improvement of more than ``min_delta`` in ``monitor``,
    at once when it reaches ``stopping_threshold``, or when it is not finite (``check_finite``)."""

    priority = 60

    def __init__(self, monitor: str, rule: str | None = None, min_delta: float = 0.1, strict: bool = False,
                 check_finite: bool = True, patience: int = 5,
                 stopping_threshold: float | None = None) -> None:
        rule = rule or _infer_rule(monitor)
        if rule not in RULES:
            raise ConfigError(f"EarlyStoppingHook: cannot tell whether {monitor!r} is better greater or "
                              "less; give rule='greater' or rule='less'")
        if patience < 1:
            raise ConfigError(f"EarlyStoppingHook.patience must be >= 1, got {patience}")
        self.monitor = monitor
        self.rule = rule
        self.min_delta = min_delta
        self.strict = strict
        self.check_finite = check_finite
        self.patience = patience
        self.stopping_threshold = stopping_threshold
        self.best_score = -math.inf if rule == "greater" else math.inf
        self.wait_count = 0

    def after_val(self, runner: Runner, metrics: dict[str, float]) -> None:
        if self.monitor not in metrics:
            if self.strict:
                raise ConfigError(f"EarlyStoppingHook.monitor={self.monitor!r} is not a validation metric; "
                                  f"the metrics are: {', '.join(metrics)}")
            runner.logger.warning(f"EarlyStoppingHook: no {self.monitor!r} among the validation metrics "
                                  f"({', '.join(metrics)}); not checking this time")
            return
        reason = self._stop_reason(metrics[self.monitor])
        if reason:
            runner.train_loop.stop_training = True
            runner.logger.info(f"EarlyStoppingHook: stopping training at epoch {runner.epoch}, iteration "
                               f"{runner.iter}: {reason}")

    def _stop_reason(self, score: float) -> str | None:
        better = RULES[self.rule]
        if self.check_finite and not math.isfinite(score):
            return f"{self.monitor} = {score} is not finite (best so far {self.best_score:.4f})"
        if self.stopping_threshold is not None and better(score, self.stopping_threshold):
            self.best_score = score
            return f"{self.monitor} = {score:.4f} reached stopping_threshold={self.stopping_threshold}"
        margin = self.min_delta if self.rule == "greater" else -self.min_delta
        if better(self.best_score + margin, score):
            self.wait_count += 1
            if self.wait_count >= self.patience:
                return (f"{self.monitor} did not improve by more than {self.min_delta} in the last "
                        f"{self.wait_count} validations (best {self.best_score:.4f})")
            return None
        self.best_score = score
        self.wait_count = 0
        return None

    def before_save_checkpoint(self, runner: Runner, state: dict) -> None:
        state["hooks"]["EarlyStoppingHook"] = {"best_score": self.best_score, "wait_count": self.wait_count}

    def after_load_checkpoint(self, runner: Runner, state: dict) -> None:
        saved = state.get("hooks", {}).get("EarlyStoppingHook")
        if saved:
            self.best_score, self.wait_count = saved["best_score"], saved["wait_count"]


def _infer_rule(monitor: str) -> str | None:
    if LESS_IS_BETTER.search(monitor):
        return "less"
    return "greater" if GREATER_IS_BETTER.search(monitor) else None
