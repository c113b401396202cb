"""mmengine's runtime hooks, so that OpenMMLab's ``default_hooks`` and ``custom_hooks`` build as written:

    default_hooks = dict(timer=dict(type="IterTimerHook"), param_scheduler=dict(type="ParamSchedulerHook"),
                         sampler_seed=dict(type="DistSamplerSeedHook"), ...)
    custom_hooks = [dict(type="SyncBuffersHook"), dict(type="EmptyCacheHook", after_iter=True)]

The first three have nothing to do: the torchyard loop does their work itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from torchyard.trainer.hooks import Hook
from torchyard.trainer.registry import HOOKS

if TYPE_CHECKING:
    from torchyard.trainer.runner import Runner


@HOOKS.register()
class IterTimerHook(Hook):
    """The loop times every iteration (``time`` and ``data_time`` in the log) without it."""


@HOOKS.register()
class ParamSchedulerHook(Hook):
    """The loop steps ``param_scheduler`` after each iteration and epoch, as this hook does in mmengine."""


@HOOKS.register()
class DistSamplerSeedHook(Hook):
    """The training sampler is reseeded for every epoch by the loop (which is what makes resuming exact)."""


@HOOKS.register()
class EmptyCacheHook(Hook):
    """Return the CUDA caching allocator's free blocks to the driver before/after epochs or every iteration
    (for other processes sharing the GPU, or fragmentation); nothing to do without CUDA."""

    def __init__(self, before_epoch: bool = False, after_epoch: bool = True,
                 after_iter: bool = False) -> None:
        self.before_epoch, self.after_epoch, self.after_iter = before_epoch, after_epoch, after_iter

    def before_train_epoch(self, runner: Runner) -> None:
        if self.before_epoch:
            _empty_cache()

    def after_train_iter(self, runner: Runner, losses: dict[str, torch.Tensor]) -> None:
        if self.after_iter:
            _empty_cache()

    def after_train_epoch(self, runner: Runner) -> None:
        if self.after_epoch:
            _empty_cache()

    def after_val(self, runner: Runner, metrics: dict[str, float]) -> None:
        if self.after_epoch:
            _empty_cache()


def _empty_cache() -> None:
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


@HOOKS.register()
class SyncBuffersHook(Hook):
    """Average the model's floating-point buffers (BatchNorm's running statistics) over the ranks after
    every epoch and before validation, as mmengine's does: DDP copies rank 0's buffers into every rank
    before each forward, and each rank's own last batch then moves them apart again."""

    def after_train_epoch(self, runner: Runner) -> None:
        _average_buffers(runner)

    def before_val(self, runner: Runner) -> None:
        _average_buffers(runner)


def _average_buffers(runner: Runner) -> None:
    if not runner.env.distributed:
        return
    for buffer in runner.unwrapped_model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer.div_(runner.env.world_size)
