"""Self-supervised learning on 8x8 digits: SimCLR pretraining, then a linear probe on the frozen backbone.

    torchyard-train configs/digits_simclr.py         # no labels used
    torchyard-train configs/digits_linear_probe.py \
        --cfg-options load_from=work_dirs/digits_simclr/epoch_40.pth

Both models name their encoder ``backbone``, so ``load_from`` carries the pretrained weights over (the
projector is reported as unexpected, the probe's head as missing: both on purpose).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from torchyard.trainer.models import BaseModel, ImageClassifier
from torchyard.trainer.registry import MODELS


class DigitsEncoder(nn.Sequential):
    """Three convolutions with batch norm and a global average pool: [N, 1, 8, 8] -> [N, 4 * width]."""

    def __init__(self, width: int = 16) -> None:
        super().__init__(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.BatchNorm2d(4 * width), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.out_features = 4 * width


def augment(images: torch.Tensor, max_degrees: float = 15.0, max_scale: float = 0.15, max_shift: float = 1.0,
            max_contrast: float = 0.3, noise: float = 0.05) -> torch.Tensor:
    """A random view of every image: rotation, scaling and a shift of up to ``max_shift`` pixels (one random
    affine map each), contrast, and Gaussian noise; drawn from the global RNG, which the runner seeds."""
    n, device = len(images), images.device
    angle = (torch.rand(n, device=device) * 2 - 1) * math.radians(max_degrees)
    scale = 1 + (torch.rand(n, device=device) * 2 - 1) * max_scale
    # affine_grid's coordinates span [-1, 1]: one pixel is 2 / width.
    shift = (torch.rand(n, 2, device=device) * 2 - 1) * max_shift * 2 / images.shape[-1]
    cos, sin = angle.cos() / scale, angle.sin() / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    views = F.grid_sample(images.float(), grid, align_corners=False, padding_mode="zeros")
    contrast = 1 + (torch.rand(n, 1, 1, 1, device=device) * 2 - 1) * max_contrast
    return (views * contrast + noise * torch.randn_like(views)).clamp(0, 1)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's normalised-temperature cross-entropy: each view must find its partner among 2N - 1 others."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    similarity = z @ z.T / temperature
    similarity.fill_diagonal_(float("-inf"))
    n = len(z1)
    partners = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(similarity, partners)


@MODELS.register()
class DigitsSimCLR(BaseModel):
    """SimCLR: two augmented views of each image, a projector, and NT-Xent over the batch.

    With several processes each rank contrasts its own batch (negatives are not gathered across ranks).
    ``predict`` returns the backbone's features, the representation a probe or t-SNE looks at.
    """

    def __init__(self, width: int = 16, projection_dim: int = 32, temperature: float = 0.2) -> None:
        super().__init__()
        self.backbone = DigitsEncoder(width)
        dim = self.backbone.out_features
        self.projector = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True),
                                       nn.Linear(dim, projection_dim))
        self.temperature = temperature

    def loss(self, batch: dict) -> dict[str, torch.Tensor]:
        inputs = batch["inputs"]
        z1, z2 = self.projector(self.backbone(torch.cat([augment(inputs), augment(inputs)]))).chunk(2)
        return {"loss": nt_xent(z1, z2, self.temperature)}

    def predict(self, batch: dict) -> torch.Tensor:
        return self.backbone(batch["inputs"])


@MODELS.register()
class DigitsLinearProbe(ImageClassifier):
    """A linear classifier on a frozen ``backbone``: its weights never train and its batch norm stays in eval
    mode. As in MAE's linear probing, a batch norm without affine parameters puts the features on one scale
    before the linear layer, so the probe trains alike on pretrained and on random features."""

    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.backbone = DigitsEncoder(width).requires_grad_(False)
        dim = self.backbone.out_features
        self.head = nn.Sequential(nn.BatchNorm1d(dim, affine=False), nn.Linear(dim, num_classes))

    def train(self, mode: bool = True) -> DigitsLinearProbe:
        super().train(mode)
        self.backbone.eval()
        return self

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(inputs))
