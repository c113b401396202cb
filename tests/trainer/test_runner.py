"""Runner: exact resume, load_from, AMP, auto-scaled lr; and, marked e2e, real multi-process DDP runs."""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from torchyard.contract.workdir import last_val_metrics
from torchyard.trainer.config import Config, ConfigError
from torchyard.trainer.loops import TrainingInterrupted
from torchyard.trainer.runner import Runner

from .runner_helpers import (
    BIN,
    SignalAt,
    assert_same_training_state,
    final_state,
    make_cfg,
    run_trainer,
    write_config,
)


def train(cfg: dict) -> Runner:
    runner = Runner(Config(cfg))
    runner.train()
    return runner


@pytest.mark.parametrize(
    ("stop_at", "overrides"),
    [
        pytest.param(17, {}, id="mid-epoch"),
        pytest.param(45, {}, id="epoch-boundary"),
        pytest.param(100, {}, id="mid-last-epoch"),
        pytest.param(33, {"train_cfg": dict(by_epoch=False, max_iters=70, val_interval=25),
                          "default_hooks": dict(checkpoint=dict(type="CheckpointHook", interval=10))},
                     id="iter-based"),
    ],
)
def test_resume_after_a_stop_signal_is_bit_identical(tmp_path, stop_at, overrides):
    train(make_cfg(tmp_path / "straight", **overrides))

    interrupted = make_cfg(tmp_path / "stopped", custom_hooks=[dict(type=SignalAt, at=stop_at)], **overrides)
    with pytest.raises(TrainingInterrupted) as stop:
        train(interrupted)
    assert stop.value.signum == signal.SIGTERM
    assert Path(stop.value.checkpoint).exists()
    assert torch.load(stop.value.checkpoint, weights_only=True)["meta"]["iter"] == stop_at

    train(make_cfg(tmp_path / "stopped", resume=True, **overrides))
    assert_same_training_state(final_state(tmp_path / "straight"), final_state(tmp_path / "stopped"))


def test_resume_with_an_empty_work_dir_starts_fresh_and_says_so(tmp_path, capsys):
    runner = train(make_cfg(tmp_path, resume=True, train_cfg=dict(by_epoch=False, max_iters=5)))
    assert runner.iter == 5
    assert "no checkpoint in" in capsys.readouterr().out


def test_the_training_loop_owns_the_position(tmp_path):
    runner = train(make_cfg(tmp_path, train_cfg=dict(by_epoch=False, max_iters=5)))
    assert (runner.iter, runner.epoch) == (runner.train_loop.iter, runner.train_loop.epoch) == (5, 0)
    with pytest.raises(AttributeError, match=r"train_loop\.iter"):
        runner.iter = 0


def test_checkpoint_carries_config_rng_of_every_rank_and_versions(tmp_path):
    train(make_cfg(tmp_path, train_cfg=dict(by_epoch=True, max_epochs=1)))
    state = final_state(tmp_path)
    assert state["meta"]["torch_version"] == str(torch.__version__)
    assert "DigitsCNN" in state["meta"]["config"]
    assert len(state["rng"]) == 1 and set(state["rng"][0]) >= {"python", "numpy", "torch"}
    assert state["meta"]["inner_iter"] == 0 and state["meta"]["epoch"] == 1
    assert (tmp_path / "best_checkpoint").exists()
    assert Config.fromfile(tmp_path / "config.py").model.type == "DigitsCNN"


def test_checkpoint_hook_out_dir_tmpl_best_metrics_and_published_keys_as_in_mmengine(tmp_path):
    checkpoint = dict(type="CheckpointHook", interval=1, max_keep_ckpts=2, out_dir=str(tmp_path / "scratch"),
                      filename_tmpl="ckpt_{}.pth", save_best=["accuracy/top1", "single-label/recall"],
                      rule="greater",
                      published_keys=["meta", "state_dict"])
    val_evaluator = [dict(type="Accuracy"), dict(type="SingleLabelMetric", items=("recall",))]
    work_dir = tmp_path / "digits"
    cfg = make_cfg(work_dir, default_hooks=dict(checkpoint=checkpoint), val_evaluator=val_evaluator)
    train(cfg)

    saved = tmp_path / "scratch" / "digits"
    names = sorted(path.name for path in saved.glob("*.pth"))
    published = [name for name in names if re.fullmatch(r".+-[0-9a-f]{8}\.pth", name)]
    kept = [name for name in names if name not in published]
    assert [name for name in kept if name.startswith("ckpt_")] == ["ckpt_2.pth", "ckpt_3.pth"]
    bests = [name.split("_epoch_")[0] for name in kept if name.startswith("best_")]
    assert sorted(bests) == ["best_accuracy_top1", "best_single-label_recall"]  # one each
    assert len(published) == 3  # the last and both bests, weights and meta only
    assert set(torch.load(saved / published[0], weights_only=True)) == {"meta", "state_dict"}
    assert not list(work_dir.glob("*.pth"))
    assert Path((work_dir / "last_checkpoint").read_text()) == saved / "ckpt_3.pth"
    assert Path((work_dir / "best_checkpoint").read_text()).name.startswith("best_accuracy_top1_epoch_")

    more = make_cfg(work_dir, resume=True, default_hooks=dict(checkpoint=checkpoint),
                    val_evaluator=val_evaluator, train_cfg=dict(by_epoch=True, max_epochs=4, val_interval=1))
    runner = train(more)
    assert runner.epoch == 4
    assert sorted(p.name for p in saved.glob("ckpt_*.pth") if re.fullmatch(r"ckpt_\d+\.pth", p.name)) == [
        "ckpt_3.pth", "ckpt_4.pth"]
    bests = [p for p in saved.glob("best_single-label_recall_*.pth") if not p.stem[-9:].startswith("-")]
    assert len(bests) == 1


