"""LoggerHook: every `interval` iterations the mean losses, lr, time, data time, eta and memory go to the
log, to the work dir's scalars.jsonl, to a progress line on a TTY and, optionally, to TensorBoard and MLflow
(visualizer.vis_backends: trainer/vis_backends.py).

Only rank 0 writes files; other ranks log warnings and errors to the console only.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import torch
import torch.distributed as dist

from torchyard.contract.workdir import SCALARS
from torchyard.trainer.hooks import Hook
from torchyard.trainer.logger import format_metrics, memory_mb
from torchyard.trainer.registry import HOOKS
from torchyard.trainer.vis_backends import MlflowSink, ScalarSink, TensorboardSink, run_status

if TYPE_CHECKING:
    from torchyard.trainer.runner import Runner


@HOOKS.register()
class LoggerHook(Hook):
    """Every ``interval`` iterations: mean losses, lr, time, data_time, eta, memory -> log and
    ``scalars.jsonl``.
    """

    priority = 10

    def __init__(self, interval: int = 10, tensorboard: bool = False,
                 log_metric_by_epoch: bool = True) -> None:
        self.interval = interval
        # kind -> its arguments, from visualizer.vis_backends (Runner._configure_logging)
        self.backends: dict[str, dict] = {"tensorboard": {}} if tensorboard else {}
        # mmengine's meaning: TensorBoard plots validation metrics over epochs (else over iterations).
        self.log_metric_by_epoch = log_metric_by_epoch
        self._sums: dict[str, torch.Tensor] = {}
        self._count = 0
        self._data_time = 0.0
        self._window_start = 0.0
        self._iter_times: list[float] = []
        self._scalars: TextIO | None = None
        self._sinks: list[ScalarSink] = []
        self._tty = sys.stdout.isatty()

    def before_train(self, runner: Runner) -> None:
        if runner.env.is_main:
            self._scalars = open(runner.work_dir / SCALARS, "a")  # noqa: SIM115 - closed in after_run
            self._sinks = [self._sink(kind, options, runner) for kind, options in self.backends.items()]
        self._window_start = time.perf_counter()

    def after_train_iter(self, runner: Runner, losses: dict[str, torch.Tensor]) -> None:
        for name, value in losses.items():
            detached = value.detach()
            self._sums[name] = self._sums[name] + detached if name in self._sums else detached
        self._count += 1
        self._data_time += runner.data_time
        if runner.iter % self.interval and runner.iter != runner.max_iters:
            return
        now = time.perf_counter()
        iter_time = (now - self._window_start) / self._count
        self._iter_times.append(iter_time)
        recent = self._iter_times[-20:]
        eta = sum(recent) / len(recent) * (runner.max_iters - runner.iter)
        record = {
            "mode": "train", "epoch": runner.epoch + 1, "iter": runner.iter,
            "lr": runner.optim_wrapper.get_lr(),
            **self._mean_losses(runner),
            "time": iter_time, "data_time": self._data_time / self._count, "eta_s": round(eta, 1),
            "memory_mb": round(memory_mb(runner.device), 1),
        }
        if runner.optim_wrapper.last_grad_norm is not None:
            record["grad_norm"] = runner.optim_wrapper.last_grad_norm
        self._sums, self._count, self._data_time, self._window_start = {}, 0, 0.0, now
        if not runner.env.is_main:
            return
        progress = (f"epoch {runner.epoch + 1}/{runner.max_epochs} " if runner.by_epoch else "") + \
            f"iter {runner.iter}/{runner.max_iters}"
        values = format_metrics({k: v for k, v in record.items()
                                 if k not in ("mode", "epoch", "iter", "eta_s")})
        message = f"{progress} eta {datetime.timedelta(seconds=round(eta))} {values}"
        if self._tty:
            print(f"\r{message}", end="", flush=True)
            _file_only(runner.logger, message)
        else:
            runner.logger.info(message)
        self._write(record, runner.iter)

    def _mean_losses(self, runner: Runner) -> dict[str, float]:
        """Losses averaged over the window and over every rank: the loss of the global batch."""
        names = sorted(self._sums)
        means = torch.stack([self._sums[name].float() for name in names]) / self._count
        if runner.env.distributed:
            dist.all_reduce(means)
            means /= runner.env.world_size
        return dict(zip(names, means.tolist(), strict=True))

    def after_val(self, runner: Runner, metrics: dict[str, float]) -> None:
        if self._tty and runner.env.is_main:
            print()
        runner.logger.info(f"val epoch {runner.epoch} iter {runner.iter}: {format_metrics(metrics)}")
        if runner.env.is_main:
            step = runner.epoch if self.log_metric_by_epoch and runner.by_epoch else runner.iter
            self._write({"mode": "val", "epoch": runner.epoch, "iter": runner.iter, **metrics}, step)

    def after_run(self, runner: Runner) -> None:
        if self._tty and runner.env.is_main:
            print()
        if self._scalars:
            self._scalars.close()
            self._scalars = None
        status = run_status()
        for sink in self._sinks:
            sink.close(status)
        self._sinks = []

    @staticmethod
    def _sink(kind: str, options: dict, runner: Runner) -> ScalarSink:
        if kind == "tensorboard":
            return TensorboardSink(Path(options.get("save_dir") or runner.work_dir / "tensorboard"))
        return MlflowSink(options, runner.work_dir, runner.cfg.to_dict())

    def _write(self, record: dict, step: int) -> None:
        if self._scalars:
            # when it happened: iterations alone cannot line a run up with other logs or tell a pause apart
            stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
            self._scalars.write(json.dumps({**record, "timestamp": stamp}) + "\n")
            self._scalars.flush()
        if self._sinks:
            scalars = {key: value for key, value in record.items()
                       if isinstance(value, float) and key not in ("epoch", "iter")}
            for sink in self._sinks:
                sink.write(record["mode"], scalars, step)


def _file_only(logger: logging.Logger, message: str) -> None:
    """On a TTY the progress line already shows the numbers; keep them in the log file only."""
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, message, None, None)
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)

