"""Where LoggerHook's scalars go besides the log and scalars.jsonl: ``visualizer.vis_backends`` by
mmengine's names. Rank 0 writes; each backend's package is an extra, and a missing one is a one-line error.

    visualizer = dict(type="Visualizer", vis_backends=[
        dict(type="LocalVisBackend"),
        dict(type="TensorboardVisBackend"),                      # pip install 'torchyard[tensorboard]'
        dict(type="MLflowVisBackend", exp_name="digits"),        # pip install 'torchyard[mlflow]'
    ])

MLflow needs no server: by default the run goes to ``<work dir>/mlflow.db`` (SQLite) with its artifacts in
``<work dir>/mlruns`` (``mlflow ui --backend-store-uri sqlite:///work_dirs/x/mlflow.db`` shows it);
``tracking_uri`` names a tracking server instead.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any, Protocol

from torchyard.trainer.config import ConfigError

MLFLOW_ARTIFACT_SUFFIXES = (".json", ".log", ".py", "yaml")  # mmengine's default artifact_suffix
# MLflow's limits: a param's value, and how many params or metrics one request may carry.
MLFLOW_PARAM_CHARS = 6000
MLFLOW_BATCH = 100


class ScalarSink(Protocol):
    def write(self, mode: str, scalars: dict[str, float], step: int) -> None: ...
    def close(self, status: str) -> None: ...


class TensorboardSink:
    def __init__(self, log_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("TensorBoard logging (visualizer's TensorboardVisBackend) needs the "
                              "tensorboard package: pip install 'torchyard[tensorboard]'") from None
        self.writer = SummaryWriter(str(log_dir))

    def write(self, mode: str, scalars: dict[str, float], step: int) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(f"{mode}/{key}", value, step)

    def close(self, status: str) -> None:
        self.writer.close()


class MlflowSink:
    """One MLflow run per training run: the config as params, scalars as metrics by step, and at the end the
    work dir's logs and config as artifacts; its status says whether the run finished, failed or stopped."""

    def __init__(self, options: dict[str, Any], work_dir: Path, config: dict[str, Any]) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigError("MLflow logging (visualizer's MLflowVisBackend) needs the mlflow package: "
                              "pip install 'torchyard[mlflow]'") from None
        save_dir = Path(options.get("save_dir") or work_dir).absolute()
        save_dir.mkdir(parents=True, exist_ok=True)
        name = options.get("exp_name") or "Default"
        # MLflow roots a store's artifacts at ./mlruns of the process's directory when it opens it: opened
        # from the save dir, they stay beside the database instead of wherever the trainer was started
        with contextlib.chdir(save_dir):
            self.client = MlflowClient(options.get("tracking_uri") or f"sqlite:///{save_dir / 'mlflow.db'}")
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                experiment_id = self.client.create_experiment(name, options.get("artifact_location"))
            else:
                experiment_id = experiment.experiment_id
        tags = {key: str(value) for key, value in (options.get("tags") or {}).items()}
        self.run_id = self.client.create_run(experiment_id, run_name=options.get("run_name"),
                                             tags=tags).info.run_id
        self.work_dir = work_dir
        self.suffixes = tuple(options.get("artifact_suffix") or MLFLOW_ARTIFACT_SUFFIXES)
        params = _flatten(config)
        tracked = options.get("tracked_config_keys")
        if tracked is not None:
            params = {key: value for key, value in params.items()
                      if any(key == k or key.startswith(f"{k}.") for k in tracked)}
        params.update({key: str(value) for key, value in (options.get("params") or {}).items()})
        self._log_params(params)

    def _log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(key, value[:MLFLOW_PARAM_CHARS]) for key, value in params.items()]
        for start in range(0, len(items), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, params=items[start:start + MLFLOW_BATCH])

    def write(self, mode: str, scalars: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(f"{mode}/{key}", value, stamp, step) for key, value in scalars.items()]
        for start in range(0, len(metrics), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[start:start + MLFLOW_BATCH])

    def close(self, status: str) -> None:
        for path in sorted(self.work_dir.iterdir()):
            if path.is_file() and path.name.endswith(self.suffixes):
                self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, status)


def run_status() -> str:
    """MLflow's word for how the run is ending, read in LoggerHook.after_run (called from a finally)."""
    from torchyard.trainer.loops import TrainingInterrupted

    error = sys.exc_info()[1]
    if error is None:
        return "FINISHED"
    return "KILLED" if isinstance(error, (TrainingInterrupted, KeyboardInterrupt)) else "FAILED"


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"model": {"type": "X"}}`` -> ``{"model.type": "X"}``, as mmengine's MLflowVisBackend logs it."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat
