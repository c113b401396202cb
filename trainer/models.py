"""Models. A model takes a collated batch and a mode: ``"loss"`` returns a dict of losses,
``"predict"`` outputs.

Losses are computed inside ``forward`` so that DistributedDataParallel sees the whole step.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from torchyard.trainer.registry import MODELS
from torchyard.trainer.visualization import caption, to_rgb, upscale


class BaseModel(nn.Module):
    def forward(self, batch: dict, mode: str = "loss"):
        if mode == "loss":
            return self.loss(batch)
        if mode == "predict":
            return self.predict(batch)
        raise ValueError(f"mode must be 'loss' or 'predict', got {mode!r}")

    def loss(self, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def predict(self, batch: dict) -> torch.Tensor:
        raise NotImplementedError


class ImageClassifier(BaseModel):
    """A backbone producing class logits, trained with cross-entropy; ``predict`` returns the logits."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, batch: dict) -> dict[str, torch.Tensor]:
        logits = self.logits(batch["inputs"])
        return {"loss": F.cross_entropy(logits.float(), batch["targets"],
                                        label_smoothing=self.label_smoothing)}

    def predict(self, batch: dict) -> torch.Tensor:
        return self.logits(batch["inputs"])

    def extract_feat(self, inputs: torch.Tensor) -> torch.Tensor:
        """Pre-logits features (mmpretrain's ``stage="pre_logits"``): what enters the last linear layer."""
        last_linear = [m for m in self.modules() if isinstance(m, nn.Linear)][-1]
        captured = []
        handle = last_linear.register_forward_pre_hook(lambda _, args: captured.append(args[0]))
        try:
            self.logits(inputs)
        finally:
            handle.remove()
        return captured[0]

    def visualize(self, batch: dict, outputs: torch.Tensor) -> list[tuple[int, np.ndarray]]:
        """Each input with "pred P / gt T" under it, green when right and red when wrong."""
        pictures = []
        for index, image, logits, target in zip(batch["index"].tolist(), batch["inputs"], outputs,
                                                batch["targets"].tolist(), strict=True):
            pred = int(logits.argmax())
            color = (80, 220, 80) if pred == target else (240, 80, 80)
            pictures.append((index, caption(upscale(to_rgb(image)), f"pred {pred} / gt {target}", color)))
        return pictures


@MODELS.register()
class DigitsCNN(ImageClassifier):
    """A small CNN for 8x8 digits: two conv blocks, then a linear classifier."""

    def __init__(self, channels: int = 32, num_classes: int = 10, dropout: float = 0.1,
                 label_smoothing: float = 0.0) -> None:
        super().__init__(label_smoothing)
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.BatchNorm2d(2 * channels),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(2 * channels * 16, num_classes))

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(inputs))


@MODELS.register()
class DigitsMLP(ImageClassifier):
    """A two-layer perceptron over the 64 pixels: the fastest model for smoke tests."""

    def __init__(self, hidden: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, num_classes))

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs)
