import logging
from types import SimpleNamespace

import pytest

from torchyard.trainer.config import ConfigError
from torchyard.trainer.hooks.checkpoint import CheckpointHook
from torchyard.trainer.registry import HOOKS


class FakeRunner(SimpleNamespace):
    """The attributes CheckpointHook reads; saving records the file name and the state the hooks wrote."""

    def __init__(self, hook: CheckpointHook, by_epoch: bool = True, max_epochs: int = 5, max_iters: int = 50,
                 accumulative_counts: int = 1) -> None:
        super().__init__(
            hook=hook, by_epoch=by_epoch, epoch=0, iter=0, max_epochs=max_epochs, max_iters=max_iters,
            checkpoints=SimpleNamespace(max_keep_ckpts=None),
            optim_wrapper=SimpleNamespace(accumulative_counts=accumulative_counts),
            logger=logging.getLogger("test_checkpoint_hook"), saved=[], saved_best=[],
        )

    def _state(self) -> dict:
        state = {"hooks": {}}
        self.hook.before_save_checkpoint(self, state)
        return state

    def save_checkpoint(self, filename: str) -> None:
        self.saved.append((filename, self._state()))

    def save_best_checkpoint(self, filename: str) -> None:
        self.saved_best.append((filename, self._state()))


def started(hook: CheckpointHook, **kwargs) -> FakeRunner:
    runner = FakeRunner(hook, **kwargs)
    hook.before_train(runner)
    return runner


def run_epochs(runner: FakeRunner) -> list[str]:
    for epoch in range(1, runner.max_epochs + 1):
        runner.epoch = epoch
        runner.hook.after_train_iter(runner, losses={})
        runner.hook.after_train_epoch(runner)
    return [name for name, _ in runner.saved]


def run_iters(runner: FakeRunner, iters_per_epoch: int = 4) -> list[str]:
    for it in range(1, runner.max_iters + 1):
        runner.iter = it
        runner.hook.after_train_iter(runner, losses={})
        if it % iters_per_epoch == 0:
            runner.epoch += 1
            runner.hook.after_train_epoch(runner)
    return [name for name, _ in runner.saved]


def validate(runner: FakeRunner, scores: list[dict[str, float]]) -> list[str]:
    """Validate after epochs 1, 2, ... with the given metrics; the best checkpoints written."""
    for epoch, metrics in enumerate(scores, start=1):
        runner.epoch = runner.iter = epoch
        runner.hook.after_val(runner, metrics=metrics)
    return [name for name, _ in runner.saved_best]


# ---- periodic checkpoints ----------------------------------------------------------------------------


def test_by_epoch_saves_every_interval_and_the_last_epoch() -> None:
    runner = started(CheckpointHook(interval=3), max_epochs=7)

    assert run_epochs(runner) == ["epoch_3.pth", "epoch_6.pth", "epoch_7.pth"]


def test_by_epoch_without_save_last_saves_only_every_interval() -> None:
    runner = started(CheckpointHook(interval=3, save_last=False), max_epochs=7)

    assert run_epochs(runner) == ["epoch_3.pth", "epoch_6.pth"]


def test_last_epoch_on_the_interval_is_saved_once() -> None:
    runner = started(CheckpointHook(interval=2), max_epochs=4)

    assert run_epochs(runner) == ["epoch_2.pth", "epoch_4.pth"]


def test_by_iter_saves_every_interval_and_the_last_iteration() -> None:
    runner = started(CheckpointHook(interval=4), by_epoch=False, max_iters=10)

    assert run_iters(runner, iters_per_epoch=3) == ["iter_4.pth", "iter_8.pth", "iter_10.pth"]


def test_by_iter_without_save_last() -> None:
    runner = started(CheckpointHook(interval=4, save_last=False), by_epoch=False, max_iters=10)

    assert run_iters(runner, iters_per_epoch=3) == ["iter_4.pth", "iter_8.pth"]


def test_by_epoch_follows_the_runner_unless_set() -> None:
    follows = CheckpointHook(interval=2)
    by_iter = CheckpointHook(interval=2, by_epoch=False)

    started(follows, by_epoch=False, max_iters=4)
    runner = started(by_iter, by_epoch=True, max_epochs=2, max_iters=4)

    assert follows.by_epoch is False
    assert run_iters(runner, iters_per_epoch=2) == ["iter_2.pth", "iter_4.pth"]


def test_before_train_hands_max_keep_ckpts_to_the_checkpoint_manager() -> None:
    runner = started(CheckpointHook(max_keep_ckpts=3))

    assert runner.checkpoints.max_keep_ckpts == 3


def test_built_from_config_by_name() -> None:
    cfg = {"type": "CheckpointHook", "interval": 2, "save_best": "auto"}

    hook = HOOKS.build(cfg, where="default_hooks.checkpoint")

    assert isinstance(hook, CheckpointHook) and (hook.interval, hook.save_best) == (2, "auto")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"interval": 0}, "interval must be >= 1, got 0"),
    ({"rule": "bigger"}, "rule must be one of greater, less, got 'bigger'"),
])
def test_invalid_arguments_are_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CheckpointHook(**kwargs)


