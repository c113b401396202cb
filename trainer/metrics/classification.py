"""Classification metrics, named and prefixed as in mmpretrain: ``accuracy/top1``,
``single-label/precision``.
"""

from __future__ import annotations

from typing import Any

import torch

from torchyard.trainer.config import ConfigError
from torchyard.trainer.evaluation import BaseMetric
from torchyard.trainer.registry import METRICS


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


@METRICS.register()
class SingleLabelMetric(BaseMetric):
    """Precision, recall and F1 in percent, macro-averaged over classes, or per class with ``average=None``
    (``single-label/precision_classwise`` then lists one value per class, as mmpretrain does)."""

    default_prefix = "single-label"
    items = ("precision", "recall", "f1-score")

    def __init__(self, num_classes: int | None = None, average: str | None = "macro",
                 items: tuple[str, ...] = items, prefix: str | None = None) -> None:
        super().__init__(prefix)
        if average not in ("macro", "micro", None):
            raise ConfigError(f"SingleLabelMetric.average must be 'macro', 'micro' or None, got {average!r}")
        unknown = set(items) - set(self.items)
        if unknown:
            raise ConfigError(f"SingleLabelMetric.items: unknown {sorted(unknown)}; "
                              f"known: {', '.join(self.items)}")
        self.num_classes = num_classes
        self.average = average
        self.selected = tuple(items)

    def process(self, batch: dict, outputs: torch.Tensor) -> None:
        preds = outputs.argmax(dim=1).cpu().tolist()
        for index, pred, target in zip(batch["index"].tolist(), preds, batch["targets"].cpu().tolist(),
                                       strict=True):
            self.records.append((index, (pred, target)))

    def compute(self, records: list[Any]) -> dict[str, float]:
        preds = torch.tensor([pred for pred, _ in records])
        targets = torch.tensor([target for _, target in records])
        num_classes = self.num_classes or int(max(preds.max(), targets.max())) + 1
        confusion = confusion_matrix(preds, targets, num_classes)
        true_pos = confusion.diag()
        if self.average == "micro":
            true_pos, predicted, actual = true_pos.sum(), confusion.sum(), confusion.sum()
        else:
            predicted, actual = confusion.sum(dim=0), confusion.sum(dim=1)
        precision = _safe_div(true_pos, predicted) * 100
        recall = _safe_div(true_pos, actual) * 100
        f1 = _safe_div(2 * precision * recall, precision + recall)
        values = {"precision": precision, "recall": recall, "f1-score": f1}
        if self.average == "macro":
            return {name: float(values[name].mean()) for name in self.selected}
        if self.average == "micro":
            return {name: float(values[name]) for name in self.selected}
        return {f"{name}_classwise": values[name].tolist() for name in self.selected}


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rows are true classes, columns predicted classes (scikit-learn's convention)."""
    flat = targets.long() * num_classes + preds.long()
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes).double()


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / den.clamp(min=1e-12), torch.zeros_like(num, dtype=torch.double))
