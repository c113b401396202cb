"""``--show-dir``: PNG pictures of predictions, drawn by the model's ``visualize`` (a picture per sample).

A model that can be visualized implements ``visualize(batch, outputs) -> list[(index, HxWx3 uint8 array)]``;
the image helpers here (``to_rgb``, ``upscale``, ``caption``, ``side_by_side``) keep those methods short.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageDraw

if TYPE_CHECKING:
    pass


def to_rgb(image: torch.Tensor, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """A [C,H,W] tensor with values in [low, high] as an HxWx3 uint8 array (grey images are repeated)."""
    array = ((image.detach().float().cpu().clamp(low, high) - low) / (high - low) * 255).round().byte()
    array = array.expand(3, *array.shape[1:]) if array.shape[0] == 1 else array[:3]
    return array.permute(1, 2, 0).numpy()


def upscale(picture: np.ndarray, min_size: int = 96) -> np.ndarray:
    """Nearest-neighbour enlargement so that tiny images (8x8 digits) stay readable."""
    factor = max(1, -(-min_size // max(picture.shape[:2])))
    return picture.repeat(factor, axis=0).repeat(factor, axis=1)


def caption(picture: np.ndarray, text: str, color: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """The picture with a text strip under it."""
    strip = Image.new("RGB", (picture.shape[1], 14), (0, 0, 0))
    ImageDraw.Draw(strip).text((2, 1), text, fill=color)
    return np.concatenate([picture, np.asarray(strip)], axis=0)


def side_by_side(*pictures: np.ndarray, gap: int = 4) -> np.ndarray:
    height = max(p.shape[0] for p in pictures)
    padded = [np.pad(p, ((0, height - p.shape[0]), (0, gap), (0, 0))) for p in pictures]
    return np.concatenate(padded, axis=1)[:, :-gap]
