"""``*_dataloader.collate_fn``: how samples become a batch, by mmengine's names.

``default_collate`` stacks (torch's). ``pseudo_collate`` stacks nothing: a batch of dict samples becomes a
dict of lists, so samples of different sizes can share a batch; ``model.data_preprocessor``
(``ImgDataPreprocessor``) then pads and stacks them on the device, as mmengine's does.

    train_dataloader = dict(batch_size=8, collate_fn=dict(type="pseudo_collate"), dataset=...)
    model = dict(type="ShapesFCN", data_preprocessor=dict(type="ImgDataPreprocessor", pad_size_divisor=8))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from torchyard.trainer.config import ConfigError


def pseudo_collate(samples: Sequence[Any]) -> Any:
    """The samples side by side: per key for mappings, per position for tuples, else a list."""
    first = samples[0]
    if isinstance(first, Mapping):
        return {key: pseudo_collate([sample[key] for sample in samples]) for key in first}
    if isinstance(first, tuple):
        if any(len(sample) != len(first) for sample in samples):
            raise ConfigError("collate_fn=pseudo_collate: the samples of a batch are tuples of different "
                              "lengths; a dataset's samples must all have the same fields")
        return [pseudo_collate(list(position)) for position in zip(*samples, strict=True)]
    return list(samples)


COLLATE_FUNCTIONS: dict[str, Callable[[Sequence[Any]], Any]] = {
    "default_collate": default_collate,
    "pseudo_collate": pseudo_collate,
}


def build_collate(cfg: dict | None, where: str) -> Callable[[Sequence[Any]], Any]:
    cfg = cfg or {}
    name = cfg.get("type", "default_collate")
    if name not in COLLATE_FUNCTIONS or set(cfg) - {"type"}:
        raise ConfigError(f"{where}.collate_fn: {cfg!r} is not supported; use "
                          "dict(type='default_collate') (stacked) or dict(type='pseudo_collate') (lists, "
                          "stacked by the data_preprocessor)")
    return COLLATE_FUNCTIONS[name]


def stack_images(images: list[torch.Tensor], pad_size_divisor: int, pad_value: float) -> torch.Tensor:
    """[C, H, W] images of any sizes as one [N, C, H', W'] batch, each padded at its bottom and right to the
    largest height and width, rounded up to a multiple of ``pad_size_divisor`` (mmengine's stack_batch)."""
    if len({image.shape[0] for image in images}) > 1 or any(image.dim() != 3 for image in images):
        raise ConfigError("ImgDataPreprocessor: pseudo_collate's inputs must be [C, H, W] images with the "
                          f"same number of channels; got shapes {[tuple(image.shape) for image in images]}")
    height = max(image.shape[1] for image in images)
    width = max(image.shape[2] for image in images)
    height += -height % pad_size_divisor
    width += -width % pad_size_divisor
    return torch.stack([F.pad(image, (0, width - image.shape[2], 0, height - image.shape[1]), value=pad_value)
                        for image in images])


def stack_fields(batch: dict) -> dict:
    """The fields besides ``inputs`` that pseudo_collate left as lists of tensors or numbers, stacked (targets
    of equal shape); others (strings, data samples of varying shapes) stay lists."""
    stacked = {}
    for key, value in batch.items():
        if key != "inputs" and isinstance(value, list) and value and _stackable(value):
            value = default_collate(value)
        stacked[key] = value
    return stacked


def _stackable(values: list) -> bool:
    if all(isinstance(value, torch.Tensor) for value in values):
        return len({value.shape for value in values}) == 1
    return all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values)
