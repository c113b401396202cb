import pytest
import torch

from torchyard.trainer.config import Config, ConfigError
from torchyard.trainer.hooks import Hook
from torchyard.trainer.preprocess import ImgDataPreprocessor, build_data_preprocessor
from torchyard.trainer.runner import Runner

from .runner_helpers import make_cfg


def test_normalises_per_channel_swaps_and_pads() -> None:
    preprocess = ImgDataPreprocessor(mean=[1.0, 2.0, 3.0], std=[2.0, 2.0, 2.0], bgr_to_rgb=True,
                                     pad_size_divisor=4, pad_value=-1)
    inputs = torch.stack([torch.full((5, 6), float(c)) for c in (3, 2, 1)]).unsqueeze(0)  # BGR: 3, 2, 1

    out = preprocess({"inputs": inputs, "targets": torch.tensor([7])}, training=True)["inputs"]

    assert out.shape == (1, 3, 8, 8)
    assert out[0, :, :5, :6].unique().tolist() == [0.0]  # RGB 1, 2, 3 minus the mean
    assert out[0, :, 5:, :].unique().tolist() == [-1.0] and out[0, :, :, 6:].unique().tolist() == [-1.0]


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(mean=[0.5]), "give mean and std together"),
    (dict(bgr_to_rgb=True, rgb_to_bgr=True), "cannot both be True"),
    (dict(mean=[0.5], std=[0.0]), "has a zero"),
    (dict(pad_size_divisor=0), "pad_size_divisor must be >= 1"),
])
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ImgDataPreprocessor(**kwargs)


def test_a_top_level_data_preprocessor_serves_a_model_that_names_none() -> None:
    top = dict(type="ImgDataPreprocessor", mean=[0.5], std=[0.5])
    cfg = {"model": dict(type="DigitsCNN"), "data_preprocessor": top}
    model_cfg, preprocessor = build_data_preprocessor(cfg)

    assert model_cfg == dict(type="DigitsCNN") and isinstance(preprocessor, ImgDataPreprocessor)


class SeenInputs(Hook):
    def after_val_iter(self, runner, batch, outputs) -> None:
        type(self).mean = float(batch["inputs"].mean())


def test_validation_sees_the_preprocessed_batch(tmp_path) -> None:
    preprocessor = dict(type="ImgDataPreprocessor", mean=[100.0], std=[1.0])
    cfg = make_cfg(tmp_path, model=dict(type="DigitsCNN", channels=4, data_preprocessor=preprocessor),
                   custom_hooks=[dict(type=SeenInputs)], train_cfg=dict(by_epoch=True, max_epochs=1))
    Runner(Config(cfg)).train()

    assert SeenInputs.mean < -99  # digits in [0, 1], minus 100


# ---- after pseudo_collate ----------------------------------------------------------------------------------


def test_lists_of_images_of_any_size_are_normalised_then_padded_and_stacked() -> None:
    preprocess = ImgDataPreprocessor(mean=[1.0], std=[2.0], pad_size_divisor=4, pad_value=-9)
    images = [torch.full((1, 5, 3), 3.0), torch.full((1, 2, 7), 5.0)]

    batch = preprocess({"inputs": images, "targets": [1, 2], "name": ["a", "b"]}, training=False)

    assert batch["inputs"].shape == (2, 1, 8, 8)  # 5x7 at most, rounded up to multiples of 4
    assert batch["inputs"][0, 0, :5, :3].unique().tolist() == [1.0]
    assert batch["inputs"][1, 0, :2, :7].unique().tolist() == [2.0]
    assert batch["inputs"][0, 0, 5:].unique().tolist() == [-9.0]
    assert torch.equal(batch["targets"], torch.tensor([1, 2])) and batch["name"] == ["a", "b"]


def test_pseudo_collate_then_the_preprocessor_trains_exactly_as_default_collate(tmp_path) -> None:
    preprocessor = dict(type="ImgDataPreprocessor", mean=[0.5], std=[0.25])
    losses = {}
    for collate in ("default_collate", "pseudo_collate"):
        model = dict(type="DigitsCNN", channels=4, data_preprocessor=preprocessor)
        cfg = make_cfg(tmp_path / collate, model=model, train_cfg=dict(by_epoch=True, max_epochs=1))
        for loader in ("train_dataloader", "val_dataloader"):
            cfg[loader] = {**cfg[loader], "collate_fn": dict(type=collate)}
        runner = Runner(Config(cfg))
        metrics = runner.train()
        losses[collate] = (metrics, [p.detach().clone() for p in runner.unwrapped_model.parameters()])

    assert losses["default_collate"][0] == losses["pseudo_collate"][0]
    for a, b in zip(losses["default_collate"][1], losses["pseudo_collate"][1], strict=True):
        assert torch.equal(a, b)


def test_pseudo_collate_into_a_builtin_model_without_a_stacking_preprocessor_says_what_to_add(tmp_path):
    cfg = make_cfg(tmp_path, model=dict(type="DigitsCNN", channels=4))
    cfg["val_dataloader"] = {**cfg["val_dataloader"], "collate_fn": dict(type="pseudo_collate")}

    with pytest.raises(ConfigError, match=r"val_dataloader.collate_fn=pseudo_collate leaves each batch as "
                                          r"lists, and DigitsCNN takes stacked tensors: add "
                                          r"model.data_preprocessor=dict\(type='ImgDataPreprocessor'\)"):
        Runner(Config(cfg))
