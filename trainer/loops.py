"""The training loop and the evaluation loop, apart from the runner that builds what they use.

The training loop owns the position (epoch, iteration, iteration within the epoch); the runner and the
hooks read it as runner.epoch and runner.iter, as in mmengine. One training loop serves both
``by_epoch=True`` (``max_epochs``) and ``by_epoch=False`` (``max_iters``): the data loader always runs in
epochs, which is what lets a run resume at any iteration, even mid-epoch.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from torchyard.trainer.config import ConfigError
from torchyard.trainer.data import set_train_position
from torchyard.trainer.evaluation import Evaluator

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from torchyard.trainer.runner import Runner


class TrainingInterrupted(Exception):
    """A stop signal arrived; a checkpoint was saved at the step boundary."""

    def __init__(self, signum: int, checkpoint: str) -> None:
        super().__init__(f"stopped by signal {signum}; resume from {checkpoint}")
        self.signum = signum
        self.checkpoint = checkpoint


class TrainLoop:
    """The training position (`epoch`, `iter`, `inner_iter`: iterations done in the current epoch) and the
    loop that advances it; the runner reads the position from here (runner.epoch is train_loop.epoch)."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.epoch = self.iter = self.inner_iter = 0
        self.stop_training = False  # a hook (EarlyStoppingHook) ends training after this step, as in mmengine

    def run(self) -> None:
        runner = self.runner
        loader = runner.train_dataloader
        optim = runner.optim_wrapper
        runner.model.train()
        runner.stop_if_requested(now=True)  # a stop during the setup ends here, not after the first steps
        while self.iter < runner.max_iters and not self.stop_training:
            set_train_position(loader, self.epoch, self.inner_iter * loader.batch_size)
            runner.call_hook("before_train_epoch")
            data_start = time.perf_counter()
            for batch in loader:
                runner.data_time = time.perf_counter() - data_start
                batch = runner.prepare(batch, training=True)
                with optim.sync_context(runner.model), optim.autocast():
                    losses = runner.model(batch, mode="loss")
                optim.update(total_loss(losses))
                self.iter += 1
                self.inner_iter += 1
                if self.iter >= runner.max_iters:
                    optim.flush()
                for scheduler in runner.iter_schedulers:
                    scheduler.step()
                if not runner.by_epoch and runner.validation_due(self.iter):
                    runner.validate()
                runner.call_hook("after_train_iter", losses=losses)
                if optim.at_boundary and self.inner_iter < runner.iters_per_epoch:
                    runner.stop_if_requested()  # at an epoch's end: after its validation and checkpoint
                if self.stop_training:
                    optim.flush()
                if self.iter >= runner.max_iters or self.stop_training:
                    break
                data_start = time.perf_counter()
            if self.inner_iter >= runner.iters_per_epoch:
                self._end_epoch()

    def _end_epoch(self) -> None:
        runner = self.runner
        if runner.by_epoch:
            # By iteration, accumulation windows run across epochs, so checkpoint intervals that are
            # multiples of accumulative_counts always fall on a window's end.
            runner.optim_wrapper.flush()
        self.epoch += 1
        self.inner_iter = 0
        for scheduler in runner.epoch_schedulers:
            scheduler.step()
        if runner.by_epoch and runner.validation_due(self.epoch):
            runner.validate()
        runner.call_hook("after_train_epoch")
        runner.stop_if_requested()


class LoopCounter:
    """`runner.epoch`, `runner.iter`, `runner.inner_iter`: read from the training loop, which owns them."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, runner: Runner | None, owner: type | None = None) -> int:
        if runner is None:
            return self  # type: ignore[return-value]  (the class attribute itself)
        return getattr(runner.train_loop, self.name)

    def __set__(self, runner: Runner, value: int) -> None:
        raise AttributeError(f"runner.{self.name} is the training loop's: set runner.train_loop.{self.name}")


@torch.no_grad()
def run_eval_loop(runner: Runner, loader: DataLoader, evaluator: Evaluator, mode: str) -> dict[str, float]:
    """Predict every sample of ``loader`` with the unwrapped model and compute ``evaluator``'s metrics.

    ``mode`` is "val" or "test": hooks hear ``after_val_iter`` or ``after_test_iter``."""
    model = runner.unwrapped_model
    was_training = model.training
    model.eval()
    batch = None
    for batch in loader:
        batch = runner.prepare(batch, training=False)
        with runner.autocast():
            outputs = model(batch, mode="predict")
        evaluator.process(batch, outputs)
        runner.call_hook(f"after_{mode}_iter", batch=batch, outputs=outputs)
    if runner.fsdp:
        _match_forward_count(runner, model, len(loader), batch)
    model.train(was_training)
    return evaluator.evaluate(runner.env)


def _match_forward_count(runner: Runner, model: torch.nn.Module, done: int, batch: dict | None) -> None:
    """A sharded model's forward is a collective (it gathers the parameters), and evaluation shards the data
    without padding: a rank with fewer batches runs its last one again, unscored, until all have run as
    many forwards."""
    most = torch.tensor([done], device=runner.device)
    dist.all_reduce(most, op=dist.ReduceOp.MAX)
    if batch is None and int(most.item()):
        raise ConfigError("a sharded model needs a batch of evaluation data on every rank: this rank got "
                          "none; use fewer processes or more evaluation samples")
    for _ in range(int(most.item()) - done):
        with runner.autocast():
            model(batch, mode="predict")


def total_loss(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    """The sum of a model's losses; unlike ``sum()``, it adds no ``0 + loss`` op to every step's graph."""
    total, *rest = losses.values()
    for loss in rest:
        total = total + loss
    return total


def to_device(batch: dict, device: torch.device) -> dict:
    if device.type == "cpu":
        return batch
    return {key: _to_device(value, device) for key, value in batch.items()}


def _to_device(value, device: torch.device):
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, list):  # pseudo_collate's fields
        return [_to_device(item, device) for item in value]
    return value
