import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from torchyard.trainer.config import Config, ConfigError
from torchyard.trainer.runner import Runner

from ..runner_helpers import SignalAt, make_cfg

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


# ---- MLflow ------------------------------------------------------------------------------------------------


def mlflow_cfg(tmp_path, **backend) -> dict:
    visualizer = dict(type="Visualizer", vis_backends=[dict(type="LocalVisBackend"),
                                                       dict(type="MLflowVisBackend", **backend)])
    return make_cfg(tmp_path / "wd", visualizer=visualizer, train_cfg=dict(by_epoch=True, max_epochs=2))


def test_the_mlflow_backend_logs_a_finished_run_to_sqlite_in_the_work_dir(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the trainer started from another directory
    cfg = mlflow_cfg(tmp_path, exp_name="digits", run_name="first", tags={"team": "vision"},
                     params={"note": "smoke"})
    runner = Runner(Config(cfg))
    runner.train()

    client = MlflowClient(f"sqlite:///{tmp_path / 'wd' / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    assert (run.info.run_name, run.info.status, run.data.tags["team"]) == ("first", "FINISHED", "vision")
    assert run.data.params["model.type"] == "DigitsCNN" and run.data.params["note"] == "smoke"
    accuracy = client.get_metric_history(run.info.run_id, "val/accuracy/top1")
    assert [m.step for m in accuracy] == [1, 2]  # by epoch, as in TensorBoard
    assert accuracy[-1].value == pytest.approx(runner.last_metrics["accuracy/top1"])
    losses = client.get_metric_history(run.info.run_id, "train/loss")
    assert losses and losses[-1].step == runner.iter
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "train.log" in artifacts and any(path.endswith(".py") for path in artifacts)  # the merged config
    assert (tmp_path / "wd" / "mlruns").is_dir() and not list((tmp_path / "elsewhere").iterdir())


def test_tracked_config_keys_limit_the_params_and_a_stopped_run_is_killed(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    from torchyard.trainer.loops import TrainingInterrupted

    cfg = mlflow_cfg(tmp_path, tracked_config_keys=["model", "train_cfg.max_epochs"],
                     save_dir=str(tmp_path / "ml"))
    cfg["custom_hooks"] = [dict(type=SignalAt, at=5)]
    with pytest.raises(TrainingInterrupted):
        Runner(Config(cfg)).train()

    client = MlflowClient(f"sqlite:///{tmp_path / 'ml' / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("Default").experiment_id])
    assert set(run.data.params) == {"model.type", "model.channels", "model.dropout", "train_cfg.max_epochs"}
    assert run.info.status == "KILLED"
    assert (tmp_path / "ml" / "mlruns" / "0").is_dir()  # MLflow's Default experiment, beside its database
    assert not (tmp_path / "mlruns").exists()


def test_without_mlflow_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)  # as if mlflow were not installed

    with pytest.raises(ConfigError, match=r"needs the mlflow package: pip install 'torchyard\[mlflow\]'"):
        Runner(Config(mlflow_cfg(tmp_path))).train()


def test_an_unknown_mlflow_argument_is_refused_by_name(tmp_path):
    with pytest.raises(ConfigError, match=r"visualizer.vis_backends\[1\].*unknown.*experiment"):
        Runner(Config(mlflow_cfg(tmp_path, experiment="x"))).train()
