"""IoUMetric against a hand-computed case (with ignore_index), and split records equal to one pass."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from torchyard.trainer.config import ConfigError
from torchyard.trainer.dist import DistEnv
from torchyard.trainer.evaluation import _gather_records
from torchyard.trainer.metrics.segmentation import IoUMetric

IGNORE = 255
# Two 2x3 samples, 3 classes; class 2 is predicted once but never labelled.
PREDS = torch.tensor([[[0, 0, 1], [1, 1, 2]],
                      [[0, 1, 1], [0, 0, 0]]])
LABELS = torch.tensor([[[0, 0, 1], [1, 0, IGNORE]],
                       [[0, 1, 0], [0, IGNORE, 1]]])


def batch_of(indices, preds, labels, num_classes: int = 3) -> tuple[dict, torch.Tensor]:
    logits = F.one_hot(preds, num_classes).permute(0, 3, 1, 2).float()
    return {"index": torch.tensor(indices), "targets": labels}, logits


def run(metric: IoUMetric, *batches) -> dict[str, float]:
    for batch, logits in batches:
        metric.process(batch, logits)
    return metric.compute(_gather_records(metric.records, DistEnv()))


def test_hand_computed_case_with_ignored_pixels():
    # Valid pixels as (label, pred): sample 0: (0,0) (0,0) (1,1) (1,1) (0,1);
    #                                 sample 1: (0,0) (1,1) (0,1) (0,0) (1,0).
    # class 0: labelled 6, predicted 5, intersect 4 -> IoU 4/7, Acc 4/6
    # class 1: labelled 4, predicted 5, intersect 3 -> IoU 3/6, Acc 3/4
    # class 2: labelled 0, predicted 0 (its one prediction is on an ignored pixel) -> IoU and Acc undefined
    results = run(IoUMetric(num_classes=3, ignore_index=IGNORE, class_names=("bg", "a", "b")),
                  batch_of([0, 1], PREDS, LABELS))
    assert results["IoU.bg"] == pytest.approx(400 / 7)
    assert results["IoU.a"] == pytest.approx(50.0)
    assert results["Acc.bg"] == pytest.approx(400 / 6)
    assert results["Acc.a"] == pytest.approx(75.0)
    assert math.isnan(results["IoU.b"]) and math.isnan(results["Acc.b"])
    assert results["mIoU"] == pytest.approx((400 / 7 + 50) / 2)  # nanmean, as mmseg
    assert results["mAcc"] == pytest.approx((400 / 6 + 75) / 2)
    assert results["aAcc"] == pytest.approx(700 / 10)
    assert list(results)[:3] == ["mIoU", "mAcc", "aAcc"]


def test_a_class_predicted_but_never_labelled_has_iou_zero_and_nan_to_num_fills_undefined():
    labels = LABELS.clone()
    labels[0, 1, 2] = 1  # the pixel predicted as class 2 now counts, labelled 1
    results = run(IoUMetric(num_classes=3, nan_to_num=0.0, iou_metrics=("mIoU", "mDice")),
                  batch_of([0, 1], PREDS, labels))
    assert results["IoU.2"] == 0.0
    assert results["Acc.2"] == 0.0  # undefined (never labelled), replaced by nan_to_num
    # class 1: labelled 5, predicted 5, intersect 3 -> Dice 6/10; class 0: 4 of (6 + 5) -> 8/11; class 2: 0
    assert results["mDice"] == pytest.approx((800 / 11 + 60 + 0) / 3)


def test_records_split_over_ranks_with_a_padded_duplicate_give_the_one_pass_result():
    generator = torch.Generator().manual_seed(0)
    preds = torch.randint(0, 4, (7, 8, 8), generator=generator)
    labels = torch.randint(0, 5, (7, 8, 8), generator=generator)
    labels[labels == 4] = IGNORE
    single = run(IoUMetric(num_classes=4), batch_of(list(range(7)), preds, labels, 4))

    ranks = [IoUMetric(num_classes=4), IoUMetric(num_classes=4)]
    ranks[0].process(*batch_of([0, 2, 4, 6], preds[0::2], labels[0::2], 4))
    padded = [1, 3, 5, 0]  # index 0 again, as a padding sampler would repeat it
    ranks[1].process(*batch_of(padded, preds[padded], labels[padded], 4))
    merged = IoUMetric(num_classes=4)
    assert merged.compute(_gather_records(ranks[0].records + ranks[1].records, DistEnv())) == single


def test_records_are_small_histograms_not_masks():
    metric = IoUMetric(num_classes=3)
    metric.process(*batch_of([0, 1], PREDS, LABELS))
    assert [tuple(record.shape) for _, record in metric.records] == [(4, 3), (4, 3)]


def test_logits_smaller_than_the_labels_are_resized():
    metric = IoUMetric(num_classes=2)
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[:, :, 4:] = 1
    logits = torch.zeros(1, 2, 4, 4)
    logits[:, 0, :, :2] = 1.0
    logits[:, 1, :, 2:] = 1.0
    assert run(metric, ({"index": torch.tensor([0]), "targets": labels}, logits))["mIoU"] == 100.0


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(num_classes=3, iou_metrics=("mIoU", "mFancy")), "unknown \\['mFancy'\\]; known: mIoU, mDice"),
    (dict(num_classes=3, class_names=("a", "b")), "has 2 names, num_classes=3"),
])
def test_bad_options_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        IoUMetric(**kwargs)


def test_a_label_outside_the_classes_names_num_classes_and_ignore_index():
    metric = IoUMetric(num_classes=2, ignore_index=255)
    with pytest.raises(ConfigError, match=r"label 7 is outside 0\.\.1 and is not ignore_index=255"):
        metric.process(*batch_of([0], torch.zeros(1, 2, 2, dtype=torch.long),
                                 torch.full((1, 2, 2), 7)))
