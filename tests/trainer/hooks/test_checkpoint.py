import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from torchyard.trainer.config import ConfigError
from torchyard.trainer.hooks.checkpoint import CheckpointHook
from torchyard.trainer.registry import HOOKS

WORK_DIR = Path("/runs/digits")


class FakeRunner(SimpleNamespace):
    """The attributes CheckpointHook reads; saving records the file name and the state the hooks wrote."""

    def __init__(self, hook: CheckpointHook, by_epoch: bool = True, max_epochs: int = 5, max_iters: int = 50,
                 accumulative_counts: int = 1) -> None:
        super().__init__(
            hook=hook, by_epoch=by_epoch, epoch=0, iter=0, max_epochs=max_epochs, max_iters=max_iters,
            checkpoints=SimpleNamespace(max_keep_ckpts=None, work_dir=WORK_DIR, checkpoint_dir=WORK_DIR,
                                        rotated_names=[]),
            optim_wrapper=SimpleNamespace(accumulative_counts=accumulative_counts),
            logger=logging.getLogger("test_checkpoint_hook"), saved=[], saved_best=[], replaced=[],
        )

    def _state(self) -> dict:
        state = {"hooks": {}}
        self.hook.before_save_checkpoint(self, state)
        return state

    def save_checkpoint(self, filename: str) -> Path:
        self.saved.append((filename, self._state()))
        return self.checkpoints.checkpoint_dir / filename

    def save_best_checkpoint(self, filename: str, replaces: Path | None = None, point: bool = True) -> Path:
        self.saved_best.append((filename, self._state()))
        self.replaced.append((filename, replaces and replaces.name, point))
        return self.checkpoints.checkpoint_dir / filename


def started(hook: CheckpointHook, **kwargs) -> FakeRunner:
    runner = FakeRunner(hook, **kwargs)
    hook.configure(runner.checkpoints, WORK_DIR)
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


def test_configure_hands_max_keep_ckpts_to_the_checkpoint_manager() -> None:
    runner = started(CheckpointHook(max_keep_ckpts=3))

    assert runner.checkpoints.max_keep_ckpts == 3


def test_built_from_config_by_name() -> None:
    cfg = {"type": "CheckpointHook", "interval": 2, "save_best": "auto"}

    hook = HOOKS.build(cfg, where="default_hooks.checkpoint")

    assert isinstance(hook, CheckpointHook) and (hook.interval, hook.keys) == (2, ["auto"])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"interval": 0}, r"interval must be >= 1 \(or -1: only the last checkpoint\), got 0"),
    ({"rule": "bigger"}, "rule must be one of greater, less, got 'bigger'"),
    ({"save_best": ["auto", "loss"]}, "'auto' cannot be combined with other metrics"),
    ({"save_best": ["loss", "loss"]}, "a metric is named twice"),
    ({"save_best": ["a", "b", "c"], "rule": ["less", "greater"]}, "2 rules for 3 save_best metrics"),
    ({"save_best": 3}, "save_best: must be a string or a list of strings, got 3"),
    ({"filename_tmpl": "ckpt.pth"}, r"filename_tmpl: 'ckpt.pth' must be a file name with one '\{\}'"),
    ({"filename_tmpl": "sub/{}.pth"}, "filename_tmpl: 'sub/{}.pth' must be a file name"),
    ({"save_begin": -1}, "save_begin must be >= 0"),
    ({"save_optimizer": False}, "always hold them, so that --resume continues exactly; .*published_keys"),
    ({"backend_args": {"backend": "petrel"}}, "backend_args/file_client_args: checkpoints go to a file"),
    ({"published_keys": ["meta", "message_hub"]}, r"published_keys: \['message_hub'\] are not in"),
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
    assert hook.best_scores == {"accuracy/top1": 60.0}


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
    assert hook.best_scores == {key: 2.0}


def test_explicit_rule_overrides_the_inferred_one() -> None:
    hook = CheckpointHook(save_best="val/loss", rule="greater")
    runner = started(hook)

    validate(runner, [{"val/loss": 3.0}, {"val/loss": 4.0}])

    assert hook.best_scores == {"val/loss": 4.0}


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

    scores = [state["hooks"]["CheckpointHook"]["best_scores"] for _, state in runner.saved_best]
    assert scores == [{"accuracy/top1": 50.0}, {"accuracy/top1": 70.0}]


