"""Datasets, transforms, samplers and data loaders built from ``*_dataloader`` configs.

Training samplers shard and shuffle like ``DistributedSampler`` and can start mid-epoch, which is what makes
resuming at an arbitrary iteration exact. Evaluation samplers shard without padding, so no sample is counted
twice when the data set size is not divisible by the number of processes.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from torchyard.trainer.collate import build_collate
from torchyard.trainer.config import ConfigError
from torchyard.trainer.dist import DistEnv
from torchyard.trainer.registry import DATASETS, TRANSFORMS


@TRANSFORMS.register()
class RandomShift:
    """Shift an image by up to ``max_shift`` pixels, filling with zeros.

    Cheap augmentation for small digits.
    """

    def __init__(self, max_shift: int = 1) -> None:
        self.max_shift = max_shift

    def __call__(self, sample: dict) -> dict:
        image = sample["inputs"]
        dy, dx = torch.randint(-self.max_shift, self.max_shift + 1, (2,)).tolist()
        shifted = torch.zeros_like(image)
        h, w = image.shape[-2:]
        shifted[..., max(dy, 0): h + min(dy, 0), max(dx, 0): w + min(dx, 0)] = \
            image[..., max(-dy, 0): h + min(-dy, 0), max(-dx, 0): w + min(-dx, 0)]
        return {**sample, "inputs": shifted}


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (images [1797, 8, 8] of 0-16, labels [1797]), read from the file it ships:
    what sklearn.datasets.load_digits returns, without importing scikit-learn (about a second at start)."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets/data/digits.csv.gz" if spec else None
    if path is None or not path.is_file():
        raise ConfigError("DigitsDataset: scikit-learn's digits file is missing; install torchyard[trainer] "
                          "(it brings scikit-learn)")
    data = np.loadtxt(path, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


@DATASETS.register()
class DigitsDataset(Dataset):
    """scikit-learn's 1,797 handwritten 8x8 digits (shipped with the package, no download), split
    reproducibly into train (80%), val (10%, to validate and pick checkpoints) and test (10%, held out).

    Items are ``{"inputs": float tensor [1, 8, 8] in [0, 1], "targets": int, "index": int}``.
    """

    splits = ("train", "val", "test")

    def __init__(self, split: str = "train", val_fraction: float = 0.1, test_fraction: float = 0.1,
                 split_seed: int = 0, pipeline: Sequence[dict] = ()) -> None:
        if split not in self.splits:
            raise ConfigError(f"DigitsDataset.split: {split!r} is not one of {', '.join(self.splits)}")
        fractions_fit = 0.0 < val_fraction < 1.0 and 0.0 < test_fraction < 1.0
        if not fractions_fit or val_fraction + test_fraction >= 1.0:
            raise ConfigError(f"DigitsDataset: val_fraction and test_fraction must be between 0 and 1, and "
                              f"leave images to train on; got {val_fraction} and {test_fraction}")
        images, labels = load_digits()
        order = np.random.default_rng(split_seed).permutation(len(labels))
        # Three disjoint sets: the test images are never used to train or to pick a checkpoint.
        held_out = round(len(order) * (val_fraction + test_fraction))
        n_val = round(len(order) * val_fraction)
        chosen = {"train": order[held_out:], "val": order[:n_val], "test": order[n_val:held_out]}[split]
        self.images = torch.from_numpy(images[chosen] / 16.0).float().unsqueeze(1)
        self.targets = torch.from_numpy(labels[chosen]).long()
        self.classes = [str(i) for i in range(10)]
        self.pipeline = [TRANSFORMS.build(t, where=f"pipeline[{i}]") for i, t in enumerate(pipeline)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> dict:
        sample = {"inputs": self.images[index], "targets": self.targets[index], "index": index}
        for transform in self.pipeline:
            sample = transform(sample)
        return sample


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` that can skip the samples this rank already consumed in the current epoch."""

    def __init__(self, dataset: Dataset, env: DistEnv, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False) -> None:
        super().__init__(dataset, num_replicas=env.world_size, rank=env.rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.start_index = 0

    def set_position(self, epoch: int, start_index: int) -> None:
        """Shuffle for ``epoch`` and skip its first ``start_index`` samples (those a resumed run has seen)."""
        self.set_epoch(epoch)
        self.start_index = start_index

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start_index:])

    def __len__(self) -> int:
        return self.num_samples - self.start_index


