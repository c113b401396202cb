"""mmengine's runtime hooks whose work the torchyard loop does itself, so that OpenMMLab's ``default_hooks``
build as written:

    default_hooks = dict(timer=dict(type="IterTimerHook"), param_scheduler=dict(type="ParamSchedulerHook"),
                         sampler_seed=dict(type="DistSamplerSeedHook"), ...)
"""

from __future__ import annotations

from torchyard.trainer.hooks import Hook
from torchyard.trainer.registry import HOOKS


@HOOKS.register()
class IterTimerHook(Hook):
    """The loop times every iteration (``time`` and ``data_time`` in the log) without it."""


@HOOKS.register()
class ParamSchedulerHook(Hook):
    """The loop steps ``param_scheduler`` after each iteration and epoch, as this hook does in mmengine."""


@HOOKS.register()
class DistSamplerSeedHook(Hook):
    """The training sampler is reseeded for every epoch by the loop (which is what makes resuming exact)."""
