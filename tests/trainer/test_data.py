import collections

import pytest
import sklearn.datasets
import torch
from torch.utils.data import Dataset

from torchyard.trainer.config import ConfigError
from torchyard.trainer.data import (
    DigitsDataset,
    RandomShift,
    ResumableSampler,
    ShardSampler,
    build_dataloader,
    load_digits,
    set_train_position,
)
from torchyard.trainer.dist import DistEnv


class Range(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        return {"inputs": torch.tensor([float(index)]), "index": index}


def env(rank: int = 0, world_size: int = 1) -> DistEnv:
    return DistEnv(rank=rank, world_size=world_size)


def image_counter(dataset: DigitsDataset) -> collections.Counter:
    """The (image, label) multiset of a split, so that duplicates between splits would show."""
    return collections.Counter((bytes((dataset.images[i] * 16).round().byte().flatten().tolist()),
                                int(dataset.targets[i])) for i in range(len(dataset)))


# ---- DigitsDataset -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def splits() -> dict[str, DigitsDataset]:
    return {split: DigitsDataset(split) for split in DigitsDataset.splits}


def test_digits_train_and_held_out_cover_all_1797_images_disjointly(splits: dict[str, DigitsDataset]) -> None:
    digits = sklearn.datasets.load_digits()
    everything = collections.Counter((bytes(image.astype("uint8").flatten().tolist()), int(target))
                                     for image, target in zip(digits.images, digits.target, strict=True))

    assert [len(splits[split]) for split in ("train", "val", "test")] == [1438, 180, 179]
    assert image_counter(splits["train"]) + image_counter(splits["val"]) + image_counter(splits["test"]) \
        == everything


def test_digits_are_what_scikit_learn_loads_read_without_importing_it() -> None:
    images, labels = load_digits()
    digits = sklearn.datasets.load_digits()

    assert (images == digits.images).all() and (labels == digits.target).all()
    assert images.dtype == digits.images.dtype and labels.dtype == digits.target.dtype


def test_digits_test_images_are_none_of_the_validation_ones(splits: dict[str, DigitsDataset]) -> None:
    val = {bytes(image.numpy().tobytes()) for image in splits["val"].images}
    assert not any(bytes(image.numpy().tobytes()) in val for image in splits["test"].images)


def test_digits_split_is_deterministic_and_depends_on_split_seed(splits: dict[str, DigitsDataset]) -> None:
    assert torch.equal(DigitsDataset("train").images, splits["train"].images)
    assert not torch.equal(DigitsDataset("train", split_seed=1).images, splits["train"].images)


def test_digits_items_are_unit_range_1x8x8_images(splits: dict[str, DigitsDataset]) -> None:
    item = splits["train"][5]

    assert item["inputs"].shape == (1, 8, 8) and item["inputs"].dtype == torch.float32
    assert item["index"] == 5 and 0 <= int(item["targets"]) <= 9
    images = splits["train"].images
    assert images.min() == 0.0 and images.max() == 1.0
    assert set(splits["train"].targets.tolist()) == set(range(10))


def test_digits_pipeline_is_built_from_config(splits: dict[str, DigitsDataset]) -> None:
    dataset = DigitsDataset("train", pipeline=[{"type": "RandomShift", "max_shift": 2}])

    assert isinstance(dataset.pipeline[0], RandomShift) and dataset.pipeline[0].max_shift == 2
    assert dataset[0]["inputs"].shape == (1, 8, 8)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"split": "validation"}, "DigitsDataset.split: 'validation' is not one of train, val, test"),
    ({"val_fraction": 1.0}, "val_fraction and test_fraction must be between 0 and 1"),
    ({"val_fraction": 0.5, "test_fraction": 0.5}, "leave images to train on"),
    ({"pipeline": [{"type": "RandomShif"}]}, r"pipeline\[0\]\.type: .*Did you mean 'RandomShift'"),
])
def test_digits_bad_arguments_are_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DigitsDataset(**kwargs)


# ---- RandomShift -------------------------------------------------------------------------------------