def test_best_score_survives_a_resume() -> None:
    before = CheckpointHook(save_best="auto")
    runner = started(before)
    validate(runner, [{"accuracy/top1": 70.0}])
    runner.save_checkpoint("epoch_1.pth")
    (_, state), = runner.saved

    after = CheckpointHook(save_best="auto")
    resumed = started(after)
    after.after_load_checkpoint(resumed, state)

    assert after.best_scores == {"accuracy/top1": 70.0}
    assert validate(resumed, [{"accuracy/top1": 60.0}]) == []  # not better than before the resume
    assert validate(resumed, [{"accuracy/top1": 60.0}, {"accuracy/top1": 80.0}]) == [
        "best_accuracy_top1_epoch_2.pth"]


def test_loading_a_checkpoint_without_hook_state_resets_best_score() -> None:
    hook = CheckpointHook(save_best="auto")
    hook.best_scores = {"accuracy/top1": 5.0}

    hook.after_load_checkpoint(started(hook), {"meta": {}})

    assert hook.best_scores == {}


# ---- mmengine's other arguments ----------------------------------------------------------------------


def test_filename_tmpl_names_the_periodic_checkpoints_and_joins_the_rotation() -> None:
    runner = started(CheckpointHook(interval=2, filename_tmpl="ckpt_{}.bin"), max_epochs=4)

    assert run_epochs(runner) == ["ckpt_2.bin", "ckpt_4.bin"]
    (pattern,) = runner.checkpoints.rotated_names
    assert pattern.fullmatch("ckpt_12.bin") and not pattern.fullmatch("ckpt_12.bin.sha256")


def test_save_begin_starts_the_interval_there_as_mmengine_does() -> None:
    runner = started(CheckpointHook(interval=2, save_begin=5), max_epochs=10)

    assert run_epochs(runner) == ["epoch_5.pth", "epoch_7.pth", "epoch_9.pth", "epoch_10.pth"]


def test_interval_minus_one_saves_only_the_last() -> None:
    runner = started(CheckpointHook(interval=-1), by_epoch=False, max_iters=10)

    assert run_iters(runner) == ["iter_10.pth"]


def test_out_dir_holds_the_checkpoints_under_the_work_dirs_name() -> None:
    runner = started(CheckpointHook(out_dir="/scratch/ckpts"))

    assert runner.checkpoints.checkpoint_dir == Path("/scratch/ckpts/digits")
    assert runner.checkpoints.work_dir == WORK_DIR  # the pointer files stay where --resume looks
    assert started(CheckpointHook(out_dir=str(WORK_DIR))).checkpoints.checkpoint_dir == WORK_DIR


def test_several_metrics_keep_a_best_checkpoint_each_and_the_first_moves_the_pointer() -> None:
    hook = CheckpointHook(save_best=["accuracy/top1", "loss"])
    runner = started(hook)

    validate(runner, [{"accuracy/top1": 50.0, "loss": 2.0},
                      {"accuracy/top1": 60.0, "loss": 3.0},
                      {"accuracy/top1": 55.0, "loss": 1.0}])

    assert runner.replaced == [("best_accuracy_top1_epoch_1.pth", None, True),
                               ("best_loss_epoch_1.pth", None, False),
                               ("best_accuracy_top1_epoch_2.pth", "best_accuracy_top1_epoch_1.pth", True),
                               ("best_loss_epoch_3.pth", "best_loss_epoch_1.pth", False)]
    assert hook.best_scores == {"accuracy/top1": 60.0, "loss": 1.0}


def test_a_rule_per_metric_and_greater_or_less_keys() -> None:
    per_metric = CheckpointHook(save_best=["psnr", "lpips"], rule=["greater", "less"])
    by_keys = CheckpointHook(save_best=["psnr", "error_rate"], greater_keys=["error"], less_keys="psnr")

    assert [per_metric._rule(i, key) for i, key in enumerate(per_metric.keys)] == ["greater", "less"]
    assert [by_keys._rule(i, key) for i, key in enumerate(by_keys.keys)] == ["less", "greater"]


def test_best_paths_survive_a_resume_so_the_old_best_is_replaced() -> None:
    before = CheckpointHook(save_best=["accuracy/top1", "loss"])
    runner = started(before)
    validate(runner, [{"accuracy/top1": 50.0, "loss": 2.0}])
    runner.save_checkpoint("epoch_1.pth")
    (_, state), = runner.saved

    after = CheckpointHook(save_best=["accuracy/top1", "loss"])
    resumed = started(after)
    after.after_load_checkpoint(resumed, state)
    resumed.epoch = resumed.iter = 2
    after.after_val(resumed, metrics={"accuracy/top1": 40.0, "loss": 1.0})

    assert resumed.replaced == [("best_loss_epoch_2.pth", "best_loss_epoch_1.pth", False)]
