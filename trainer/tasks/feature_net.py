"""A small feature network for 8x8 digits: torchyard's stand-in for Inception in FID and Inception Score.

No weights can be downloaded where torchyard is built and tested, so the package ships this network trained on
the digits train split (``trainer/assets/digits_feature_net.pth``, written by
``python -m torchyard.trainer.tools.train_feature_net --out trainer/assets/digits_feature_net.pth``). The
generation metrics use it by default: ``extractor=dict(type="DigitsFeatureNet",
checkpoint="torchyard://digits_feature_net.pth")``. Its FID and IS are comparable only with other numbers
computed by the same network; for numbers comparable with papers, point ``extractor`` at a module that wraps
Inception-v3 (resizing to 299x299 and turning grey into RGB itself) and at its checkpoint, e.g.
``extractor=dict(type="my_pkg.InceptionExtractor", checkpoint="/models/pt_inception-2015-12-05.pth")``.

An extractor is any module with ``features(images) -> [N, D]`` (FID; Inception's pool3) and
``logits(images) -> [N, C]`` (IS; Inception's class logits).
"""

from __future__ import annotations

import torch
from torch import nn

from torchyard.trainer.models import ImageClassifier
from torchyard.trainer.registry import MODELS


@MODELS.register()
class DigitsFeatureNet(ImageClassifier):
    """Three convolutions and a global average pool (64 features, like Inception's pool3), then 10 logits.

    No batch norm or dropout, so that a sample's features never depend on the rest of its batch.
    """

    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))