def test_random_shift_moves_pixels_by_at_most_max_shift_and_keeps_shape() -> None:
    image = torch.zeros(1, 8, 8)
    image[0, 4, 4] = 1.0
    torch.manual_seed(0)
    positions = set()
    for _ in range(200):
        sample = RandomShift(max_shift=1)({"inputs": image, "targets": 3, "index": 7})
        assert sample["inputs"].shape == (1, 8, 8)
        assert (sample["targets"], sample["index"]) == (3, 7)
        assert sample["inputs"].sum() == 1.0  # moved, not blurred or lost
        (y, x), = sample["inputs"][0].nonzero().tolist()
        positions.add((y - 4, x - 4))

    assert positions == {(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    assert image[0, 4, 4] == 1.0  # the input is not modified


def test_random_shift_fills_with_zeros_at_the_border() -> None:
    image = torch.ones(1, 8, 8)
    torch.manual_seed(0)
    for _ in range(50):
        shifted = RandomShift(max_shift=2)({"inputs": image})["inputs"]
        rows, cols = (shifted[0] == 1).any(dim=1).sum().item(), (shifted[0] == 1).any(dim=0).sum().item()
        assert shifted.sum() == rows * cols and rows >= 6 and cols >= 6


# ---- samplers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("world_size", [1, 2])
@pytest.mark.parametrize("shuffle", [True, False])
def test_resumable_sampler_resumes_mid_epoch_exactly(world_size: int, shuffle: bool) -> None:
    dataset = Range(23)
    for rank in range(world_size):
        for epoch in range(3):
            full = ResumableSampler(dataset, env(rank, world_size), shuffle=shuffle, seed=7)
            full.set_position(epoch, 0)
            indices = list(full)
            for k in (0, 1, 5, len(indices) - 1, len(indices)):
                resumed = ResumableSampler(dataset, env(rank, world_size), shuffle=shuffle, seed=7)
                resumed.set_position(epoch, k)

                assert indices[:k] + list(resumed) == indices
                assert len(resumed) == len(indices) - k


def test_resumable_sampler_shuffles_differently_per_epoch_and_shards_per_rank() -> None:
    dataset = Range(40)
    samplers = [ResumableSampler(dataset, env(rank, 2), seed=0) for rank in range(2)]
    epochs = []
    for epoch in range(2):
        for sampler in samplers:
            sampler.set_position(epoch, 0)
        epochs.append([list(sampler) for sampler in samplers])

    assert epochs[0] != epochs[1]
    for rank0, rank1 in epochs:
        assert sorted(rank0 + rank1) == list(range(40))


@pytest.mark.parametrize(("n", "world_size"), [(10, 2), (11, 2), (10, 3), (11, 3), (2, 3)])
def test_shard_sampler_covers_every_index_exactly_once_without_padding(n: int, world_size: int) -> None:
    shards = [list(ShardSampler(Range(n), env(rank, world_size))) for rank in range(world_size)]

    assert sorted(index for shard in shards for index in shard) == list(range(n))
    assert sum(len(ShardSampler(Range(n), env(rank, world_size))) for rank in range(world_size)) == n
    assert all(shard == sorted(shard) for shard in shards)


# ---- build_dataloader --------------------------------------------------------------------------------


DIGITS_LOADER = {"batch_size": 16, "dataset": {"type": "DigitsDataset", "split": "val"}}


@pytest.mark.parametrize("missing", ["dataset", "batch_size"])
def test_build_dataloader_needs_dataset_and_batch_size(missing: str) -> None:
    cfg = {k: v for k, v in DIGITS_LOADER.items() if k != missing}

    with pytest.raises(ConfigError, match=r"^val_dataloader: needs 'dataset' and 'batch_size'"):
        build_dataloader(cfg, env(), seed=0, train=False, where="val_dataloader")


def test_build_dataloader_unknown_dataset_names_the_key() -> None:
    cfg = {**DIGITS_LOADER, "dataset": {"type": "Digits"}}

    with pytest.raises(ConfigError, match=r"^train_dataloader\.dataset\.type: 'Digits' is not a registered"):
        build_dataloader(cfg, env(), seed=0, train=True, where="train_dataloader")


def test_eval_dataloader_shards_in_order_without_padding() -> None:
    test_split = {**DIGITS_LOADER, "dataset": {"type": "DigitsDataset", "split": "test"}}  # 179: odd
    loaders = [build_dataloader(test_split, env(rank, 2), seed=0, train=False, where="test_dataloader")
               for rank in range(2)]

    seen = [int(i) for loader in loaders for batch in loader for i in batch["index"]]
    assert sorted(seen) == list(range(179))
    assert isinstance(loaders[1].sampler, ShardSampler)


def test_train_dataloader_uses_a_resumable_sampler_and_its_options() -> None:
    cfg = {**DIGITS_LOADER, "dataset": {"type": "DigitsDataset"}, "sampler": {"shuffle": False},
           "drop_last": True}

    loader = build_dataloader(cfg, env(1, 2), seed=3, train=True, where="train_dataloader")

    assert isinstance(loader.sampler, ResumableSampler)
    assert (loader.sampler.shuffle, loader.sampler.seed, loader.sampler.rank) == (False, 3, 1)
    assert len(loader) == 719 // 16 and loader.drop_last


def test_set_train_position_makes_generator_state_a_function_of_seed_epoch_and_rank() -> None:
    def state_after(seed: int, rank: int, epoch: int, disturb: int) -> torch.Tensor:
        cfg = {"batch_size": 4, "dataset": {"type": "DigitsDataset"}}
        loader = build_dataloader(cfg, env(rank, 2), seed=seed, train=True, where="train_dataloader")
        for _ in range(disturb):  # earlier epochs in this process draw from the generator
            iter(loader)
        torch.randint(10, (disturb + 1,), generator=loader.generator)
        set_train_position(loader, epoch, 8)
        assert loader.sampler.epoch == epoch and loader.sampler.start_index == 8
        return loader.generator.get_state()

    reference = state_after(seed=1, rank=0, epoch=2, disturb=0)

    assert torch.equal(state_after(seed=1, rank=0, epoch=2, disturb=3), reference)
    others = [state_after(1, 1, 2, 0), state_after(1, 0, 3, 0), state_after(2, 0, 2, 0)]
    assert not any(torch.equal(other, reference) for other in others)
    assert not torch.equal(others[0], others[1])


def test_set_train_position_resumes_the_batches_of_an_uninterrupted_epoch() -> None:
    cfg = {"batch_size": 8, "dataset": {"type": "DigitsDataset", "split": "val"}}
    full = build_dataloader(cfg, env(0, 2), seed=5, train=True, where="train_dataloader")
    set_train_position(full, epoch=1, start_index=0)
    batches = [batch["index"].tolist() for batch in full]
    resumed = build_dataloader(cfg, env(0, 2), seed=5, train=True, where="train_dataloader")

    set_train_position(resumed, epoch=1, start_index=3 * 8)

    assert [batch["index"].tolist() for batch in resumed] == batches[3:]
