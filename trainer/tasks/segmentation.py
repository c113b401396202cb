"""Semantic segmentation: a generated data set of shapes and a small fully convolutional network.

    torchrun --standalone --nproc-per-node=2 -m torchyard.trainer.train configs/shapes_fcn.py \\
        --launcher pytorch
    torchyard-test configs/shapes_fcn.py work_dirs/shapes_fcn --show-dir work_dirs/shapes_fcn/vis
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from torchyard.trainer.config import ConfigError
from torchyard.trainer.models import BaseModel
from torchyard.trainer.registry import DATASETS, MODELS
from torchyard.trainer.visualization import caption, side_by_side, to_rgb, upscale

SHAPE_CLASSES = ("background", "circle", "square", "triangle")
# Colours of the classes in overlays; pixels labelled ignore_index are drawn white.
PALETTE = np.array([[40, 40, 40], [230, 60, 60], [60, 200, 60], [70, 110, 240]], dtype=np.float32)
IGNORE_COLOR = np.array([255, 255, 255], dtype=np.float32)


@DATASETS.register()
class ShapesDataset(Dataset):
    """Circles, squares and triangles of random size, rotation and colour on a noisy background, generated in
    memory and identical for a given ``seed`` and ``split`` (each split draws from its own stream).

    Items are ``{"inputs": float [3, size, size] in [0, 1], "targets": long [size, size], "index": int}`` with
    targets 0 background, 1 circle, 2 square, 3 triangle. Shapes are drawn anti-aliased (``supersample`` x
    ``supersample`` points per pixel); a pixel covered by more than one class is ambiguous, so it is labelled
    ``ignore_index`` when ``ignore_boundary`` (as VOC labels object borders), else with its majority class.
    """

    splits = ("train", "val", "test")
    default_sizes = {"train": 400, "val": 100, "test": 100}
    classes = SHAPE_CLASSES

    def __init__(self, split: str = "train", num_samples: int | None = None, size: int = 48,
                 max_shapes: int = 3, seed: int = 0, ignore_boundary: bool = True, ignore_index: int = 255,
                 supersample: int = 3) -> None:
        if split not in self.splits:
            raise ConfigError(f"ShapesDataset.split: {split!r} is not one of {', '.join(self.splits)}")
        if size < 16 or max_shapes < 1 or supersample < 1:
            raise ConfigError("ShapesDataset: needs size >= 16, max_shapes >= 1 and supersample >= 1")
        count = self.default_sizes[split] if num_samples is None else num_samples
        rng = np.random.default_rng([seed, self.splits.index(split)])
        pairs = [_draw(rng, size, max_shapes, supersample, ignore_boundary, ignore_index)
                 for _ in range(count)]
        images = np.stack([image for image, _ in pairs])
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        self.targets = torch.from_numpy(np.stack([label for _, label in pairs])).long()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> dict:
        return {"inputs": self.images[index], "targets": self.targets[index], "index": index}


def _draw(rng: np.random.Generator, size: int, max_shapes: int, supersample: int, ignore_boundary: bool,
          ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """One image (HxWx3 float32) and its label mask (HxW int64), painted back to front."""
    fine = size * supersample
    coords = np.arange(fine, dtype=np.float32) / supersample
    background = rng.uniform(0.0, 1.0, 3).astype(np.float32)
    image = np.broadcast_to(background, (fine, fine, 3)).copy()
    label = np.zeros((fine, fine), dtype=np.int64)
    for _ in range(rng.integers(1, max_shapes + 1)):
        cls = int(rng.integers(1, len(SHAPE_CLASSES)))
        radius = rng.uniform(0.1, 0.25) * size
        cy, cx = rng.uniform(radius, size - radius, 2)
        # Only the shape's bounding box (1.3 r covers every shape) is tested, which keeps generation fast.
        rows = slice(*np.searchsorted(coords, [cy - 1.3 * radius, cy + 1.3 * radius]))
        cols = slice(*np.searchsorted(coords, [cx - 1.3 * radius, cx + 1.3 * radius]))
        dy, dx = coords[rows, None] - cy, coords[None, cols] - cx
        mask = _shape_mask(cls, dy, dx, radius, rng.uniform(0, 2 * np.pi))
        # Each channel half a range away from the background (plus jitter): never invisible, never one colour.
        color = (background + 0.5 + rng.uniform(-0.2, 0.2, 3)) % 1.0
        image[rows, cols][mask] = color
        label[rows, cols][mask] = cls
    image = image.reshape(size, supersample, size, supersample, 3).sum(axis=1).sum(axis=2) / supersample**2
    image = np.clip(image + rng.normal(0.0, 0.03, image.shape), 0.0, 1.0).astype(np.float32)
    # How many of each pixel's sample points fall in each class: one bincount over (pixel, class) pairs.
    pixel = (np.arange(fine) // supersample)[:, None] * size + (np.arange(fine) // supersample)[None, :]
    num_classes = len(SHAPE_CLASSES)
    counts = np.bincount((pixel * num_classes + label).ravel(), minlength=size * size * num_classes)
    counts = counts.reshape(size, size, num_classes)
    coarse = counts.argmax(axis=-1)
    if ignore_boundary:
        coarse[counts.max(axis=-1) < supersample**2] = ignore_index
    return image, coarse


def _shape_mask(cls: int, dy: np.ndarray, dx: np.ndarray, radius: float, angle: float) -> np.ndarray:
    dy, dx = np.broadcast_arrays(dy, dx)
    if cls == 1:  # circle
        return dx**2 + dy**2 <= radius**2
    if cls == 2:  # square of half side 0.85 r: about the area of the circle, rotated
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = -dx * np.sin(angle) + dy * np.cos(angle)
        return (np.abs(u) <= 0.85 * radius) & (np.abs(v) <= 0.85 * radius)
    # equilateral triangle with circumradius 1.3 r: inside all three edges, each at the inradius 0.65 r
    inside = np.ones(dx.shape, dtype=bool)
    for k in range(3):
        normal = angle + 2 * np.pi * k / 3
        inside &= dx * np.cos(normal) + dy * np.sin(normal) <= 0.65 * radius
    return inside


def _conv(in_channels: int, out_channels: int, dilation: int = 1) -> nn.Sequential:
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


@MODELS.register()
class ShapesFCN(BaseModel):
    """A small U-shaped fully convolutional network: three scales down, skip connections back up.

    ``loss`` is pixel cross-entropy that skips ``ignore_index``; ``predict`` returns logits ``[N, C, H, W]``
    at the input size (H and W must be multiples of 4).
    """

    def __init__(self, num_classes: int = len(SHAPE_CLASSES), in_channels: int = 3, channels: int = 16,
                 ignore_index: int = 255) -> None:
        super().__init__()
        c = channels
        self.enc1 = nn.Sequential(_conv(in_channels, c), _conv(c, c))
        self.enc2 = nn.Sequential(nn.MaxPool2d(2), _conv(c, 2 * c), _conv(2 * c, 2 * c))
        # Dilated convolutions at 1/4 scale see a whole shape (about 70 pixels), which tells its class apart.
        self.enc3 = nn.Sequential(nn.MaxPool2d(2), _conv(2 * c, 4 * c), _conv(4 * c, 4 * c, dilation=2),
                                  _conv(4 * c, 4 * c, dilation=4))
        self.dec2 = _conv(6 * c, 2 * c)
        self.dec1 = _conv(3 * c, c)
        self.head = nn.Conv2d(c, num_classes, 1)
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        x1 = self.enc1(inputs)
        x2 = self.enc2(x1)
        x3 = self.enc3(x2)
        y2 = self.dec2(torch.cat([F.interpolate(x3, scale_factor=2.0, mode="bilinear"), x2], dim=1))
        y1 = self.dec1(torch.cat([F.interpolate(y2, scale_factor=2.0, mode="bilinear"), x1], dim=1))
        return self.head(y1)

    def loss(self, batch: dict) -> dict[str, torch.Tensor]:
        logits = self.logits(batch["inputs"])
        return {"loss": F.cross_entropy(logits.float(), batch["targets"], ignore_index=self.ignore_index)}

    def predict(self, batch: dict) -> torch.Tensor:
        return self.logits(batch["inputs"])

    def visualize(self, batch: dict, outputs: torch.Tensor) -> list[tuple[int, np.ndarray]]:
        """Input | ground truth overlay | prediction overlay."""
        pictures = []
        for index, image, logits, label in zip(batch["index"].tolist(), batch["inputs"], outputs,
                                               batch["targets"], strict=True):
            rgb = to_rgb(image)
            panels = [(rgb, "input"), (self._overlay(rgb, label), "ground truth"),
                      (self._overlay(rgb, logits.argmax(dim=0)), "prediction")]
            pictures.append((index, side_by_side(*(caption(upscale(p, 144), text) for p, text in panels))))
        return pictures

    def _overlay(self, rgb: np.ndarray, mask: torch.Tensor) -> np.ndarray:
        mask = mask.cpu().numpy()
        ignored = mask == self.ignore_index
        colors = PALETTE[np.where(ignored, 0, mask) % len(PALETTE)]
        colors[ignored] = IGNORE_COLOR
        return (0.35 * rgb + 0.65 * colors).round().astype(np.uint8)