class ShardSampler(Sampler[int]):
    """Every ``world_size``-th index from ``rank``, in order, with no padding."""

    def __init__(self, dataset: Dataset, env: DistEnv) -> None:
        self.indices = range(env.rank, len(dataset), env.world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


LOADER_KEYS = {"batch_size", "num_workers", "dataset", "sampler", "persistent_workers", "pin_memory",
               "drop_last", "collate_fn"}
# mmengine's two samplers act alike here: the loop passes over the data in epochs either way, reshuffling
# each pass, and resumes mid-pass.
SAMPLERS = {"DefaultSampler", "InfiniteSampler"}
SAMPLER_KEYS = {"type", "shuffle", "seed", "round_up"}


def _check_loader_keys(cfg: dict, where: str) -> None:
    unknown = sorted(set(cfg) - LOADER_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; "
                          f"known: {', '.join(sorted(LOADER_KEYS))}")
    sampler = cfg.get("sampler") or {}
    if sampler.get("type", "DefaultSampler") not in SAMPLERS or set(sampler) - SAMPLER_KEYS:
        raise ConfigError(f"{where}.sampler: {sampler!r} is not supported; use dict(type='DefaultSampler' or "
                          "'InfiniteSampler', shuffle=True/False)")
    if sampler.get("round_up", True) is not True:
        raise ConfigError(f"{where}.sampler.round_up: only True is supported (ranks get equal shares, "
                          "the last padded with repeated samples)")
    if sampler.get("seed") is not None:
        raise ConfigError(f"{where}.sampler.seed: set randomness.seed instead, which seeds the sampler too")
    build_collate(cfg.get("collate_fn"), where)


def build_dataloader(cfg: dict, env: DistEnv, seed: int, train: bool, where: str) -> DataLoader:
    """``cfg``: ``dict(batch_size, num_workers=0, dataset=dict(type=...), sampler=dict(shuffle=True))``."""
    if "dataset" not in cfg or "batch_size" not in cfg:
        raise ConfigError(f"{where}: needs 'dataset' and 'batch_size' (e.g. dict(batch_size=64, "
                          "dataset=dict(type='DigitsDataset', split='train')))")
    for key, least in (("batch_size", 1), ("num_workers", 0)):
        value = cfg.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            kind = "a positive" if least else "a non-negative"
            raise ConfigError(f"{where}.{key}: must be {kind} integer, got {value!r}")
    _check_loader_keys(cfg, where)
    dataset = DATASETS.build(cfg["dataset"], where=f"{where}.dataset")
    num_workers = cfg.get("num_workers", 0)
    sampler_cfg = cfg.get("sampler") or {}
    if train:
        sampler = ResumableSampler(dataset, env, shuffle=sampler_cfg.get("shuffle", True), seed=seed,
                                   drop_last=cfg.get("drop_last", False))
    else:
        sampler = ShardSampler(dataset, env)
    # A seeded generator makes torch derive the same per-worker seeds (torch, random and NumPy) every run.
    generator = torch.Generator().manual_seed(seed * 100_003 + env.rank)
    return DataLoader(
        dataset,
        batch_size=cfg["batch_size"],
        sampler=sampler,
        num_workers=num_workers,
        persistent_workers=cfg.get("persistent_workers", False) and num_workers > 0,
        pin_memory=cfg.get("pin_memory", False),
        drop_last=cfg.get("drop_last", False),
        collate_fn=build_collate(cfg.get("collate_fn"), where),
        generator=generator,
    )


def set_train_position(loader: DataLoader, epoch: int, start_index: int) -> None:
    """Position a training loader.

    Reseeding its generator per epoch keeps worker seeds the same after a resume.
    """
    loader.sampler.set_position(epoch, start_index)
    loader.generator.manual_seed(loader.sampler.seed * 100_003 + epoch * 1009 + loader.sampler.rank)