def test_iter_interval_not_a_multiple_of_accumulative_counts_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"interval=6 iterations must be a multiple of "
                                          r"optim_wrapper\.accumulative_counts=4"):
        started(CheckpointHook(interval=6), by_epoch=False, accumulative_counts=4)


def test_iter_interval_that_is_a_multiple_of_accumulative_counts_is_fine() -> None:
    runner = started(CheckpointHook(interval=8), by_epoch=False, max_iters=16, accumulative_counts=4)

    assert run_iters(runner) == ["iter_8.pth", "iter_16.pth"]


def test_epoch_interval_is_not_checked_against_accumulative_counts() -> None:
    runner = started(CheckpointHook(interval=3), by_epoch=True, accumulative_counts=4)

    assert run_epochs(runner) == ["epoch_3.pth", "epoch_5.pth"]  # an epoch's end flushes the window


# ---- best checkpoint ---------------------------------------------------------------------------------


def test_save_best_auto_uses_the_first_metric_and_greater_is_better() -> None:
    hook = CheckpointHook(save_best="auto")
    runner = started(hook)

    best = validate(runner, [{"accuracy/top1": 50.0, "accuracy/top5": 90.0},
                             {"accuracy/top1": 40.0, "accuracy/top5": 95.0},
                             {"accuracy/top1": 60.0, "accuracy/top5": 80.0}])

    assert best == ["best_accuracy_top1_epoch_1.pth", "best_accuracy_top1_epoch_3.pth"]
    assert hook.best_score == 60.0


def test_an_equal_score_is_not_a_new_best() -> None:
    runner = started(CheckpointHook(save_best="accuracy/top1"))

    best = validate(runner, [{"accuracy/top1": 50.0}, {"accuracy/top1": 50.0}])

    assert best == ["best_accuracy_top1_epoch_1.pth"]


@pytest.mark.parametrize("key", ["loss", "val/loss_cls", "FID-Full-50k/fid", "fid50k", "mse"])
def test_rule_is_less_for_loss_and_fid_like_keys(key: str) -> None:
    hook = CheckpointHook(save_best=key)
    runner = started(hook)

    best = validate(runner, [{key: 3.0}, {key: 4.0}, {key: 2.0}])

    assert [name.rsplit("_", 2)[-2:] for name in best] == [["epoch", "1.pth"], ["epoch", "3.pth"]]
    assert hook.best_score == 2.0


def test_explicit_rule_overrides_the_inferred_one() -> None:
    hook = CheckpointHook(save_best="val/loss", rule="greater")
    runner = started(hook)

    validate(runner, [{"val/loss": 3.0}, {"val/loss": 4.0}])

    assert hook.best_score == 4.0


def test_best_by_iteration_is_named_by_iteration() -> None:
    runner = started(CheckpointHook(save_best="accuracy/top1"), by_epoch=False)
    runner.iter = 30

    runner.hook.after_val(runner, metrics={"accuracy/top1": 1.0})

    assert [name for name, _ in runner.saved_best] == ["best_accuracy_top1_iter_30.pth"]


def test_save_best_key_not_in_metrics_lists_the_metrics() -> None:
    runner = started(CheckpointHook(save_best="acc/top1"))

    with pytest.raises(ConfigError, match=r"save_best='acc/top1' is not a validation metric; "
                                          r"the metrics are: accuracy/top1, accuracy/top5"):
        validate(runner, [{"accuracy/top1": 1.0, "accuracy/top5": 2.0}])


def test_without_save_best_or_without_metrics_nothing_is_saved() -> None:
    runner = started(CheckpointHook())
    assert validate(runner, [{"accuracy/top1": 1.0}]) == []

    runner = started(CheckpointHook(save_best="auto"))
    assert validate(runner, [{}]) == []


def test_the_best_checkpoint_carries_its_own_score() -> None:
    runner = started(CheckpointHook(save_best="auto"))

    validate(runner, [{"accuracy/top1": 50.0}, {"accuracy/top1": 70.0}])

    assert [state["hooks"]["CheckpointHook"]["best_score"] for _, state in runner.saved_best] == [50.0, 70.0]


def test_best_score_survives_a_resume() -> None:
    before = CheckpointHook(save_best="auto")
    runner = started(before)
    validate(runner, [{"accuracy/top1": 70.0}])
    runner.save_checkpoint("epoch_1.pth")
    (_, state), = runner.saved

    after = CheckpointHook(save_best="auto")
    resumed = started(after)
    after.after_load_checkpoint(resumed, state)

    assert after.best_score == 70.0
    assert validate(resumed, [{"accuracy/top1": 60.0}]) == []  # not better than before the resume
    assert validate(resumed, [{"accuracy/top1": 60.0}, {"accuracy/top1": 80.0}]) == [
        "best_accuracy_top1_epoch_2.pth"]


def test_loading_a_checkpoint_without_hook_state_resets_best_score() -> None:
    hook = CheckpointHook(save_best="auto")
    hook.best_score = 5.0

    hook.after_load_checkpoint(started(hook), {"meta": {}})

    assert hook.best_score is None
