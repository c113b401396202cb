"""``model.data_preprocessor``: what mmengine's model-side preprocessors do to a batch before the model sees
it, in training and in evaluation.

    model = dict(type="DigitsCNN", data_preprocessor=dict(type="ImgDataPreprocessor", mean=[0.5], std=[0.25]))

A top-level ``data_preprocessor`` is used for the model when it names none, as mmengine's Runner does.
``BaseDataPreprocessor`` only moves the batch to the device, which the loop always does. After
``collate_fn=pseudo_collate`` (lists), ``ImgDataPreprocessor`` normalizes each image, then pads and stacks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from torchyard.trainer.collate import stack_fields, stack_images
from torchyard.trainer.config import ConfigError
from torchyard.trainer.registry import MODELS


@MODELS.register()
class BaseDataPreprocessor:
    """Moves the batch to the device (the loop does that for every model); nothing else."""

    def __call__(self, batch: dict, training: bool) -> dict:
        return batch


@MODELS.register()
class ImgDataPreprocessor(BaseDataPreprocessor):
    """``inputs`` [N, C, H, W]: channels reversed (``bgr_to_rgb``/``rgb_to_bgr``), then ``(x - mean) / std``
    per channel, then the bottom and right padded with ``pad_value`` to multiples of ``pad_size_divisor``."""

    def __init__(self, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 pad_size_divisor: int = 1, pad_value: float = 0, bgr_to_rgb: bool = False,
                 rgb_to_bgr: bool = False, non_blocking: bool = False) -> None:
        if (mean is None) != (std is None):
            raise ConfigError("ImgDataPreprocessor: give mean and std together, or neither")
        if bgr_to_rgb and rgb_to_bgr:
            raise ConfigError("ImgDataPreprocessor: bgr_to_rgb and rgb_to_bgr cannot both be True")
        if pad_size_divisor < 1:
            raise ConfigError(f"ImgDataPreprocessor.pad_size_divisor must be >= 1, got {pad_size_divisor}")
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        if self.std is not None and bool((self.std == 0).any()):
            raise ConfigError(f"ImgDataPreprocessor.std: {list(std)} has a zero; it divides")
        self.pad_size_divisor = pad_size_divisor
        self.pad_value = pad_value
        self.swap_channels = bgr_to_rgb or rgb_to_bgr

    def __call__(self, batch: dict, training: bool) -> dict:
        inputs = batch["inputs"]
        if isinstance(inputs, list):  # pseudo_collate's: each image on its own, of any size
            images = [self._normalize(image.float().unsqueeze(0))[0] for image in inputs]
            stacked = stack_images(images, self.pad_size_divisor, self.pad_value)
            return {**stack_fields(batch), "inputs": stacked}
        inputs = self._normalize(inputs.float())
        height, width = inputs.shape[-2:]
        divisor = self.pad_size_divisor
        pad_h, pad_w = -height % divisor, -width % divisor
        if pad_h or pad_w:
            inputs = F.pad(inputs, (0, pad_w, 0, pad_h), value=self.pad_value)
        return {**batch, "inputs": inputs}

    def _normalize(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.swap_channels:
            if inputs.shape[1] != 3:
                raise ConfigError("ImgDataPreprocessor: bgr_to_rgb/rgb_to_bgr need 3 channels; the inputs "
                                  f"have {inputs.shape[1]}")
            inputs = inputs.flip(1)
        if self.mean is not None:
            if self.mean.shape[0] not in (1, inputs.shape[1]):
                raise ConfigError(f"ImgDataPreprocessor.mean: {self.mean.shape[0]} values for "
                                  f"{inputs.shape[1]} channels")
            inputs = (inputs - self.mean.to(inputs.device)) / self.std.to(inputs.device)
        return inputs


def build_data_preprocessor(cfg: dict) -> tuple[dict, BaseDataPreprocessor | None]:
    """The model config without its ``data_preprocessor``, and that preprocessor built (or the top-level
    one's when the model names none)."""
    if not isinstance(cfg.get("model"), dict):
        return cfg.get("model"), None  # MODELS.build says what is wrong with it
    model_cfg = dict(cfg["model"])
    preprocessor = model_cfg.pop("data_preprocessor", None) or cfg.get("data_preprocessor")
    if not preprocessor:
        return model_cfg, None
    return model_cfg, MODELS.build(preprocessor, where="model.data_preprocessor")


def check_batches_stack_for(model: torch.nn.Module, preprocessor: BaseDataPreprocessor | None,
                            cfg: dict) -> None:
    """torchyard's own models take stacked tensors, so pseudo_collate's lists need a preprocessor that stacks
    them; a user's model may take the lists as they are, as an mmengine model does."""
    if isinstance(preprocessor, ImgDataPreprocessor) or not type(model).__module__.startswith("torchyard."):
        return
    for name in ("train_dataloader", "val_dataloader", "test_dataloader"):
        loader = cfg.get(name)
        collate = loader.get("collate_fn") if isinstance(loader, dict) else None
        if isinstance(collate, dict) and collate.get("type") == "pseudo_collate":
            raise ConfigError(f"{name}.collate_fn=pseudo_collate leaves each batch as lists, and "
                              f"{type(model).__name__} takes stacked tensors: add "
                              "model.data_preprocessor=dict(type='ImgDataPreprocessor') to pad and stack "
                              "them, or use dict(type='default_collate')")
