"""The Runner builds what a config describes and owns the run's state; the loops in loops.py do the stepping.

    runner = Runner(Config.fromfile("configs/digits_cnn.py"))
    runner.train()                   # or runner.test("work_dirs/digits_cnn")
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import torchyard.trainer.hooks.checkpoint
import torchyard.trainer.hooks.early_stopping
import torchyard.trainer.hooks.ema
import torchyard.trainer.hooks.profiler
import torchyard.trainer.hooks.runtime
import torchyard.trainer.hooks.visualization
import torchyard.trainer.metrics
import torchyard.trainer.models
import torchyard.trainer.tasks  # noqa: F401 - importing registers the built-in hooks, metrics, models
from torchyard.trainer import fsdp, runtime
from torchyard.trainer.checkpoint import CheckpointManager, load_checkpoint, resolve_checkpoint
from torchyard.trainer.config import Config, ConfigError
from torchyard.trainer.data import build_dataloader
from torchyard.trainer.dist import (
    all_reduce_max,
    apply_env_cfg,
    destroy_distributed,
    device_for,
    finish_distributed,
    init_distributed,
)
from torchyard.trainer.evaluation import Evaluator
from torchyard.trainer.foreign_checkpoint import load_weights_of
from torchyard.trainer.hooks import build_hooks
from torchyard.trainer.hooks.checkpoint import CheckpointHook
from torchyard.trainer.hooks.logger import LoggerHook
from torchyard.trainer.logger import format_metrics, setup_logger
from torchyard.trainer.loops import LoopCounter, TrainingInterrupted, TrainLoop, run_eval_loop, to_device
from torchyard.trainer.optim import NO_CONTEXT, build_optim_wrapper
from torchyard.trainer.preprocess import build_data_preprocessor, check_batches_stack_for
from torchyard.trainer.registry import MODELS, import_custom_modules, set_default_scope
from torchyard.trainer.schedulers import build_param_schedulers
from torchyard.trainer.seed import get_rng_state, seed_everything, set_rng_state
from torchyard.trainer.stop import StopRequest

DEFAULT_HOOKS = {
    "logger": {"type": "LoggerHook", "interval": 10},
    "checkpoint": {"type": "CheckpointHook", "interval": 1},
}
# With several processes, checking for a stop signal costs an all-reduce; do it every few steps.
DIST_STOP_CHECK_INTERVAL = 10


class Runner:
    epoch = LoopCounter()
    iter = LoopCounter()
    inner_iter = LoopCounter()

    def __init__(self, cfg: Config, log_name: str = "train.log", stop: StopRequest | None = None) -> None:
        import_custom_modules(cfg.get("custom_imports"))
        set_default_scope(cfg.get("default_scope"))
        self.cfg = cfg
        self.work_dir = Path(cfg.get("work_dir") or Path("work_dirs") / Path(cfg.filename or "run").stem)
        tolerated = runtime.check_top_level(cfg)
        randomness = runtime.randomness(cfg)
        env_cfg = runtime.env_cfg(cfg)
        self.env = init_distributed(cfg.get("launcher", "none"), backend=env_cfg.backend)
        self.device = device_for(self.env)
        try:
            self.logger = setup_logger(self.work_dir, self.env.rank, log_name, cfg.get("log_level", "INFO"))
        except OSError as err:
            raise ConfigError(f"work_dir {self.work_dir}: cannot create or write it ({err.strerror or err}); "
                              "set a writable work_dir (--work-dir)") from None
        for warning in tolerated:
            self.logger.warning(warning)
        self.seed = randomness.seed
        self.seed_drawn = self.seed is None
        if self.seed_drawn:
            # Drawn on rank 0 and shared, so that every rank's sampler shuffles alike (as mmengine does).
            self.seed = all_reduce_max(random.SystemRandom().randrange(2**31) if self.env.is_main else 0,
                                       self.env)
            self.logger.info(f"randomness.seed=None: drew seed {self.seed} (set randomness.seed={self.seed} "
                             "to repeat this run)")
        self.deterministic = randomness.deterministic
        seed_everything(self.seed, self.env.rank if randomness.diff_rank_seed else 0, self.deterministic)
        apply_env_cfg(env_cfg, self.deterministic)
        model_cfg, self.data_preprocessor = build_data_preprocessor(cfg)
        model = MODELS.build(model_cfg, where="model").to(self.device)
        check_batches_stack_for(model, self.data_preprocessor, cfg)
        shard_options = fsdp.options(cfg)
        ddp_options = runtime.ddp_kwargs(cfg) if shard_options is None else {}  # checked in every run
        # like DDP, FSDP wraps only a distributed run: one process (torchyard-test of the config) runs as is
        self.fsdp = shard_options is not None and self.env.distributed
        if shard_options is not None and not self.fsdp:
            self.logger.warning("model_wrapper_cfg.type=FullyShard: one process, nothing to shard across; "
                                "the model runs unsharded")
        if self.fsdp:
            model = fsdp.shard(model, shard_options, self.device)
        elif self.env.distributed:
            model = DistributedDataParallel(model, **ddp_options)
        self.model = model
        self.hooks = build_hooks({**DEFAULT_HOOKS, **cfg.get("default_hooks", {})}, cfg.get("custom_hooks"))
        self.checkpoints = CheckpointManager(self.work_dir, logger=self.logger, sync_in_background=True)
        for hook in self.hooks:
            if isinstance(hook, CheckpointHook):
                hook.configure(self.checkpoints, self.work_dir)
            if self.fsdp and type(hook).__name__ == "EMAHook":
                raise ConfigError("custom_hooks: EMAHook with model_wrapper_cfg.type=FullyShard is not "
                                  "supported (its average would be a full copy on every rank); remove one")
        self.amp_dtype = None
        self.train_loop = TrainLoop(self)
        self.data_time = 0.0
        self.stop = stop or StopRequest()
        self._saved_at_iter = -1
        # What train() builds (test() needs none of it), declared here so that every attribute always exists.
        self.by_epoch = True
        self.train_dataloader = self.val_dataloader = self.val_evaluator = self.optim_wrapper = None
        self.iters_per_epoch = self.max_epochs = self.max_iters = 0
        self.val_interval = self.val_begin = 1
        self.iter_schedulers: list = []
        self.epoch_schedulers: list = []
        self.last_metrics: dict[str, float] = {}
        self.tested_checkpoint: Path | None = None
        if self.env.is_main:
            cfg.dump(self.work_dir / f"{Path(cfg.filename or 'config').stem}.py")
        self.logger.info(f"torch {torch.__version__}, device {self.device}, "
                         f"world size {self.env.world_size}, seed {self.seed}, "
                         f"deterministic {self.deterministic}, work dir {self.work_dir}")

    def load_model_state(self, state: dict[str, torch.Tensor], strict: bool = True) -> None:
        """Full weights into the model (each rank keeps its shard of a sharded one)."""
        if self.fsdp:
            fsdp.load_model_state(self.model, state, strict=strict)
        else:
            self.unwrapped_model.load_state_dict(state, strict=strict)

    @property
    def unwrapped_model(self) -> torch.nn.Module:
        return self.model.module if isinstance(self.model, DistributedDataParallel) else self.model

    def call_hook(self, name: str, **kwargs) -> None:
        for hook in self.hooks:
            getattr(hook, name)(self, **kwargs)

    def prepare(self, batch: dict, training: bool) -> dict:
        """The batch on the device, through the model's data_preprocessor if it has one."""
        batch = to_device(batch, self.device)
        return batch if self.data_preprocessor is None else self.data_preprocessor(batch, training)

    def autocast(self):
        if self.amp_dtype is None:
            return NO_CONTEXT
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # ---- training ------------------------------------------------------------------------------------------

    def train(self) -> dict[str, float]:
        """Train to ``max_epochs``/``max_iters``.

        Returns the last validation metrics (empty without validation).
        """
        cfg = self.cfg
        train_cfg = dict(cfg.get("train_cfg") or {})
        self.by_epoch = runtime.train_loop_by_epoch(train_cfg)
        runtime.check_eval_loop(cfg, "val_cfg")
        self._configure_logging()
        self.train_dataloader = build_dataloader(cfg.train_dataloader, self.env, self.seed, train=True,
                                                 where="train_dataloader")
        self.iters_per_epoch = len(self.train_dataloader)
        if self.by_epoch:
            self.max_epochs = _positive(train_cfg, "max_epochs")
            self.max_iters = self.max_epochs * self.iters_per_epoch
        else:
            self.max_iters = _positive(train_cfg, "max_iters")
            self.max_epochs = math.ceil(self.max_iters / self.iters_per_epoch)
        self.val_interval = train_cfg.get("val_interval", 1)
        self.val_begin = train_cfg.get("val_begin", 1)
        self.val_dataloader = self.val_evaluator = None
        if cfg.get("val_dataloader"):
            self.val_dataloader = build_dataloader(cfg.val_dataloader, self.env, self.seed, train=False,
                                                   where="val_dataloader")
            self.val_evaluator = Evaluator.build(cfg.val_evaluator, where="val_evaluator")

        self.optim_wrapper = build_optim_wrapper(cfg.optim_wrapper, self.unwrapped_model,
                                                 cfg.get("amp", False), self.device)
        self.amp_dtype = self.optim_wrapper.amp_dtype
        self._auto_scale_lr()
        schedulers = build_param_schedulers(cfg.get("param_scheduler"), self.optim_wrapper.optimizer,
                                            self.max_epochs, self.max_iters, self.iters_per_epoch)
        self.iter_schedulers = [s for s in schedulers if not s.by_epoch]
        self.epoch_schedulers = [s for s in schedulers if s.by_epoch]
        self.last_metrics = {}

        if cfg.get("resume"):
            self.resume(None if cfg.resume in (True, "auto") else cfg.resume)
        elif cfg.get("load_from"):
            self.load_weights(cfg.load_from)

        self.call_hook("before_run")
        self.call_hook("before_train")
        owns_handlers = not self.stop.installed
        self.stop.install()
        start = time.perf_counter()
        try:
            self.train_loop.run()
        finally:
            if owns_handlers:
                self.stop.restore()
            self.checkpoints.wait()  # a stop or a crash still publishes the checkpoint it already wrote
            self.call_hook("after_run")
        self.call_hook("after_train")
        finish_distributed(self.env)
        self.logger.info(f"training finished: {self.iter} iterations, {self.epoch} epochs in "
                         f"{time.perf_counter() - start:.1f} s")
        return self.last_metrics

    def _configure_logging(self) -> None:
        """visualizer.vis_backends and log_processor act through the LoggerHook."""
        logger_hook = next((hook for hook in self.hooks if isinstance(hook, LoggerHook)), None)
        backends = runtime.vis_backends(self.cfg)
        others = {kind: options for kind, options in backends.items() if kind != "local"}
        if others:
            if logger_hook is None:
                raise ConfigError(f"visualizer: {', '.join(others)} need default_hooks.logger, "
                                  "which is switched off")
            logger_hook.backends.update(others)
        for warning in runtime.check_log_processor(self.cfg, logger_hook.interval if logger_hook else 0):
            self.logger.warning(warning)

    def validation_due(self, t: int) -> bool:
        if self.val_dataloader is None or t < self.val_begin:
            return False
        return t % self.val_interval == 0 or t == (self.max_epochs if self.by_epoch else self.max_iters)

    def validate(self) -> dict[str, float]:
        self.call_hook("before_val")
        metrics = run_eval_loop(self, self.val_dataloader, self.val_evaluator, mode="val")
        self.last_metrics = metrics
        self.call_hook("after_val", metrics=metrics)
        return metrics

    def stop_if_requested(self, now: bool = False) -> None:
        """Save a checkpoint and raise TrainingInterrupted if any rank got a stop signal. Every rank must
        call it at the same step: distributed, it checks only every DIST_STOP_CHECK_INTERVAL iterations,
        at an epoch's start, or `now`."""
        if self.env.distributed and not now and self.iter % DIST_STOP_CHECK_INTERVAL and self.inner_iter:
            return
        signum = all_reduce_max(self.stop.signum, self.env)
        if not signum:
            return
        if self._saved_at_iter != self.iter:
            path = self.save_checkpoint(f"iter_{self.iter}.pth")
        elif self.env.is_main:
            path = self.checkpoints.last()
        else:
            path = None
        # Other ranks neither save nor read rank 0's pointer file, which may not have moved yet.
        raise TrainingInterrupted(signum, str(path) if path else f"the last checkpoint in {self.work_dir}")

    def _auto_scale_lr(self) -> None:
        scale = self.cfg.get("auto_scale_lr") or {}
        if not scale.get("enable"):
            return
        if "base_batch_size" not in scale:
            raise ConfigError("auto_scale_lr: needs base_batch_size "
                              "(the total batch size the lr was tuned for)")
        total = self.env.world_size * self.train_dataloader.batch_size
        factor = total / scale["base_batch_size"]
        self.optim_wrapper.scale_lr(factor)
        self.logger.info(f"auto_scale_lr: total batch size {total} / base {scale['base_batch_size']} -> "
                         f"lr x{factor:g} = {self.optim_wrapper.get_lr():g}")

    # ---- checkpoints ---------------------------------------------------------------------------------------

    def checkpoint_state(self) -> dict | None:
        """The full training state; a collective (every rank contributes its RNG state), None off rank 0."""
        rng = get_rng_state()
        if self.env.distributed:
            every_rank: list = [None] * self.env.world_size
            dist.all_gather_object(every_rank, rng)
        else:
            every_rank = [rng]
        if self.fsdp:  # gathered from every rank's shards: a collective too
            model_state = fsdp.model_state(self.model)
            optim_state = {**self.optim_wrapper.state_dict(),
                           "optimizer": fsdp.optimizer_state(self.model, self.optim_wrapper.optimizer)}
        if not self.env.is_main:
            return None
        if not self.fsdp:
            model_state, optim_state = self.unwrapped_model.state_dict(), self.optim_wrapper.state_dict()
        return {
            "meta": {
                "epoch": self.epoch, "iter": self.iter, "inner_iter": self.inner_iter,
                "world_size": self.env.world_size, "batch_size": self.train_dataloader.batch_size,
                "seed": self.seed, "torch_version": str(torch.__version__), "config": self.cfg.pretty_text,
                "time": time.time(),
            },
            "state_dict": model_state,
            "optim_wrapper": optim_state,
            "param_schedulers": [s.state_dict() for s in self.iter_schedulers + self.epoch_schedulers],
            "rng": every_rank,
            "hooks": {},
        }

    def save_checkpoint(self, filename: str) -> Path | None:
        """Save the training state as `filename` and point `last_checkpoint` at it (rank 0 writes)."""
        self._saved_at_iter = self.iter
        return self._save(filename, best=False)

    def save_best_checkpoint(self, filename: str, replaces: Path | None = None,
                             point: bool = True) -> Path | None:
        """Save the training state as `filename`, delete the best checkpoint it `replaces` and, if `point`,
        point `best_checkpoint` at it (rank 0 writes)."""
        return self._save(filename, best=True, replaces=replaces, point=point)

    def _save(self, filename: str, best: bool, replaces: Path | None = None,
              point: bool = True) -> Path | None:
        state = self.checkpoint_state()  # a collective: every rank takes part
        if state is None:
            return None
        self.call_hook("before_save_checkpoint", state=state)
        if best:
            path = self.checkpoints.save_best(state, filename, replaces=replaces, point=point)
        else:
            path = self.checkpoints.save(state, filename)
        self.logger.info(f"saved {'best ' if best else ''}checkpoint {path}")
        return path

    def resume(self, path: str | None) -> None:
        if path is None:
            found = self.checkpoints.load_resumable()
            if found is None:
                self.logger.info(f"--resume: no checkpoint in {self.work_dir} yet; starting from scratch")
                return
            path, state = found
        else:
            state = load_checkpoint(path)
        meta = state["meta"]
        if self.seed_drawn and meta["seed"] != self.seed:
            # This run drew a new seed; the resumed one must shuffle the data as the interrupted one did.
            self.seed = self.train_dataloader.sampler.seed = meta["seed"]
            self.logger.info(f"randomness.seed=None: continuing with the interrupted run's seed {self.seed}")
        self.load_model_state(state["state_dict"])
        if self.fsdp:
            optimizer = self.optim_wrapper.optimizer
            fsdp.load_optimizer_state(self.model, optimizer, state["optim_wrapper"]["optimizer"])
            self.optim_wrapper.load_state_dict({**state["optim_wrapper"], "optimizer": None})
        else:
            self.optim_wrapper.load_state_dict(state["optim_wrapper"])
        schedulers = self.iter_schedulers + self.epoch_schedulers
        if len(state["param_schedulers"]) != len(schedulers):
            raise ConfigError(f"--resume {path}: it has {len(state['param_schedulers'])} param schedulers, "
                              f"the config has {len(schedulers)}; "
                              "resume with the config it was trained with")
        for scheduler, scheduler_state in zip(schedulers, state["param_schedulers"], strict=True):
            scheduler.load_state_dict(scheduler_state)
        position = self.train_loop
        position.epoch, position.iter, position.inner_iter = meta["epoch"], meta["iter"], meta["inner_iter"]
        same_layout = (meta["world_size"] == self.env.world_size
                       and meta["batch_size"] == self.train_dataloader.batch_size)
        if same_layout:
            set_rng_state(state["rng"][self.env.rank])
        else:
            # The epoch's samples are sharded differently now; continue after the same share of the epoch.
            seen = position.inner_iter * meta["batch_size"] * meta["world_size"]
            position.inner_iter = seen // (self.train_dataloader.batch_size * self.env.world_size)
            if self.by_epoch:
                position.iter = position.epoch * self.iters_per_epoch + position.inner_iter
            self.logger.warning(f"--resume: the checkpoint was written with world size {meta['world_size']} "
                                f"and batch size {meta['batch_size']}; continuing at epoch {self.epoch} "
                                f"iteration {self.iter}, which is not bit-identical to an uninterrupted run")
        self.call_hook("after_load_checkpoint", state=state)
        self.logger.info(f"resumed from {path} at epoch {self.epoch}, iteration {self.iter}")

    def load_weights(self, path: str | Path, strict: bool = False) -> None:
        """Weights only, training starts at iteration 0.

        ``load_from`` (not strict) reports mismatches and goes on, as fine-tuning needs; testing (strict)
        refuses a checkpoint whose weights do not all fit the model.
        """
        what = "checkpoint" if strict else "load_from"
        weights = load_weights_of(path)
        own = self.unwrapped_model.state_dict()
        if not own.keys() & weights.keys():
            raise ConfigError(f"{what} {path}: none of its {len(weights)} weights match the model's names; "
                              "is it a checkpoint of another model? "
                              f"(model keys look like {next(iter(own), '?')!r}, "
                              f"checkpoint keys like {next(iter(weights), '?')!r})")
        mismatched = sorted(k for k, v in weights.items()
                            if k in own and hasattr(v, "shape") and v.shape != own[k].shape)
        problems = {
            "missing in checkpoint": sorted(own.keys() - weights.keys()),
            "unexpected in checkpoint": sorted(weights.keys() - own.keys()),
            "shape mismatch": [f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(own[k].shape)}"
                               for k in mismatched],
        }
        if strict and (problems["missing in checkpoint"] or mismatched):
            found = "; ".join(f"{len(keys)} {label}: {', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}"
                              for label, keys in problems.items() if keys)
            raise ConfigError(f"{what} {path} does not fit the model of {self.cfg.filename or 'this config'} "
                              f"({found}); test it with the config it was trained with")
        self.load_model_state({k: v for k, v in weights.items() if k not in mismatched}, strict=False)
        for label, keys in problems.items():
            if keys:
                self.logger.warning(f"{what} {path}: {len(keys)} {label}: {', '.join(keys)}")
        self.logger.info(f"loaded weights from {path}")

    # ---- testing -------------------------------------------------------------------------------------------

    def test(self, checkpoint: str | Path | None = None) -> dict[str, float]:
        cfg = self.cfg
        if not cfg.get("test_dataloader") or not cfg.get("test_evaluator"):
            raise ConfigError(f"{cfg.filename}: testing needs test_dataloader and test_evaluator "
                              "in the config")
        runtime.check_eval_loop(cfg, "test_cfg")
        loader = build_dataloader(cfg.test_dataloader, self.env, self.seed, train=False,
                                  where="test_dataloader")
        evaluator = Evaluator.build(cfg.test_evaluator, where="test_evaluator")
        self.amp_dtype = _amp_dtype(cfg.get("amp", False), self.device)
        if checkpoint is not None:
            path = resolve_checkpoint(checkpoint)
            self.load_weights(path, strict=True)
            self.tested_checkpoint = path
        self.call_hook("before_run")
        metrics = run_eval_loop(self, loader, evaluator, mode="test")
        self.call_hook("after_test", metrics=metrics)
        self.call_hook("after_run")
        finish_distributed(self.env)
        self.logger.info(f"test: {format_metrics(metrics)}")
        return metrics

    def close(self) -> None:
        """Finish the last checkpoint and leave the process group."""
        try:
            self.checkpoints.wait()
        finally:
            destroy_distributed()


def _positive(train_cfg: dict, key: str) -> int:
    value = train_cfg.get(key)
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"train_cfg.{key}: must be a positive integer, got {value!r}")
    return value


def _amp_dtype(amp: bool, device: torch.device) -> torch.dtype | None:
    if not amp:
        return None
    return torch.float16 if device.type == "cuda" else torch.bfloat16


__all__ = ["Runner", "TrainingInterrupted"]
