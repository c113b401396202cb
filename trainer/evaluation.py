"""Evaluator and metrics: the same code validates during training and tests a checkpoint.

Each metric turns a batch into per-sample records keyed by data set index. Ranks exchange records, sort by
index and compute on the full, duplicate-free list, so N processes give exactly the one-process metrics.
Output keys are ``prefix/name`` (``accuracy/top1``, ``FID-Full-50k/fid``); the prefix is kept as configured.
"""

from __future__ import annotations

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


@METRICS.register()
class Accuracy(BaseMetric):
    """Top-k accuracy in percent: ``accuracy/top1``, ``accuracy/top5``."""

    default_prefix = "accuracy"

    def __init__(self, topk: int | tuple[int, ...] = (1,), prefix: str | None = None) -> None:
        super().__init__(prefix)
        self.topk = (topk,) if isinstance(topk, int) else tuple(topk)

    def process(self, batch: dict, outputs: torch.Tensor) -> None:
        k = min(max(self.topk), outputs.shape[1])
        top = outputs.float().topk(k, dim=1).indices.cpu()
        for index, pred, target in zip(batch["index"].tolist(), top, batch["targets"].cpu(), strict=True):
            self.records.append((index, (pred, int(target))))

    def compute(self, records: list[Any]) -> dict[str, float]:
        preds = torch.stack([pred for pred, _ in records])
        targets = torch.tensor([target for _, target in records])
        hits = preds == targets[:, None]
        return {f"top{k}": float(hits[:, :k].any(dim=1).float().mean() * 100) for k in self.topk}


class Evaluator:
    def __init__(self, metrics: list[BaseMetric]) -> None:
        if not metrics:
            raise ConfigError("evaluator: needs at least one metric, e.g. dict(type='Accuracy', topk=(1,))")
        self.metrics = metrics

    @classmethod
    def build(cls, cfg: dict | list[dict], where: str) -> Evaluator:
        cfgs = cfg if isinstance(cfg, list) else [cfg]
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
        return results


def _gather_records(records: list[tuple[int, Any]], env: DistEnv) -> list[Any]:
    if env.distributed:
        per_rank: list[list] = [[] for _ in range(env.world_size)]
        dist.all_gather_object(per_rank, records)
        records = [record for rank_records in per_rank for record in rank_records]
    by_index = dict(records)  # an index seen twice (padding) counts once
    return [by_index[index] for index in sorted(by_index)]
