import logging
import math
from types import SimpleNamespace

import pytest

from torchyard.trainer.config import Config, ConfigError
from torchyard.trainer.hooks.early_stopping import EarlyStoppingHook
from torchyard.trainer.runner import Runner

from ..runner_helpers import final_state, make_cfg


def stops_after(hook: EarlyStoppingHook, scores: list[float], monitor: str = "accuracy/top1") -> int | None:
    """The 1-based validation after which the hook stops training, None if it never does."""
    runner = SimpleNamespace(train_loop=SimpleNamespace(stop_training=False), epoch=0, iter=0,
                             logger=logging.getLogger("test_early_stopping"))
    for i, score in enumerate(scores, start=1):
        hook.after_val(runner, {monitor: score})
        if runner.train_loop.stop_training:
            return i
    return None


@pytest.mark.parametrize(("kwargs", "scores", "stop"), [
    (dict(patience=2, min_delta=0.1), [50, 60, 60.05, 60.09, 70], 4),  # +0.05, +0.09: less than min_delta
    (dict(patience=2, min_delta=0.1), [50, 60, 59, 61, 60, 62], None),
    (dict(patience=5, stopping_threshold=90), [50, 91, 92], 2),
    (dict(patience=5), [50, math.nan], 2),
    (dict(patience=5, check_finite=False), [50, math.nan], None),
])
def test_when_training_stops(kwargs: dict, scores: list[float], stop: int | None) -> None:
    assert stops_after(EarlyStoppingHook(monitor="accuracy/top1", **kwargs), scores) == stop


def test_a_loss_is_better_when_smaller() -> None:
    hook = EarlyStoppingHook(monitor="loss", patience=1, min_delta=0.5)

    assert hook.rule == "less"
    assert stops_after(hook, [3.0, 2.0, 1.8], monitor="loss") == 3


def test_a_metric_of_unknown_direction_needs_a_rule() -> None:
    with pytest.raises(ConfigError, match="cannot tell whether 'fancy' is better greater or less"):
        EarlyStoppingHook(monitor="fancy")


def test_strict_refuses_a_missing_metric() -> None:
    with pytest.raises(ConfigError, match="monitor='miou' is not a validation metric"):
        stops_after(EarlyStoppingHook(monitor="miou", strict=True), [1.0], monitor="other")


def test_training_ends_early_and_says_why(tmp_path) -> None:
    cfg = make_cfg(tmp_path, custom_hooks=[dict(type="EarlyStoppingHook", monitor="accuracy/top1", patience=1,
                                                min_delta=1000)],
                   train_cfg=dict(by_epoch=True, max_epochs=3))
    runner = Runner(Config(cfg))
    runner.train()

    assert runner.epoch == 2 and runner.train_loop.stop_training
    log = (tmp_path / "train.log").read_text()
    assert "did not improve by more than 1000 in the last 1 validations" in log
    assert final_state(tmp_path)["hooks"]["EarlyStoppingHook"]["wait_count"] == 1
