"""Every key of mmengine's runtime sections is honoured, refused by name, or tolerated with a warning."""

from __future__ import annotations

import pytest

import torchyard.trainer.runner  # noqa: F401 - registers the built-in hooks, as a run does
from torchyard.trainer import runtime
from torchyard.trainer.config import ConfigError
from torchyard.trainer.data import _check_loader_keys
from torchyard.trainer.hooks import build_hooks
from torchyard.trainer.runtime import EnvCfg, Randomness

MMPRETRAIN_ENV = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
                      dist_cfg=dict(backend="nccl"))


def test_top_level_keys_torchyard_lacks_the_feature_for_are_refused_by_name() -> None:
    for key, value in [("compile", True),
                       ("strategy", dict(type="DeepSpeedStrategy")),
                       ("cfg", dict(a=1))]:
        with pytest.raises(ConfigError, match=rf"^{key}: not supported: "):
            runtime.check_top_level({key: value})


def test_keys_mmengine_uses_only_for_features_torchyard_lacks_are_tolerated_with_a_warning() -> None:
    cfg = dict(tta_model=dict(type="SegTTAModel"), experiment_name="x", default_scope="mmseg",
               data_root="data/ade", crop_size=(512, 512))
    warnings = runtime.check_top_level(cfg)

    assert [warning.split(":")[0] for warning in warnings] == ["tta_model", "experiment_name"]


@pytest.mark.parametrize(("train_cfg", "by_epoch"), [
    ({}, True), ({"by_epoch": False, "max_iters": 5}, False), ({"type": "IterBasedTrainLoop"}, False),
    ({"type": "EpochBasedTrainLoop", "max_epochs": 3, "val_begin": 2, "val_interval": 1}, True),
])
def test_train_loops_by_type_or_by_epoch(train_cfg: dict, by_epoch: bool) -> None:
    assert runtime.train_loop_by_epoch(train_cfg) is by_epoch


@pytest.mark.parametrize(("train_cfg", "message"), [
    ({"type": "DynamicTrainLoop"}, r"train_cfg.type: 'DynamicTrainLoop' is not a training loop here"),
    ({"type": "IterBasedTrainLoop", "by_epoch": True}, "disagree"),
    ({"dynamic_intervals": [(5, 1)]}, r"train_cfg: unknown key\(s\) dynamic_intervals"),
])
def test_bad_train_loops_are_refused_by_name(train_cfg: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        runtime.train_loop_by_epoch(train_cfg)


def test_eval_loops() -> None:
    runtime.check_eval_loop({"val_cfg": {"type": "ValLoop"}, "test_cfg": {}}, "val_cfg")
    runtime.check_eval_loop({"test_cfg": {"type": "TestLoop", "fp16": False}}, "test_cfg")
    with pytest.raises(ConfigError, match=r"val_cfg.fp16: not supported; --amp"):
        runtime.check_eval_loop({"val_cfg": {"type": "ValLoop", "fp16": True}}, "val_cfg")
    with pytest.raises(ConfigError, match=r"test_cfg.type: 'ValLoop' is not supported; use 'TestLoop'"):
        runtime.check_eval_loop({"test_cfg": {"type": "ValLoop"}}, "test_cfg")


def test_randomness_and_env_cfg() -> None:
    assert runtime.randomness({}) == Randomness(seed=0)
    assert runtime.randomness({"randomness": dict(seed=None, diff_rank_seed=True, deterministic=True)}) == \
        Randomness(seed=None, deterministic=True, diff_rank_seed=True)
    assert runtime.env_cfg({"env_cfg": MMPRETRAIN_ENV}) == EnvCfg(False, "fork", "nccl")
    for cfg, message in [
        ({"randomness": dict(seed="7")}, "randomness.seed: must be an integer or None"),
        ({"randomness": dict(seed=1, cudnn=True)}, r"randomness: unknown key\(s\) cudnn"),
        ({"env_cfg": dict(dist_cfg=dict(backend="hccl"))}, "'hccl' is not a torch.distributed"),
        ({"env_cfg": dict(mp_cfg=dict(workers=2))}, r"env_cfg.mp_cfg: unknown key\(s\) workers"),
    ]:
        with pytest.raises(ConfigError, match=message):
            runtime.randomness(cfg) if "randomness" in cfg else runtime.env_cfg(cfg)


def test_visualizer_backends() -> None:
    assert runtime.vis_backends({}) == {"local": {}}
    backends = [dict(type="LocalVisBackend"), dict(type="TensorboardVisBackend")]
    tensorboard = dict(type="Visualizer", vis_backends=backends, name="visualizer")
    assert runtime.vis_backends({"visualizer": tensorboard}) == {"local": {}, "tensorboard": {}}
    tensorboard["vis_backends"][1]["save_dir"] = "runs/tb"
    assert runtime.vis_backends({"visualizer": tensorboard})["tensorboard"] == {"save_dir": "runs/tb"}
    mlflow = dict(type="Visualizer", save_dir="runs",
                  vis_backends=[dict(type="MLflowVisBackend", exp_name="x")])
    assert runtime.vis_backends({"visualizer": mlflow}) == {"mlflow": {"exp_name": "x", "save_dir": "runs"}}
    wandb = dict(type="Visualizer", vis_backends=[dict(type="WandbVisBackend")])
    with pytest.raises(ConfigError, match=r"vis_backends\[0\]: .*WandbVisBackend.* is not supported"):
        runtime.vis_backends({"visualizer": wandb})


def test_log_processor() -> None:
    assert runtime.check_log_processor({"log_processor": dict(window_size=10, by_epoch=False)}, 10) == []
    (warning,) = runtime.check_log_processor({"log_processor": dict(by_epoch=True)}, 50)
    assert warning.startswith("log_processor.window_size=10: logged values are means over each logging")
    with pytest.raises(ConfigError, match=r"log_processor\.custom_cfg: not supported"):
        runtime.check_log_processor({"log_processor": dict(custom_cfg=[dict(data_src="loss")])}, 10)


def test_openmmlab_default_hooks_build() -> None:
    hooks = build_hooks(dict(timer=dict(type="IterTimerHook"),
                             logger=dict(type="LoggerHook", interval=50, log_metric_by_epoch=False),
                             param_scheduler=dict(type="ParamSchedulerHook"),
                             checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=2000),
                             sampler_seed=dict(type="DistSamplerSeedHook"),
                             visualization=dict(type="VisualizationHook", enable=False),
                             seg_visualization=dict(type="SegVisualizationHook")), None)

    assert len(hooks) == 7
    with pytest.raises(ConfigError, match=r"wrong arguments for CheckpointHook: .*'save_latest'"):
        build_hooks(dict(checkpoint=dict(type="CheckpointHook", save_latest=True)), None)  # mmcv 1.x's
    with pytest.raises(ConfigError, match=r"SegVisualizationHook: draw=True/show=True is not supported"):
        build_hooks(dict(visualization=dict(type="SegVisualizationHook", draw=True)), None)


