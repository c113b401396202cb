"""Evaluator and metrics: the same code validates during training and tests a checkpoint.

Each metric turns a batch into per-sample records keyed by data set index. Ranks exchange records, sort by
index and compute on the full, duplicate-free list, so N processes give exactly the one-process metrics.
Output keys are ``prefix/name`` (``accuracy/top1``, ``FID-Full-50k/fid``); the prefix is kept as configured.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from torchyard.trainer.config import ConfigError
from torchyard.trainer.dist import DistEnv
from torchyard.trainer.registry import METRICS


class BaseMetric:
    default_prefix: str | None = None

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = prefix if prefix is not None else self.default_prefix
        self.records: list[tuple[int, Any]] = []

    def process(self, batch: dict, outputs: torch.Tensor) -> None:
        """Append ``(dataset_index, record)`` pairs for this batch to ``self.records``."""
        raise NotImplementedError

    def compute(self, records: list[Any]) -> dict[str, float]:
        """Metrics from every sample's record, in data set order."""
        raise NotImplementedError

    def after_evaluate(self, metrics: dict[str, float], env: DistEnv) -> None:
        """Called once every metric is computed, with all of them (DumpResults writes them to a file)."""


class Evaluator:
    def __init__(self, metrics: list[BaseMetric]) -> None:
        if not metrics:
            raise ConfigError("evaluator: needs at least one metric, e.g. dict(type='Accuracy', topk=(1,))")
        self.metrics = metrics

    @classmethod
    def build(cls, cfg: dict | list[dict], where: str) -> Evaluator:
        cfgs = list(cfg) if isinstance(cfg, list | tuple) else [cfg]
        return cls([METRICS.build(c, where=f"{where}[{i}]") for i, c in enumerate(cfgs)])

    def process(self, batch: dict, outputs: torch.Tensor) -> None:
        for metric in self.metrics:
            metric.process(batch, outputs)

    def evaluate(self, env: DistEnv) -> dict[str, float]:
        results: dict[str, float] = {}
        for metric in self.metrics:
            records = _gather_records(metric.records, env)
            metric.records = []
            for name, value in metric.compute(records).items():
                results[f"{metric.prefix}/{name}" if metric.prefix else name] = value
        for metric in self.metrics:
            metric.after_evaluate(results, env)
        return results


def _gather_records(records: list[tuple[int, Any]], env: DistEnv) -> list[Any]:
    if env.distributed:
        per_rank: list[list] = [[] for _ in range(env.world_size)]
        dist.all_gather_object(per_rank, records)
        records = [record for rank_records in per_rank for record in rank_records]
    by_index = dict(records)  # an index seen twice (padding) counts once
    return [by_index[index] for index in sorted(by_index)]


@METRICS.register()
class DumpResults(BaseMetric):
    """Writes every sample's prediction and target, and the metrics, to ``out_file`` (.json or .pkl).

    ``torchyard-test --out FILE`` appends it to the test evaluator, as OpenMMLab's tools/test.py does.
    """

    def __init__(self, out_file: str, prefix: str | None = None) -> None:
        super().__init__(prefix)
        if Path(out_file).suffix not in (".json", ".pkl"):
            raise ConfigError(f"DumpResults.out_file / --out {out_file}: must end in .json or .pkl")
        self.out_file = Path(out_file)

    def process(self, batch: dict, outputs: torch.Tensor) -> None:
        targets = batch.get("targets")
        for i, index in enumerate(batch["index"].tolist()):
            self.records.append((index, {
                "index": index,
                "prediction": outputs[i].detach().float().cpu(),
                "target": targets[i].cpu() if isinstance(targets, torch.Tensor) else None,
            }))

    def compute(self, records: list[dict]) -> dict[str, float]:
        self.samples = records
        return {}

    def after_evaluate(self, metrics: dict[str, float], env: DistEnv) -> None:
        """Rank 0 writes the samples and every metric."""
        records, self.samples = self.samples, []
        if not env.is_main:
            return
        self.out_file.parent.mkdir(parents=True, exist_ok=True)
        if self.out_file.suffix == ".pkl":
            samples = [{k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in r.items()}
                       for r in records]
            self.out_file.write_bytes(pickle.dumps({"metrics": metrics, "predictions": samples}))
        else:
            samples = [{k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in r.items()}
                       for r in records]
            self.out_file.write_text(json.dumps({"metrics": metrics, "predictions": samples}))
