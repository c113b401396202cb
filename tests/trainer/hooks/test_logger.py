import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from torchyard.trainer.config import Config, ConfigError
from torchyard.trainer.runner import Runner

from ..runner_helpers import make_cfg

TENSORBOARD = dict(type="Visualizer", vis_backends=[dict(type="LocalVisBackend"),
                                                    dict(type="TensorboardVisBackend")])


def test_the_tensorboard_backend_writes_the_training_and_validation_scalars(tmp_path):
    cfg = make_cfg(tmp_path, visualizer=TENSORBOARD, train_cfg=dict(by_epoch=True, max_epochs=2))
    Runner(Config(cfg)).train()

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "val/accuracy/top1"} <= tags
    assert [event.step for event in events.Scalars("val/accuracy/top1")] == [1, 2]  # log_metric_by_epoch


def test_save_dir_and_log_metric_by_epoch_false(tmp_path):
    visualizer = {**TENSORBOARD, "vis_backends": [dict(type="TensorboardVisBackend",
                                                       save_dir=str(tmp_path / "tb"))]}
    cfg = make_cfg(tmp_path / "wd", visualizer=visualizer, train_cfg=dict(by_epoch=True, max_epochs=1),
                   default_hooks=dict(logger=dict(type="LoggerHook", interval=10, log_metric_by_epoch=False)))
    runner = Runner(Config(cfg))
    runner.train()

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [event.step for event in events.Scalars("val/accuracy/top1")] == [runner.iter]


def test_without_the_package_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    cfg = make_cfg(tmp_path, visualizer=TENSORBOARD, train_cfg=dict(by_epoch=True, max_epochs=1))

    expected = r"needs the tensorboard package: pip install 'torchyard\[tensorboard\]'"
    with pytest.raises(ConfigError, match=expected):
        Runner(Config(cfg)).train()
