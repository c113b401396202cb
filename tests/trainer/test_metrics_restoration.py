"""PSNR and SSIM against scikit-image's implementations, with matching settings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from torchyard.trainer.config import ConfigError
from torchyard.trainer.dist import DistEnv
from torchyard.trainer.evaluation import _gather_records
from torchyard.trainer.metrics.restoration import PSNR, SSIM


def image_pairs(n: int = 3, size: tuple[int, int] = (24, 30), seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Smooth-ish images in [0, 1] and noisy versions of them, [N, 3, H, W] float64."""
    generator = torch.Generator().manual_seed(seed)
    clean = torch.nn.functional.avg_pool2d(torch.rand(n, 3, size[0] + 2, size[1] + 2, generator=generator,
                                                      dtype=torch.float64), 3, stride=1)
    noisy = (clean + 0.05 * torch.randn(clean.shape, generator=generator, dtype=torch.float64)).clamp(0, 1)
    return noisy, clean


def run(metric, preds: torch.Tensor, gts: torch.Tensor, **batch) -> float:
    metric.process({"index": torch.arange(len(gts)), "targets": gts, **batch}, preds)
    (value,) = metric.compute(_gather_records(metric.records, DistEnv())).values()
    return value


def hwc(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).numpy()


def luma(image: torch.Tensor) -> np.ndarray:
    """scikit-image's Y, in [16, 235] for RGB in [0, 1]: BT.601 luma on a 255 scale."""
    return rgb2ycbcr(hwc(image))[..., 0]


def crop(image: np.ndarray, border: int) -> np.ndarray:
    return image[border:-border, border:-border] if border else image


@pytest.mark.parametrize("crop_border", [0, 4])
def test_psnr_rgb_matches_skimage_per_image_then_averaged(crop_border):
    preds, gts = image_pairs()
    expected = np.mean([peak_signal_noise_ratio(crop(hwc(g), crop_border), crop(hwc(p), crop_border),
                                                data_range=1) for p, g in zip(preds, gts, strict=True)])
    assert run(PSNR(crop_border=crop_border), preds, gts) == pytest.approx(expected, rel=1e-12)


def test_psnr_on_the_y_channel_matches_skimage_rgb2ycbcr():
    preds, gts = image_pairs()
    expected = np.mean([peak_signal_noise_ratio(crop(luma(g), 2), crop(luma(p), 2), data_range=255)
                        for p, g in zip(preds, gts, strict=True)])
    assert run(PSNR(crop_border=2, convert_to="Y"), preds, gts) == pytest.approx(expected, rel=1e-9)


def test_data_range_and_hwc_input_order():
    preds, gts = image_pairs()
    expected = run(PSNR(), preds, gts)
    as_bytes = [x.permute(0, 2, 3, 1) * 255 for x in (preds, gts)]
    assert run(PSNR(data_range=255, input_order="HWC"), *as_bytes) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("crop_border", [0, 3])
def test_ssim_rgb_matches_skimage_gaussian_ssim(crop_border):
    preds, gts = image_pairs()
    expected = np.mean([
        structural_similarity(crop(hwc(g), crop_border), crop(hwc(p), crop_border), data_range=1,
                              channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        for p, g in zip(preds, gts, strict=True)])
    assert run(SSIM(crop_border=crop_border), preds, gts) == pytest.approx(expected, rel=1e-9)


def test_ssim_on_the_y_channel_matches_skimage():
    preds, gts = image_pairs()
    expected = np.mean([
        structural_similarity(luma(g), luma(p), data_range=255,
                              gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        for p, g in zip(preds, gts, strict=True)])
    assert run(SSIM(convert_to="Y"), preds, gts) == pytest.approx(expected, rel=1e-9)


def test_identical_images_score_inf_psnr_and_ssim_one():
    _, gts = image_pairs(n=2)
    assert run(PSNR(), gts, gts) == math.inf
    assert run(SSIM(), gts, gts) == pytest.approx(1.0)


def test_pred_key_scores_a_batch_entry_such_as_the_bicubic_input():
    preds, gts = image_pairs()
    model_output = gts.clone()
    assert run(PSNR(pred_key="inputs"), model_output, gts, inputs=preds) == run(PSNR(), preds, gts)
    with pytest.raises(ConfigError, match="pred_key='lq': the batch has no such key"):
        run(PSNR(pred_key="lq"), preds, gts)


def test_records_split_over_ranks_give_the_one_pass_result():
    preds, gts = image_pairs(n=5)
    for metric_type in (PSNR, SSIM):
        single = metric_type(convert_to="Y")
        single.process({"index": torch.arange(5), "targets": gts}, preds)
        ranks = [metric_type(convert_to="Y"), metric_type(convert_to="Y")]
        ranks[0].process({"index": torch.tensor([0, 2, 4]), "targets": gts[0::2]}, preds[0::2])
        ranks[1].process({"index": torch.tensor([1, 3, 0]), "targets": gts[[1, 3, 0]]}, preds[[1, 3, 0]])
        merged = _gather_records(ranks[0].records + ranks[1].records, DistEnv())
        assert single.compute(_gather_records(single.records, DistEnv())) == metric_type().compute(merged)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(input_order="NCHW"), "input_order must be 'CHW' or 'HWC'"),
    (dict(convert_to="YCbCr"), "convert_to must be None"),
    (dict(crop_border=-1), "crop_border must be >= 0"),
])
def test_bad_options_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PSNR(**kwargs)


def test_shape_mismatch_and_too_small_images_are_explained():
    preds, gts = image_pairs(n=1)
    with pytest.raises(ConfigError, match="differ in shape"):
        run(PSNR(), preds[..., :-1], gts)
    with pytest.raises(ConfigError, match="at least 11x11 pixels after crop_border"):
        run(SSIM(crop_border=8), preds, gts)
    with pytest.raises(ConfigError, match="needs RGB images, got 1 channel"):
        run(PSNR(convert_to="Y"), preds[:, :1], gts[:, :1])
