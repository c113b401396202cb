"""Image restoration: x2 super-resolution of patches cut from the photos that ship with scikit-image.

    torchrun --standalone --nproc-per-node=2 -m torchyard.trainer.train configs/vdsr_x2_skimage.py \\
        --launcher pytorch
    torchyard-test configs/vdsr_x2_skimage.py work_dirs/vdsr_x2_skimage --show-dir vis/

The network works VDSR-style on the bicubic upsampling of the low-resolution image and adds a learned
residual to it, so the bicubic baseline is the data set's ``inputs``: ``dict(type="PSNR", pred_key="inputs",
prefix="bicubic")`` scores it with the same metric code, beside the model.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from torchyard.trainer.config import ConfigError
from torchyard.trainer.metrics.restoration import psnr
from torchyard.trainer.models import BaseModel
from torchyard.trainer.registry import DATASETS, MODELS
from torchyard.trainer.visualization import caption, side_by_side, to_rgb, upscale

# Colour photos that are files inside the scikit-image package (no download); chelsea is also skimage's "cat".
SHIPPED_IMAGES = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field",
                  "retina", "colorwheel")


@DATASETS.register()
class SkimageSRDataset(Dataset):
    """Patches of scikit-image photos with their x``scale`` degraded versions.

    Each image is downscaled (bicubic with antialiasing, as MATLAB's imresize) and upscaled back (bicubic)
    whole, then cut into ``patch_size`` squares every ``stride`` pixels. Items are ``{"inputs": the bicubic
    upsampling [3, P, P], "targets": the original [3, P, P], "index"}``, floats in [0, 1]. The default
    images of "train" and of "val"/"test" differ, so validation is on photos the model never saw.
    """

    default_images = {"train": ("astronaut", "rocket", "immunohistochemistry"),
                      "val": ("chelsea",), "test": ("coffee",)}  # disjoint: test never picks a checkpoint

    def __init__(self, split: str = "train", images: tuple[str, ...] | None = None, scale: int = 2,
                 patch_size: int = 48, stride: int | None = None) -> None:
        if split not in self.default_images:
            raise ConfigError(f"SkimageSRDataset.split: {split!r} is not one of "
                              f"{', '.join(self.default_images)}")
        names = tuple(images) if images is not None else self.default_images[split]
        unknown = [name for name in names if name not in SHIPPED_IMAGES]
        if unknown:
            raise ConfigError(f"SkimageSRDataset.images: {', '.join(unknown)} not among the photos that ship "
                              f"with scikit-image: {', '.join(SHIPPED_IMAGES)}")
        if scale < 1 or patch_size % scale:
            raise ConfigError(f"SkimageSRDataset: patch_size={patch_size} must be a multiple of "
                              f"scale={scale}")
        stride = stride or patch_size
        inputs, targets = [], []
        for name in names:
            hr = _load(name, scale)
            lr = F.interpolate(hr[None], scale_factor=1 / scale, mode="bicubic", antialias=True).clamp(0, 1)
            bicubic = F.interpolate(lr, size=hr.shape[-2:], mode="bicubic").clamp(0, 1)[0]
            for top in range(0, hr.shape[1] - patch_size + 1, stride):
                for left in range(0, hr.shape[2] - patch_size + 1, stride):
                    window = (slice(None), slice(top, top + patch_size), slice(left, left + patch_size))
                    inputs.append(bicubic[window])
                    targets.append(hr[window])
        if not targets:
            raise ConfigError(f"SkimageSRDataset: patch_size={patch_size} is larger than the images {names}")
        self.inputs = torch.stack(inputs)
        self.targets = torch.stack(targets)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> dict:
        return {"inputs": self.inputs[index], "targets": self.targets[index], "index": index}


def _load(name: str, scale: int) -> torch.Tensor:
    """An RGB photo as float [3, H, W] in [0, 1], H and W cropped to multiples of ``scale``."""
    try:
        import skimage.data
    except ImportError as err:
        raise ConfigError("SkimageSRDataset needs scikit-image: pip install 'torchyard[trainer]'") from err
    array = np.asarray(getattr(skimage.data, name)())
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    h, w = array.shape[0] // scale * scale, array.shape[1] // scale * scale
    return torch.from_numpy(array[:h, :w, :3].astype(np.float32) / 255).permute(2, 0, 1).contiguous()


@MODELS.register()
class VDSR(BaseModel):
    """``depth`` 3x3 convolutions predicting the residual between the bicubic input and the original, trained
    with a mean squared error loss (what PSNR measures). The last layer starts near zero, so an untrained
    model is about the bicubic baseline. ``predict`` clamps to [0, 1]."""

    def __init__(self, channels: int = 32, depth: int = 6, in_channels: int = 3) -> None:
        super().__init__()
        if depth < 2:
            raise ConfigError(f"VDSR.depth must be at least 2, got {depth}")
        layers = [nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.tail = nn.Conv2d(channels, in_channels, 3, padding=1)
        # Near zero rather than zero: an all-zero last layer blocks every gradient to the layers before it.
        nn.init.normal_(self.tail.weight, std=1e-3)
        nn.init.zeros_(self.tail.bias)

    def restore(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs + self.tail(self.body(inputs))

    def loss(self, batch: dict) -> dict[str, torch.Tensor]:
        return {"loss": F.mse_loss(self.restore(batch["inputs"]).float(), batch["targets"])}

    def predict(self, batch: dict) -> torch.Tensor:
        return self.restore(batch["inputs"]).clamp(0, 1)

    def visualize(self, batch: dict, outputs: torch.Tensor) -> list[tuple[int, np.ndarray]]:
        """Bicubic input | output | target, with each one's RGB PSNR against the target."""
        pictures = []
        for index, image, output, target in zip(batch["index"].tolist(), batch["inputs"], outputs,
                                                batch["targets"], strict=True):
            panels = [caption(upscale(to_rgb(image), 192), f"bicubic {psnr(image, target):.2f} dB"),
                      caption(upscale(to_rgb(output), 192), f"output {psnr(output, target):.2f} dB"),
                      caption(upscale(to_rgb(target), 192), "target")]
            pictures.append((index, side_by_side(*panels)))
        return pictures
