"""ProfilerHook: torch.profiler over the first training epochs or iterations, with mmengine's arguments.

    custom_hooks = [dict(type="ProfilerHook", by_epoch=False, profile_times=20, record_shapes=True)]

Rank 0 is profiled. Without ``on_trace_ready`` the trace goes to ``json_trace_path`` (default: the work
dir's ``profiler_trace.json``), which chrome://tracing and Perfetto open; ``dict(type="log_trace")`` logs the
table of the most expensive operators instead, ``dict(type="tb_trace", dir_name=...)`` writes TensorBoard's
profiler plugin files (default: the work dir's ``tf_tracing_logs``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import profiler

from torchyard.trainer.config import ConfigError
from torchyard.trainer.hooks import Hook
from torchyard.trainer.registry import HOOKS

if TYPE_CHECKING:
    from torchyard.trainer.runner import Runner


@HOOKS.register()
class ProfilerHook(Hook):
    """Profiles ``profile_times`` epochs (``by_epoch``) or iterations from the start of training."""

    priority = 0  # first in, so that the other hooks' work is inside what is measured

    def __init__(self, by_epoch: bool = True, profile_times: int = 1, activity_with_cpu: bool = True,
                 activity_with_cuda: bool = False, schedule: dict | None = None,
                 on_trace_ready: dict | None = None, record_shapes: bool = False,
                 profile_memory: bool = False, with_stack: bool = False, with_flops: bool = False,
                 json_trace_path: str | None = None) -> None:
        if profile_times < 1:
            raise ConfigError(f"ProfilerHook.profile_times must be >= 1, got {profile_times}")
        if not activity_with_cpu and not activity_with_cuda:
            raise ConfigError("ProfilerHook: profiles nothing with activity_with_cpu=False and "
                              "activity_with_cuda=False")
        trace_kind = (on_trace_ready or {}).get("type")
        if trace_kind not in (None, "log_trace", "tb_trace"):
            raise ConfigError(f"ProfilerHook.on_trace_ready: {trace_kind!r} is not supported; use "
                              "dict(type='log_trace') or dict(type='tb_trace')")
        self.by_epoch = by_epoch
        self.profile_times = profile_times
        self.activities = [kind for kind, on in ((profiler.ProfilerActivity.CPU, activity_with_cpu),
                                                 (profiler.ProfilerActivity.CUDA, activity_with_cuda)) if on]
        self.schedule = schedule
        self.on_trace_ready = dict(on_trace_ready or {})
        self.options = dict(record_shapes=record_shapes, profile_memory=profile_memory, with_stack=with_stack,
                            with_flops=with_flops)
        self.json_trace_path = json_trace_path
        self._profiler: profiler.profile | None = None
        self._done = 0

    def before_train(self, runner: Runner) -> None:
        if not runner.env.is_main:
            return
        if self.by_epoch and self.profile_times > runner.max_epochs:
            raise ConfigError(f"ProfilerHook.profile_times={self.profile_times} epochs is more than the "
                              f"run's {runner.max_epochs}")
        try:
            schedule = profiler.schedule(**self.schedule) if self.schedule else None
        except TypeError as err:
            raise ConfigError(f"ProfilerHook.schedule: {err}; give wait, warmup, active (and repeat, "
                              "skip_first)") from None
        self._profiler = profiler.profile(activities=self.activities, schedule=schedule,
                                          on_trace_ready=self._trace_handler(runner), **self.options)
        self._profiler.__enter__()

    def _trace_handler(self, runner: Runner):
        kind = self.on_trace_ready.get("type")
        if kind == "tb_trace":
            directory = self.on_trace_ready.get("dir_name") or runner.work_dir / "tf_tracing_logs"
            return profiler.tensorboard_trace_handler(str(directory))
        if kind == "log_trace":
            sort_by = self.on_trace_ready.get("sort_by", "self_cpu_time_total")
            row_limit = self.on_trace_ready.get("row_limit", 10)
            return lambda result: runner.logger.info(
                "ProfilerHook:\n" + result.key_averages().table(sort_by=sort_by, row_limit=row_limit))
        return None

    def after_train_iter(self, runner: Runner, losses: dict[str, torch.Tensor]) -> None:
        if self._profiler is not None and not self.by_epoch:
            self._step(runner)

    def after_train_epoch(self, runner: Runner) -> None:
        if self._profiler is not None and self.by_epoch:
            self._step(runner)

    def after_run(self, runner: Runner) -> None:
        if self._profiler is not None:  # training ended (or stopped) before profile_times
            self._stop(runner)

    def _step(self, runner: Runner) -> None:
        self._profiler.step()
        self._done += 1
        if self._done >= self.profile_times:
            self._stop(runner)

    def _stop(self, runner: Runner) -> None:
        active, self._profiler = self._profiler, None
        active.__exit__(None, None, None)
        if not self.on_trace_ready and not self.schedule:
            path = Path(self.json_trace_path or runner.work_dir / "profiler_trace.json")
            active.export_chrome_trace(str(path))
            runner.logger.info(f"ProfilerHook: {self._done} {'epochs' if self.by_epoch else 'iterations'} "
                               f"profiled; trace in {path}")