@pytest.mark.parametrize(("loader", "message"), [
    ({"sampler": dict(type="InfiniteSampler", shuffle=True)}, None),
    ({"sampler": dict(type="DefaultSampler", shuffle=False, round_up=True)}, None),
    ({"collate_fn": dict(type="default_collate")}, None),
    ({"sampler": dict(type="RepeatAugSampler")},
     r"train_dataloader.sampler: .*RepeatAugSampler.* not supported"),
    ({"sampler": dict(type="DefaultSampler", round_up=False)}, "round_up: only True is supported"),
    ({"sampler": dict(shuffle=True, seed=3)}, "sampler.seed: set randomness.seed instead"),
    ({"collate_fn": dict(type="pseudo_collate")}, None),
    ({"collate_fn": dict(type="pseudo_collate", pad=0)}, "collate_fn: .*pseudo_collate.* is not supported"),
    ({"collate_fn": dict(type="mmpretrain_collate")}, "collate_fn: .* use dict.type='default_collate'"),
    ({"prefetch": 2}, r"train_dataloader: unknown key\(s\) prefetch"),
])
def test_dataloader_keys(loader: dict, message: str | None) -> None:
    cfg = {"batch_size": 4, "dataset": dict(type="DigitsDataset"), **loader}
    if message is None:
        _check_loader_keys(cfg, "train_dataloader")
    else:
        with pytest.raises(ConfigError, match=message):
            _check_loader_keys(cfg, "train_dataloader")


def test_model_wrapper_cfg_gives_ddp_its_arguments() -> None:
    wrapper = dict(type="MMDistributedDataParallel", find_unused_parameters=True, broadcast_buffers=False)

    assert runtime.ddp_kwargs({"model_wrapper_cfg": wrapper}) == {"find_unused_parameters": True,
                                                                  "broadcast_buffers": False}
    assert runtime.ddp_kwargs({}) == {}
    with pytest.raises(ConfigError, match=r"model_wrapper_cfg.type: 'MMSeparateDistributedDataParallel'"):
        runtime.ddp_kwargs({"model_wrapper_cfg": dict(type="MMSeparateDistributedDataParallel")})
    with pytest.raises(ConfigError, match=r"model_wrapper_cfg: unknown key\(s\) device_ids"):
        runtime.ddp_kwargs({"model_wrapper_cfg": dict(device_ids=[0])})

