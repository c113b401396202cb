import pytest
import torch

from torchyard.trainer.collate import build_collate, pseudo_collate, stack_fields, stack_images
from torchyard.trainer.config import ConfigError


def test_pseudo_collate_puts_samples_side_by_side_without_stacking() -> None:
    samples = [{"inputs": torch.zeros(1, 2, 3), "targets": 1, "meta": ("a", 0)},
               {"inputs": torch.zeros(1, 4, 5), "targets": 2, "meta": ("b", 1)}]

    batch = pseudo_collate(samples)

    assert [tuple(image.shape) for image in batch["inputs"]] == [(1, 2, 3), (1, 4, 5)]
    assert batch["targets"] == [1, 2]
    assert batch["meta"] == [["a", "b"], [0, 1]]  # per position, as mmengine's pseudo_collate


def test_pseudo_collate_refuses_tuples_of_different_lengths() -> None:
    with pytest.raises(ConfigError, match="tuples of different lengths"):
        pseudo_collate([(1, 2), (1,)])


def test_stack_images_pads_bottom_and_right_to_the_largest_rounded_up() -> None:
    stacked = stack_images([torch.ones(2, 3, 3), torch.ones(2, 5, 1)], pad_size_divisor=2, pad_value=0)

    assert stacked.shape == (2, 2, 6, 4)
    assert stacked[0, :, :3, :3].all() and not stacked[0, :, 3:].any() and not stacked[1, :, :, 1:].any()
    with pytest.raises(ConfigError, match=r"same number of channels; got shapes \[\(1, 2, 2\), \(3, 2, 2\)"):
        stack_images([torch.ones(1, 2, 2), torch.ones(3, 2, 2)], 1, 0)


def test_stack_fields_stacks_equal_tensors_and_numbers_and_leaves_the_rest() -> None:
    batch = {"inputs": [torch.ones(1, 2, 2)], "targets": [3, 4], "masks": [torch.ones(2), torch.ones(3)],
             "labels": [torch.tensor(1), torch.tensor(2)], "name": ["x", "y"]}

    stacked = stack_fields(batch)

    assert torch.equal(stacked["targets"], torch.tensor([3, 4]))
    assert torch.equal(stacked["labels"], torch.tensor([1, 2]))
    assert isinstance(stacked["masks"], list) and stacked["name"] == ["x", "y"]
    assert isinstance(stacked["inputs"], list)  # the images are the preprocessor's to pad


def test_build_collate_by_name() -> None:
    assert build_collate(None, "train_dataloader") is build_collate(dict(type="default_collate"), "x")
    assert build_collate(dict(type="pseudo_collate"), "x") is pseudo_collate
    with pytest.raises(ConfigError, match=r"val_dataloader.collate_fn: .*'numpy_collate'.* is not supported"):
        build_collate(dict(type="numpy_collate"), "val_dataloader")