def test_load_from_reports_shape_mismatches_and_rejects_another_model(tmp_path, capsys):
    train(make_cfg(tmp_path / "small", train_cfg=dict(by_epoch=False, max_iters=3)))
    checkpoint = Path((tmp_path / "small" / "last_checkpoint").read_text())

    wider = make_cfg(tmp_path / "wide", model=dict(type="DigitsCNN", channels=16), load_from=str(checkpoint),
                     train_cfg=dict(by_epoch=False, max_iters=1))
    runner = train(wider)
    assert runner.iter == 1  # load_from starts at iteration 0, unlike resume
    assert "features.0.weight: checkpoint (8, 1, 3, 3) vs model (16, 1, 3, 3)" in capsys.readouterr().out

    other = make_cfg(tmp_path / "mlp", model=dict(type="DigitsMLP"), load_from=str(checkpoint))
    with pytest.raises(ConfigError, match=r"none of its .* weights match"):
        train(other)


def test_testing_refuses_a_checkpoint_that_does_not_fit_the_model(tmp_path):
    train(make_cfg(tmp_path / "small", train_cfg=dict(by_epoch=False, max_iters=2)))
    test_cfg = dict(test_dataloader=dict(batch_size=100, dataset=dict(type="DigitsDataset", split="test")),
                    test_evaluator=dict(type="Accuracy"))
    wider = Runner(Config(make_cfg(tmp_path / "wide", model=dict(type="DigitsCNN", channels=16), **test_cfg)),
                   log_name="test.log")
    with pytest.raises(ConfigError, match=r"does not fit the model .* shape mismatch: .*features\.0\.weight"):
        wider.test(tmp_path / "small")


