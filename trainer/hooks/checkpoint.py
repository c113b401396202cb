"""CheckpointHook: periodic checkpoints, ``max_keep_ckpts`` and the best checkpoints by validation metrics,
with mmengine's arguments and meaning.

    default_hooks = dict(checkpoint=dict(type="CheckpointHook", interval=1, max_keep_ckpts=3,
                                         save_best=["accuracy/top1", "loss"], rule=["greater", "less"],
                                         out_dir="/scratch/ckpts", filename_tmpl="ckpt_{}.pth"))

``out_dir`` holds the checkpoints in ``out_dir/<the work dir's name>``; the pointer files stay in the work
dir, so ``--resume`` and ``torchyard-test WORK_DIR`` find them. Of several ``save_best`` metrics, each keeps
its own best checkpoint and the first one's is what ``best_checkpoint`` names.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from torchyard.trainer.config import ConfigError
from torchyard.trainer.hooks import Hook
from torchyard.trainer.registry import HOOKS

if TYPE_CHECKING:
    import torch

    from torchyard.trainer.checkpoint import CheckpointManager
    from torchyard.trainer.runner import Runner

WHERE = "default_hooks.checkpoint"
RULES = {"greater": lambda new, best: new > best, "less": lambda new, best: new < best}
# Metrics where smaller is better, for save_best="auto" and rule=None (after the config's less_keys).
LESS_IS_BETTER = re.compile(r"loss|error|fid|mse|mae|rmse|lpips|niqe|perplexity", re.IGNORECASE)
TRAINING_STATE_KEYS = ("meta", "state_dict", "optim_wrapper", "param_schedulers", "rng", "hooks")


@HOOKS.register()
class CheckpointHook(Hook):
    priority = 70

    def __init__(self, interval: int = 1, by_epoch: bool | None = None, max_keep_ckpts: int = -1,
                 save_best: str | list[str] | None = None, rule: str | list[str] | None = None,
                 save_last: bool = True, out_dir: str | None = None, filename_tmpl: str | None = None,
                 save_begin: int = 0, greater_keys: str | list[str] | None = None,
                 less_keys: str | list[str] | None = None, published_keys: str | list[str] | None = None,
                 save_optimizer: bool = True, save_param_scheduler: bool = True,
                 backend_args: dict | None = None, file_client_args: dict | None = None) -> None:
        if interval != -1 and interval < 1:
            raise ConfigError(f"{WHERE}.interval must be >= 1 (or -1: only the last checkpoint), "
                              f"got {interval}")
        if save_begin < 0:
            raise ConfigError(f"{WHERE}.save_begin must be >= 0, got {save_begin}")
        if not (save_optimizer and save_param_scheduler):
            raise ConfigError(f"{WHERE}.save_optimizer/save_param_scheduler=False: torchyard's checkpoints "
                              "always hold them, so that --resume continues exactly; for a weights-only "
                              "file set published_keys=['meta', 'state_dict'] or run "
                              "`torchyard tools publish-model`")
        if backend_args or file_client_args:
            raise ConfigError(f"{WHERE}.backend_args/file_client_args: checkpoints go to a file system "
                              "(a mounted volume: NFS, a PVC, Lustre); remove them and set out_dir to a "
                              "mounted path")
        if filename_tmpl is not None and (not isinstance(filename_tmpl, str) or filename_tmpl.count("{}") != 1
                                          or "/" in filename_tmpl):
            raise ConfigError(f"{WHERE}.filename_tmpl: {filename_tmpl!r} must be a file name with one '{{}}' "
                              "for the epoch or iteration, e.g. 'epoch_{}.pth'")
        self.interval = interval
        self.by_epoch = by_epoch
        self.max_keep_ckpts = max_keep_ckpts
        self.keys = _as_list(save_best, "save_best")
        if "auto" in self.keys and len(self.keys) > 1:
            raise ConfigError(f"{WHERE}.save_best: 'auto' cannot be combined with other metrics: {self.keys}")
        if len(set(self.keys)) != len(self.keys):
            raise ConfigError(f"{WHERE}.save_best: a metric is named twice: {self.keys}")
        self.rules = _as_list(rule, "rule") or [None]
        if len(self.rules) not in (1, max(len(self.keys), 1)):
            raise ConfigError(f"{WHERE}.rule: {len(self.rules)} rules for {len(self.keys)} save_best "
                              "metrics; give one rule for all, or one per metric")
        for one in self.rules:
            if one is not None and one not in RULES:
                raise ConfigError(f"{WHERE}.rule must be one of {', '.join(RULES)}, got {one!r}")
        self.greater_keys = [key.lower() for key in _as_list(greater_keys, "greater_keys")]
        self.less_keys = [key.lower() for key in _as_list(less_keys, "less_keys")]
        self.published_keys = _as_list(published_keys, "published_keys")
        unknown = sorted(set(self.published_keys) - set(TRAINING_STATE_KEYS))
        if unknown:
            raise ConfigError(f"{WHERE}.published_keys: {unknown} are not in torchyard's checkpoints; "
                              f"choose from {', '.join(TRAINING_STATE_KEYS)}")
        self.save_last = save_last
        self.out_dir = out_dir
        self.filename_tmpl = filename_tmpl
        self.save_begin = save_begin
        self.best_scores: dict[str, float] = {}
        self.best_paths: dict[str, str] = {}
        self.last_saved: Path | None = None

    def configure(self, checkpoints: CheckpointManager, work_dir: Path) -> None:
        """Where checkpoints go and which files rotate: set before a resume looks for them."""
        if self.out_dir is not None and Path(self.out_dir).absolute() != work_dir.absolute():
            checkpoints.checkpoint_dir = Path(self.out_dir).absolute() / work_dir.name
        checkpoints.max_keep_ckpts = self.max_keep_ckpts
        if self.filename_tmpl is not None:
            before, after = self.filename_tmpl.split("{}")
            checkpoints.rotated_names.append(re.compile(re.escape(before) + r"(\d+)" + re.escape(after)))

    def before_train(self, runner: Runner) -> None:
        if self.by_epoch is None:
            self.by_epoch = runner.by_epoch
        accumulate = runner.optim_wrapper.accumulative_counts
        if not self.by_epoch and self.interval > 0 and self.interval % accumulate:
            raise ConfigError(f"{WHERE}.interval={self.interval} iterations must be a "
                              f"multiple of optim_wrapper.accumulative_counts={accumulate}, so that no "
                              "checkpoint falls inside a gradient accumulation window")
        if runner.checkpoints.checkpoint_dir != runner.checkpoints.work_dir:
            runner.logger.info(f"checkpoints will be saved to {runner.checkpoints.checkpoint_dir}")

    def after_train_iter(self, runner: Runner, losses: dict[str, torch.Tensor]) -> None:
        if not self.by_epoch:
            self._maybe_save(runner, runner.iter, runner.max_iters, "iter_{}.pth")

    def after_train_epoch(self, runner: Runner) -> None:
        if self.by_epoch:
            self._maybe_save(runner, runner.epoch, runner.max_epochs, "epoch_{}.pth")

    def _maybe_save(self, runner: Runner, step: int, last: int, default_tmpl: str) -> None:
        # mmengine's every_n_epochs/iters from save_begin: save_begin=5, interval=2 saves 5, 7, 9, ...
        since_begin = step - self.save_begin
        periodic = self.interval > 0 and since_begin >= 0 and since_begin % self.interval == 0
        if periodic or (self.save_last and step == last):
            self.last_saved = runner.save_checkpoint((self.filename_tmpl or default_tmpl).format(step))

    def after_val(self, runner: Runner, metrics: dict[str, float]) -> None:
        if not self.keys or not metrics:
            return
        keys = [next(iter(metrics))] if self.keys == ["auto"] else self.keys
        missing = [key for key in keys if key not in metrics]
        if missing:
            raise ConfigError(f"{WHERE}.save_best={missing[0]!r} is not a validation metric; "
                              f"the metrics are: {', '.join(metrics)}")
        unit = f"epoch_{runner.epoch}" if self.by_epoch else f"iter_{runner.iter}"
        for index, key in enumerate(keys):
            score = metrics[key]
            best = self.best_scores.get(key)
            if best is not None and not RULES[self._rule(index, key)](score, best):
                continue
            self.best_scores[key] = score
            runner.logger.info(f"new best {key}: {score:.4f}")
            previous = self.best_paths.get(key)
            path = runner.save_best_checkpoint(f"best_{key.replace('/', '_')}_{unit}.pth",
                                               replaces=Path(previous) if previous else None,
                                               point=index == 0)
            if path is not None:
                self.best_paths[key] = str(path)

    def _rule(self, index: int, key: str) -> str:
        rule = self.rules[index] if len(self.rules) > 1 else self.rules[0]
        if rule is not None:
            return rule
        lowered = key.lower()
        if any(part in lowered for part in self.less_keys):
            return "less"
        if any(part in lowered for part in self.greater_keys):
            return "greater"
        return "less" if LESS_IS_BETTER.search(key) else "greater"

    def after_train(self, runner: Runner) -> None:
        if not self.published_keys or not runner.env.is_main:
            return
        from torchyard.trainer.tools.publish_model import publish_model

        sources = ([self.last_saved] if self.save_last and self.last_saved else [])
        sources += [Path(path) for path in self.best_paths.values()]
        for source in sources:
            published = publish_model(source, source, keys=self.published_keys)
            runner.logger.info(f"published {published} with {', '.join(self.published_keys)}")

    def before_save_checkpoint(self, runner: Runner, state: dict) -> None:
        state["hooks"]["CheckpointHook"] = {"best_scores": dict(self.best_scores),
                                            "best_paths": dict(self.best_paths)}

    def after_load_checkpoint(self, runner: Runner, state: dict) -> None:
        saved = state.get("hooks", {}).get("CheckpointHook", {})
        self.best_scores = dict(saved.get("best_scores") or {})
        self.best_paths = dict(saved.get("best_paths") or {})


def _as_list(value: str | list[str] | tuple[str, ...] | None, key: str) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) or item is None for item in value):
        return list(value)
    raise ConfigError(f"{WHERE}.{key}: must be a string or a list of strings, got {value!r}")
