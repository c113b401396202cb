"""The training loop and the evaluation loop, apart from the runner that builds what they use.

One training loop serves both ``by_epoch=True`` (``max_epochs``) and ``by_epoch=False`` (``max_iters``):
the data loader always runs in epochs, which is what lets a run resume at any iteration, even mid-epoch.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

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


def run_train_loop(runner: Runner) -> None:
    loader = runner.train_dataloader
    optim = runner.optim_wrapper
    runner.model.train()
    runner.stop_if_requested(now=True)  # a stop during the setup ends here, not after the first steps
    while runner.iter < runner.max_iters:
        set_train_position(loader, runner.epoch, runner.inner_iter * loader.batch_size)
        runner.call_hook("before_train_epoch")
        data_start = time.perf_counter()
        for batch in loader:
            runner.data_time = time.perf_counter() - data_start
            batch = to_device(batch, runner.device)
            with optim.sync_context(runner.model), optim.autocast():
                losses = runner.model(batch, mode="loss")
            optim.update(total_loss(losses))
            runner.iter += 1
            runner.inner_iter += 1
            if runner.iter >= runner.max_iters:
                optim.flush()
            for scheduler in runner.iter_schedulers:
                scheduler.step(runner.iter - 1)
            if not runner.by_epoch and runner.validation_due(runner.iter):
                runner.validate()
            runner.call_hook("after_train_iter", losses=losses)
            if optim.at_boundary and runner.inner_iter < runner.iters_per_epoch:
                runner.stop_if_requested()  # at an epoch's end, after its validation and checkpoint instead
            if runner.iter >= runner.max_iters:
                break
            data_start = time.perf_counter()
        if runner.inner_iter >= runner.iters_per_epoch:
            if runner.by_epoch:
                # By iteration, accumulation windows run across epochs, so checkpoint intervals that are
                # multiples of accumulative_counts always fall on a window's end.
                optim.flush()
            runner.epoch += 1
            runner.inner_iter = 0
            for scheduler in runner.epoch_schedulers:
                scheduler.step(runner.epoch - 1)
            if runner.by_epoch and runner.validation_due(runner.epoch):
                runner.validate()
            runner.call_hook("after_train_epoch")
            runner.stop_if_requested()


@torch.no_grad()
def run_eval_loop(runner: Runner, loader: DataLoader, evaluator: Evaluator, mode: str) -> dict[str, float]:
    """Predict every sample of ``loader`` with the unwrapped model and compute ``evaluator``'s metrics.

    ``mode`` is "val" or "test": hooks hear ``after_val_iter`` or ``after_test_iter``."""
    model = runner.unwrapped_model
    was_training = model.training
    model.eval()
    for batch in loader:
        batch = to_device(batch, runner.device)
        with runner.autocast():
            outputs = model(batch, mode="predict")
        evaluator.process(batch, outputs)
        runner.call_hook(f"after_{mode}_iter", batch=batch, outputs=outputs)
    model.train(was_training)
    return evaluator.evaluate(runner.env)


def total_loss(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    """The sum of a model's losses; unlike ``sum()``, it adds no ``0 + loss`` op to every step's graph."""
    total, *rest = losses.values()
    for loss in rest:
        total = total + loss
    return total


def to_device(batch: dict, device: torch.device) -> dict:
    if device.type == "cpu":
        return batch
    return {key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
            for key, value in batch.items()}