def test_amp_on_cpu_trains_in_bfloat16_without_a_loss_scaler(tmp_path):
    runner = train(make_cfg(tmp_path, amp=True, train_cfg=dict(by_epoch=False, max_iters=20)))
    assert runner.optim_wrapper.amp_dtype == torch.bfloat16
    assert runner.optim_wrapper.scaler is None
    records = [json.loads(line) for line in (tmp_path / "scalars.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records if r["mode"] == "train")


def test_auto_scale_lr_scales_by_total_batch_size(tmp_path, capsys):
    runner = train(make_cfg(tmp_path, auto_scale_lr=dict(enable=True, base_batch_size=128),
                            param_scheduler=None, train_cfg=dict(by_epoch=False, max_iters=1)))
    assert runner.optim_wrapper.get_lr() == pytest.approx(0.05 * 32 / 128)
    assert "auto_scale_lr: total batch size 32 / base 128" in capsys.readouterr().out


def test_test_reports_per_class_metrics_beside_scalar_ones(tmp_path, capsys):
    train(make_cfg(tmp_path, train_cfg=dict(by_epoch=False, max_iters=5)))
    cfg = make_cfg(tmp_path / "test", test_dataloader=dict(batch_size=100, dataset=dict(type="DigitsDataset",
                                                                                       split="test")),
                   test_evaluator=[dict(type="Accuracy"), dict(type="SingleLabelMetric", average=None)])
    metrics = Runner(Config(cfg), log_name="test.log").test(tmp_path)
    assert len(metrics["single-label/precision_classwise"]) == 10
    assert "single-label/recall_classwise: [" in capsys.readouterr().out


def test_scalars_jsonl_has_loss_lr_time_eta_memory_and_val_metrics(tmp_path):
    started = datetime.datetime.now(datetime.UTC)
    train(make_cfg(tmp_path, train_cfg=dict(by_epoch=True, max_epochs=1)))
    records = [json.loads(line) for line in (tmp_path / "scalars.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["mode"] == "train"]
    assert {"loss", "lr", "time", "data_time", "eta_s", "memory_mb"} <= train_records[0].keys()
    assert [r["accuracy/top1"] for r in records if r["mode"] == "val"]
    stamps = [datetime.datetime.fromisoformat(r["timestamp"]) for r in records]  # wall clock, UTC
    assert started <= stamps[0] <= stamps[-1] <= datetime.datetime.now(datetime.UTC)
    assert stamps == sorted(stamps)
    assert "timestamp" not in last_val_metrics(tmp_path)  # not a metric: status.metrics never shows it


# ---- real processes ----------------------------------------------------------------------------------------

@pytest.mark.e2e
def test_ddp_matches_one_process_on_the_same_global_batch(tmp_path, fault_hooks):
    # No dropout, BN or augmentation: those draw per-rank randomness or per-rank statistics by design.
    base = make_cfg(tmp_path, model=dict(type="DigitsMLP", hidden=32), custom_hooks=[dict(type="DumpParams")],
                    train_cfg=dict(by_epoch=True, max_epochs=2), param_scheduler=None)
    base["train_dataloader"]["dataset"]["pipeline"] = []
    one = {**base, "work_dir": str(tmp_path / "one"),
           "train_dataloader": {**base["train_dataloader"], "batch_size": 64}}
    two = {**base, "work_dir": str(tmp_path / "two")}
    for cfg, nproc in ((one, 1), (two, 2)):
        result = run_trainer(tmp_path, write_config(tmp_path / f"cfg{nproc}.py", cfg, fault_hooks),
                             nproc=nproc)
        assert result.returncode == 0, result.stderr[-3000:]

    rank0, rank1 = (torch.load(tmp_path / "two" / f"rank{r}.pt") for r in (0, 1))
    single = torch.load(tmp_path / "one" / "rank0.pt")
    for key in single:
        assert torch.equal(rank0[key], rank1[key]), f"{key} differs between ranks"
        torch.testing.assert_close(rank0[key], single[key], rtol=1e-4, atol=1e-5)
    losses = [[json.loads(x)["loss"] for x in (tmp_path / d / "scalars.jsonl").read_text().splitlines()
               if json.loads(x)["mode"] == "train"][:3] for d in ("one", "two")]
    assert losses[1] == pytest.approx(losses[0], rel=1e-3, abs=1e-4)


@pytest.mark.e2e
@pytest.mark.parametrize("kill_at", [20, 52])
def test_ddp_rank_killed_then_resumed_is_bit_identical(tmp_path, fault_hooks, kill_at):
    cfg = make_cfg(tmp_path / "straight", train_cfg=dict(by_epoch=False, max_iters=60, val_interval=30),
                   default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=8)))
    straight = run_trainer(tmp_path, write_config(tmp_path / "straight.py", cfg, fault_hooks), nproc=2)
    assert straight.returncode == 0, straight.stdout[-3000:] + straight.stderr[-3000:]

    killed_cfg = {**cfg, "work_dir": str(tmp_path / "killed"),
                  "custom_hooks": [dict(type="KillAt", at=kill_at, rank=1)]}
    killed = run_trainer(tmp_path, write_config(tmp_path / "killed.py", killed_cfg, fault_hooks), nproc=2)
    assert killed.returncode != 0
    resumed_cfg = {**cfg, "work_dir": str(tmp_path / "killed")}
    resumed = run_trainer(tmp_path, write_config(tmp_path / "resumed.py", resumed_cfg, fault_hooks),
                          "--resume", nproc=2)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resumed from {tmp_path / 'killed' / f'iter_{kill_at // 8 * 8}.pth'}" in resumed.stdout
    assert_same_training_state(final_state(tmp_path / "straight"), final_state(tmp_path / "killed"))


@pytest.mark.e2e
def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, fault_hooks):
    cfg = make_cfg(tmp_path / "straight", train_cfg=dict(by_epoch=False, max_iters=40),
                   default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=10)))
    assert run_trainer(tmp_path, write_config(tmp_path / "a.py", cfg)).returncode == 0

    crash_cfg = {**cfg, "work_dir": str(tmp_path / "crash"),
                 "custom_hooks": [dict(type="DieWhileSaving", at=30)]}
    crashed = run_trainer(tmp_path, write_config(tmp_path / "b.py", crash_cfg, fault_hooks))
    assert crashed.returncode == -signal.SIGKILL
    assert (tmp_path / "crash" / "last_checkpoint").read_text().endswith("iter_20.pth")
    assert not (tmp_path / "crash" / "iter_30.pth").exists()

    resumed = run_trainer(tmp_path,
                          write_config(tmp_path / "c.py", {**cfg, "work_dir": str(tmp_path / "crash")}),
                          "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "iter_20.pth" in resumed.stdout
    assert_same_training_state(final_state(tmp_path / "straight"), final_state(tmp_path / "crash"))


@pytest.mark.e2e
def test_sigterm_saves_a_checkpoint_and_exits_with_128_plus_signal(tmp_path):
    cfg = make_cfg(tmp_path / "run", train_cfg=dict(by_epoch=False, max_iters=100000),
                   default_hooks=dict(logger=dict(type="LoggerHook", interval=1), checkpoint=None))
    config = write_config(tmp_path / "long.py", cfg)
    process = subprocess.Popen([str(BIN / "torchyard-train"), str(config)], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if "iter 5/" in line:
            break
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped: stopped by signal 15; resume from" in stderr
    assert final_state(tmp_path / "run")["meta"]["iter"] >= 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.py"], "config file .*missing.py does not exist"),
        (["{cfg}", "--cfg-options", "model.type=NoSuchNet"], "'NoSuchNet' is not a registered model"),
        (["{cfg}", "--cfg-options", "train_cfg.max_epochs=[1"], "unbalanced brackets"),
        (["{cfg}", "--cfg-options", "optim_wrapper.optimizer.type=SDG"], "Did you mean 'SGD'"),
        (["{cfg}", "--cfg-options", "train_cfg.max_epochs=0"],
         "train_cfg.max_epochs: must be a positive integer"),
        (["{cfg}", "--launcher", "pytorch"],
         "RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT not set"),
        (["{cfg}", "--resume", "nowhere.pth"], "no checkpoint at"),
    ],
)
def test_cli_errors_are_one_clear_line_with_the_config_error_exit_code(tmp_path, args, message):
    config = write_config(tmp_path / "cfg.py", make_cfg(tmp_path / "wd"))
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    result = subprocess.run([str(BIN / "torchyard-train"), *[a.format(cfg=config) for a in args]],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(message, result.stderr), result.stderr


@pytest.mark.e2e
def test_a_stop_at_an_epoch_end_names_one_checkpoint_the_one_resume_uses(tmp_path, fault_hooks):
    """Only rank 0 saves: another rank must not name the file its stale view of the pointer names."""
    cfg = make_cfg(tmp_path / "run", custom_hooks=[dict(type="TermAtEpochEnd", epoch=2)])
    stopped = run_trainer(tmp_path, write_config(tmp_path / "c.py", cfg, fault_hooks), nproc=2)
    assert stopped.returncode != 0
    named = re.findall(r"stopped by signal 15; resume from (.+)", stopped.stderr)
    assert len(named) == 2, stopped.stderr[-3000:]
    assert named.count(f"the last checkpoint in {tmp_path / 'run'}") == 1, named
    checkpoint = next(name for name in named if name.endswith(".pth"))
    assert Path(checkpoint).name == "epoch_2.pth"
    assert (tmp_path / "run" / "last_checkpoint").read_text() == checkpoint


@pytest.mark.e2e
def test_sigterm_to_one_rank_during_setup_stops_every_rank_cleanly(tmp_path):
    """Slurm's scancel --signal=TERM reaches every process of a step, maybe before training starts."""
    (tmp_path / "term_rank1_on_import.py").write_text(
        "import os, signal\nif os.environ.get('RANK') == '1':\n    os.kill(os.getpid(), signal.SIGTERM)\n")
    config = write_config(tmp_path / "early.py", make_cfg(tmp_path / "run"), "term_rank1_on_import")
    stopped = run_trainer(tmp_path, config, nproc=2)
    assert stopped.returncode != 0
    assert "stopped: stopped by signal 15; resume from" in stopped.stderr, stopped.stderr[-3000:]
    assert "Connection closed by peer" not in stopped.stderr
    assert final_state(tmp_path / "run")["meta"]["iter"] == 0


@pytest.mark.e2e
def test_a_config_error_under_torchrun_is_said_once_not_once_per_rank(tmp_path):
    config = write_config(tmp_path / "cfg.py", make_cfg(tmp_path / "wd", model=dict(type="DigitsCNN",
                                                                                    channels="abc")))
    failed = run_trainer(tmp_path, config, nproc=2)

    assert failed.returncode != 0
    said = re.findall(r"^error: .*$", failed.stderr, re.M)
    assert said == ["error: model.channels: expected int, got 'abc' (str)"], failed.stderr[-3000:]
