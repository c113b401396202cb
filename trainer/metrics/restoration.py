"""Image restoration metrics, named as in mmagic: ``PSNR`` and ``SSIM``, computed per image then averaged.

Both follow mmagic's settings: ``crop_border`` pixels are dropped on every side (super-resolution crops the
scale factor), ``convert_to="Y"`` compares the BT.601 luma channel (what SR papers report), otherwise every
channel. Images are floats in ``[0, data_range]``. ``pred_key`` names where the prediction is: the model's
``outputs`` by default, or a batch key, so that ``dict(type="PSNR", pred_key="inputs", prefix="bicubic")``
scores the bicubic (or noisy) input with the same code, beside the model.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from torchyard.trainer.config import ConfigError
from torchyard.trainer.evaluation import BaseMetric
from torchyard.trainer.registry import METRICS

# ITU-R BT.601 luma for RGB in [0, 1], giving Y in [16, 235] / 255 (MATLAB's rgb2ycbcr, used by mmagic).
_Y_WEIGHTS = (65.481 / 255, 128.553 / 255, 24.966 / 255)
_Y_OFFSET = 16 / 255


class _RestorationMetric(BaseMetric):
    name = ""

    def __init__(self, crop_border: int = 0, input_order: str = "CHW", convert_to: str | None = None,
                 data_range: float = 1.0, pred_key: str = "outputs", gt_key: str = "targets",
                 prefix: str | None = None) -> None:
        super().__init__(prefix)
        if input_order not in ("CHW", "HWC"):
            raise ConfigError(f"{self.name}.input_order must be 'CHW' or 'HWC', got {input_order!r}")
        if convert_to not in (None, "Y", "y"):
            raise ConfigError(f"{self.name}.convert_to must be None (every channel) or 'Y', "
                              f"got {convert_to!r}")
        if crop_border < 0 or data_range <= 0:
            raise ConfigError(f"{self.name}: crop_border must be >= 0 and data_range > 0")
        self.crop_border = crop_border
        self.input_order = input_order
        self.to_y = convert_to is not None
        self.data_range = data_range
        self.pred_key = pred_key
        self.gt_key = gt_key

    def process(self, batch: dict, outputs: torch.Tensor) -> None:
        if self.pred_key != "outputs" and self.pred_key not in batch:
            raise ConfigError(f"{self.name}.pred_key={self.pred_key!r}: the batch has no such key; it has "
                              f"{', '.join(batch)} (or use 'outputs', the model's prediction)")
        preds = outputs if self.pred_key == "outputs" else batch[self.pred_key]
        for index, pred, gt in zip(batch["index"].tolist(), preds, batch[self.gt_key], strict=True):
            pred, gt = self._prepare(pred), self._prepare(gt)
            if pred.shape != gt.shape:
                raise ConfigError(f"{self.name}: prediction {tuple(pred.shape)} and ground truth "
                                  f"{tuple(gt.shape)} of sample {index} differ in shape")
            self.records.append((index, self.score(pred, gt)))

    def _prepare(self, image: torch.Tensor) -> torch.Tensor:
        """A ``[C, H, W]`` float64 image, border cropped, as luma when ``convert_to="Y"``."""
        image = image.detach().cpu().double()
        if self.input_order == "HWC":
            image = image.permute(2, 0, 1)
        if self.to_y:
            if image.shape[0] != 3:
                raise ConfigError(f"{self.name}.convert_to='Y' needs RGB images, "
                                  f"got {image.shape[0]} channel(s)")
            weights = torch.tensor(_Y_WEIGHTS, dtype=torch.float64).view(3, 1, 1)
            luma = (image / self.data_range * weights).sum(dim=0, keepdim=True) + _Y_OFFSET
            image = luma * self.data_range
        if self.crop_border:
            b = self.crop_border
            image = image[:, b:-b, b:-b]
        return image

    def score(self, pred: torch.Tensor, gt: torch.Tensor) -> float:
        raise NotImplementedError

    def compute(self, records: list[Any]) -> dict[str, float]:
        return {self.name: sum(records) / len(records)}


@METRICS.register()
class PSNR(_RestorationMetric):
    """Peak signal-to-noise ratio in dB; identical images score ``inf``, as in mmagic."""

    name = "PSNR"

    def score(self, pred: torch.Tensor, gt: torch.Tensor) -> float:
        return psnr(pred, gt, self.data_range)


@METRICS.register()
class SSIM(_RestorationMetric):
    """Structural similarity (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1=0.01, K2=0.03), the mean
    over the valid window positions and over channels."""

    name = "SSIM"

    def score(self, pred: torch.Tensor, gt: torch.Tensor) -> float:
        return ssim(pred, gt, self.data_range)


def psnr(pred: torch.Tensor, gt: torch.Tensor, data_range: float = 1.0) -> float:
    mse = float(((pred.detach().double() - gt.detach().double()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)


def ssim(pred: torch.Tensor, gt: torch.Tensor, data_range: float = 1.0) -> float:
    """SSIM of two ``[C, H, W]`` images, each at least 11x11."""
    if min(pred.shape[-2:]) < 11:
        raise ConfigError(f"SSIM needs images of at least 11x11 pixels after crop_border, "
                          f"got {tuple(pred.shape)}")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    x, y = pred.double().unsqueeze(1), gt.double().unsqueeze(1)  # channels as a batch of grey images
    mu_x, mu_y = _gaussian_blur(x), _gaussian_blur(y)
    var_x = _gaussian_blur(x * x) - mu_x**2
    var_y = _gaussian_blur(y * y) - mu_y**2
    cov = _gaussian_blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())


def _gaussian_blur(images: torch.Tensor, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Separable Gaussian filter over ``[N, 1, H, W]``, valid positions only (no padding)."""
    taps = torch.arange(size, dtype=torch.float64) - size // 2
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    blurred = F.conv2d(images, kernel.view(1, 1, size, 1))
    return F.conv2d(blurred, kernel.view(1, 1, 1, size))
