"""Semantic segmentation metrics, named as in mmsegmentation: ``mIoU``, ``mAcc``, ``aAcc`` in percent.

Each sample is reduced to four small per-class pixel histograms (intersection, union, predicted and labelled
area), so records stay a few hundred bytes however large the masks; the metrics are sums of those.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from torchyard.trainer.config import ConfigError
from torchyard.trainer.evaluation import BaseMetric
from torchyard.trainer.logger import LOGGER_NAME
from torchyard.trainer.registry import METRICS


@METRICS.register()
class IoUMetric(BaseMetric):
    """Intersection over union per class and its mean, like mmseg's ``IoUMetric``.

    Returns ``mIoU``, ``mAcc``, ``aAcc`` (and ``mDice`` when asked for), then one ``IoU.<class>`` and
    ``Acc.<class>`` per class (mmseg 0.x names: scalars, so every logger and ``save_best`` can use them), and
    logs the per-class table. Pixels labelled ``ignore_index`` count nowhere. A class that appears in no label
    and no prediction has an undefined IoU (NaN); the means skip it, as mmseg's ``nanmean`` does, unless
    ``nan_to_num`` replaces it. ``outputs`` are logits ``[N, C, H, W]``, resized to the label size if needed.
    """

    iou_metrics = ("mIoU", "mDice")

    def __init__(self, num_classes: int, ignore_index: int = 255, iou_metrics: Sequence[str] = ("mIoU",),
                 class_names: Sequence[str] | None = None, nan_to_num: float | None = None,
                 prefix: str | None = None) -> None:
        super().__init__(prefix)
        if isinstance(iou_metrics, str):
            iou_metrics = (iou_metrics,)
        unknown = set(iou_metrics) - set(self.iou_metrics)
        if unknown:
            raise ConfigError(f"IoUMetric.iou_metrics: unknown {sorted(unknown)}; "
                              f"known: {', '.join(self.iou_metrics)}")
        if class_names is not None and len(class_names) != num_classes:
            raise ConfigError(f"IoUMetric.class_names has {len(class_names)} names, "
                              f"num_classes={num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.selected = tuple(iou_metrics)
        self.class_names = [str(c) for c in range(num_classes)] if class_names is None else list(class_names)
        self.nan_to_num = nan_to_num

    def process(self, batch: dict, outputs: torch.Tensor) -> None:
        labels = batch["targets"]
        if outputs.shape[-2:] != labels.shape[-2:]:
            outputs = F.interpolate(outputs.float(), size=labels.shape[-2:], mode="bilinear")
        preds = outputs.argmax(dim=1).cpu()
        for index, pred, label in zip(batch["index"].tolist(), preds, labels.cpu(), strict=True):
            self.records.append((index, area_histograms(pred, label, self.num_classes, self.ignore_index)))

    def compute(self, records: list[Any]) -> dict[str, float]:
        intersect, union, pred_area, label_area = torch.stack(records).sum(dim=0).double()
        iou = intersect / union
        acc = intersect / label_area
        dice = 2 * intersect / (pred_area + label_area)
        if self.nan_to_num is not None:
            iou, acc, dice = (v.nan_to_num(nan=self.nan_to_num) for v in (iou, acc, dice))
        # mIoU first: save_best="auto" keeps the first metric, and mIoU is the one segmentation is ranked by.
        results = {"mIoU": _percent(iou.nanmean())} if "mIoU" in self.selected else {}
        results["mAcc"] = _percent(acc.nanmean())
        results["aAcc"] = _percent(intersect.sum() / label_area.sum())
        if "mDice" in self.selected:
            results["mDice"] = _percent(dice.nanmean())
        for name, class_iou, class_acc in zip(self.class_names, iou.tolist(), acc.tolist(), strict=True):
            results[f"IoU.{name}"] = class_iou * 100
            results[f"Acc.{name}"] = class_acc * 100
        logging.getLogger(LOGGER_NAME).info("per class results:\n" + self._table(iou, acc, dice))
        return results

    def _table(self, iou: torch.Tensor, acc: torch.Tensor, dice: torch.Tensor) -> str:
        columns = {"IoU": iou, "Acc": acc, **({"Dice": dice} if "mDice" in self.selected else {})}
        width = max(len("Class"), *(len(n) for n in self.class_names))
        lines = [f"{'Class':<{width}} " + " ".join(f"{c:>7}" for c in columns)]
        for c, name in enumerate(self.class_names):
            values = " ".join(f"{float(v[c]) * 100:7.2f}" for v in columns.values())
            lines.append(f"{name:<{width}} {values}")
        return "\n".join(lines)


def area_histograms(pred: torch.Tensor, label: torch.Tensor, num_classes: int,
                    ignore_index: int) -> torch.Tensor:
    """``[4, num_classes]`` int64 pixel counts of one sample: intersection, union, predicted, labelled."""
    valid = label != ignore_index
    pred, label = pred[valid].long(), label[valid].long()
    if label.numel() and (label.min() < 0 or label.max() >= num_classes):
        raise ConfigError(f"IoUMetric: a label {int(label.max())} is outside 0..{num_classes - 1} and is not "
                          f"ignore_index={ignore_index}; check num_classes and ignore_index")
    intersect = torch.bincount(label[pred == label], minlength=num_classes)
    pred_area = torch.bincount(pred, minlength=num_classes)[:num_classes]
    label_area = torch.bincount(label, minlength=num_classes)
    return torch.stack([intersect, pred_area + label_area - intersect, pred_area, label_area])


def _percent(value: torch.Tensor) -> float:
    return float(value) * 100
