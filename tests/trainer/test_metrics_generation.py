"""FID against the closed-form Fréchet distance of known Gaussians, IS on hand-made probability tables, the
real-statistics cache, and extractor errors. The 2-process run is in test_tasks_generation.py (with a VAE)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import torchyard.trainer.tasks  # noqa: F401 - registers DigitsFeatureNet, the default extractor
from torchyard.trainer.checkpoint import save_checkpoint
from torchyard.trainer.config import ConfigError
from torchyard.trainer.dist import DistEnv
from torchyard.trainer.evaluation import BaseMetric, Evaluator
from torchyard.trainer.metrics.generation import (
    DEFAULT_EXTRACTOR,
    FrechetInceptionDistance,
    InceptionScore,
    batch_invariant,
)
from torchyard.trainer.registry import METRICS


class Identity(nn.Module):
    """An extractor that hands the "images" through: features as given, rows of probabilities as logits."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1) * self.scale

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1).log()


IDENTITY = dict(type=Identity)


def evaluate(metric: BaseMetric, real: torch.Tensor, fake: torch.Tensor,
             batch_size: int = 16) -> dict[str, float]:
    evaluator = Evaluator([metric])
    for start in range(0, len(fake), batch_size):
        stop = min(start + batch_size, len(fake))
        evaluator.process({"inputs": real[start:stop], "index": torch.arange(start, stop)}, fake[start:stop])
    return evaluator.evaluate(DistEnv())


def gaussian_samples(mean: np.ndarray, cov: np.ndarray, n: int, seed: int) -> torch.Tensor:
    """Samples whose sample mean and covariance (N - 1 denominator) are exactly ``mean`` and ``cov``."""
    x = np.random.default_rng(seed).standard_normal((n, len(mean)))
    x -= x.mean(axis=0)
    x = x @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False))).T  # sample covariance now exactly I
    return torch.from_numpy(mean + x @ np.linalg.cholesky(cov).T)


def test_fid_of_diagonal_gaussians_matches_the_closed_form():
    mean1, mean2 = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 1.0, 0.0, -0.5])
    var1, var2 = np.array([1.0, 4.0, 0.25, 2.0]), np.array([9.0, 1.0, 0.25, 0.5])
    real = gaussian_samples(mean1, np.diag(var1), 200, seed=0)
    fake = gaussian_samples(mean2, np.diag(var2), 300, seed=1)[:200]  # 200 of them: other sample moments
    exact_fake = gaussian_samples(mean2, np.diag(var2), 200, seed=1)

    result = evaluate(FrechetInceptionDistance(extractor=IDENTITY, prefix="FID-Full-50k"), real, exact_fake)

    expected = np.sum((mean1 - mean2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    assert result == {"FID-Full-50k/fid": pytest.approx(expected, rel=1e-9)}
    inexact = evaluate(FrechetInceptionDistance(extractor=IDENTITY), real, fake)["FID/fid"]
    assert inexact != pytest.approx(expected)


def test_fid_of_a_full_covariance_and_its_scaled_copy_matches_the_closed_form():
    a = np.random.default_rng(2).standard_normal((6, 6))
    cov = a @ a.T + 0.1 * np.eye(6)
    mean1, mean2 = np.zeros(6), np.full(6, 0.5)
    real = gaussian_samples(mean1, cov, 100, seed=3)
    fake = gaussian_samples(mean2, 9 * cov, 100, seed=4)

    # tr(S + 9S - 2 (S 9S)^(1/2)) = (1 + 9 - 6) tr(S)
    expected = np.sum((mean1 - mean2) ** 2) + 4 * np.trace(cov)
    assert evaluate(FrechetInceptionDistance(extractor=IDENTITY), real, fake)["FID/fid"] == pytest.approx(
        expected, rel=1e-8)


def test_fid_with_singular_covariances_is_finite_and_quiet():
    """Features that never fire (ReLU) make both covariances singular; the result is still the closed form."""
    mean1, mean2 = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 0.0])
    var1, var2 = np.array([4.0, 1.0, 1e-300]), np.array([1.0, 1.0, 1e-300])
    real = gaussian_samples(mean1, np.diag(var1), 50, seed=5)
    fake = gaussian_samples(mean2, np.diag(var2), 50, seed=6)
    real[:, 2] = fake[:, 2] = 0.0

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fid = evaluate(FrechetInceptionDistance(extractor=IDENTITY), real, fake)["FID/fid"]

    assert fid == pytest.approx(1.0 + (2.0 - 1.0) ** 2, rel=1e-6)


def probability_table(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("splits", [1, 4])
def test_inception_score_of_uniform_predictions_is_one(splits):
    table = torch.full((40, 10), 0.1, dtype=torch.float64)

    result = evaluate(InceptionScore(extractor=IDENTITY, splits=splits, prefix="IS-50k"), table, table)

    assert result == {"IS-50k/is": pytest.approx(1.0), "IS-50k/is_std": pytest.approx(0.0, abs=1e-12)}


@pytest.mark.parametrize("k", [1, 2, 5, 10])
def test_inception_score_of_confident_predictions_spread_evenly_over_k_classes_is_k(k):
    table = torch.eye(10, dtype=torch.float64)[torch.arange(60) % k]

    result = evaluate(InceptionScore(extractor=IDENTITY, splits=2), table, table)

    assert result["IS/is"] == pytest.approx(k)
    assert result["IS/is_std"] == pytest.approx(0.0, abs=1e-9)


def test_inception_score_by_hand_and_its_std_over_splits():
    # Split 1: one confident row and one unsure row; split 2: two rows confident about different classes.
    table = probability_table([[1.0, 0.0], [0.5, 0.5], [1.0, 0.0], [0.0, 1.0]])
    marginal = (0.75, 0.25)
    kl_confident = math.log(1 / marginal[0])
    kl_unsure = 0.5 * math.log(0.5 / marginal[0]) + 0.5 * math.log(0.5 / marginal[1])
    first, second = math.exp((kl_confident + kl_unsure) / 2), 2.0

    result = evaluate(InceptionScore(extractor=IDENTITY, splits=2), table, table, batch_size=3)

    assert result["IS/is"] == pytest.approx((first + second) / 2)
    assert result["IS/is_std"] == pytest.approx(abs(first - second) / 2)


def test_real_statistics_are_cached_and_the_cache_is_used(tmp_path):
    cache = tmp_path / "stats" / "real.pth"
    real, fake = torch.rand(64, 5, dtype=torch.float64), torch.rand(64, 5, dtype=torch.float64)
    first = evaluate(FrechetInceptionDistance(extractor=IDENTITY, real_stats_cache=str(cache)), real, fake)
    stored = torch.load(cache, weights_only=True)
    assert stored["num_images"] == 64
    torch.testing.assert_close(stored["mean"], real.mean(dim=0), rtol=1e-12, atol=1e-12)

    # Shift the cached mean: a run that reads the cache sees exactly that shift, in FID's first term.
    save_checkpoint({**stored, "mean": stored["mean"] + 0.5}, cache)  # with a fresh digest: a deliberate edit
    second = evaluate(FrechetInceptionDistance(extractor=IDENTITY, real_stats_cache=str(cache)), real, fake)

    diff = fake.mean(dim=0) - real.mean(dim=0)
    shift = (diff - 0.5).square().sum() - diff.square().sum()
    assert second["FID/fid"] - first["FID/fid"] == pytest.approx(float(shift), rel=1e-9)


@pytest.mark.parametrize("change", ["one real image", "the extractor", "the number of images"])
def test_a_stale_cache_is_recomputed_never_used(tmp_path, change):
    cache = tmp_path / "real.pth"
    real, fake = torch.rand(64, 5, dtype=torch.float64), torch.rand(64, 5, dtype=torch.float64)
    evaluate(FrechetInceptionDistance(extractor=IDENTITY, real_stats_cache=str(cache)), real, fake)
    stale_key = torch.load(cache, weights_only=True)["key"]

    extractor = IDENTITY
    if change == "one real image":
        real = real.clone()
        real[17, 3] += 1e-9
    elif change == "the extractor":
        extractor = dict(type=Identity, scale=2.0)
    else:
        real, fake = real[:63], fake[:63]
    cached = evaluate(FrechetInceptionDistance(extractor=extractor, real_stats_cache=str(cache)), real, fake)

    fresh = evaluate(FrechetInceptionDistance(extractor=extractor), real, fake)
    assert cached == fresh
    assert torch.load(cache, weights_only=True)["key"] != stale_key


def test_an_unreadable_cache_is_replaced(tmp_path):
    cache = tmp_path / "real.pth"
    cache.write_bytes(b"not a checkpoint")
    real, fake = torch.rand(20, 3, dtype=torch.float64), torch.rand(20, 3, dtype=torch.float64)

    result = evaluate(FrechetInceptionDistance(extractor=IDENTITY, real_stats_cache=str(cache)), real, fake)

    assert result == evaluate(FrechetInceptionDistance(extractor=IDENTITY), real, fake)
    assert torch.load(cache, weights_only=True)["num_images"] == 20


def test_the_default_extractor_is_the_shipped_digits_network_and_aliases_match_mmagic():
    assert DEFAULT_EXTRACTOR == {"type": "DigitsFeatureNet", "checkpoint": "torchyard://digits_feature_net.pth"}
    assert METRICS.get("FID") is FrechetInceptionDistance
    assert METRICS.get("IS") is InceptionScore
    images = torch.rand(4, 1, 8, 8)
    result = evaluate(InceptionScore(splits=1), images, images)
    assert 1.0 <= result["IS/is"] <= 10.0


def test_extractor_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match=r"has no features\(images\) method"):
        FrechetInceptionDistance(extractor=dict(type=nn.Identity))
    other = tmp_path / "other.pth"
    torch.save({"state_dict": nn.Linear(2, 2).state_dict()}, other)
    with pytest.raises(ConfigError, match="does not fit DigitsFeatureNet"):
        InceptionScore(extractor=dict(type="DigitsFeatureNet", checkpoint=str(other)))
    with pytest.raises(ConfigError, match="no checkpoint at"):
        InceptionScore(extractor=dict(type="DigitsFeatureNet", checkpoint=str(tmp_path / "missing.pth")))
    with pytest.raises(ConfigError, match="'DigitsFeatureNett' is not a registered model"):
        InceptionScore(extractor=dict(type="DigitsFeatureNett"))


def test_batch_invariant_gives_every_sample_the_same_result_in_any_batch():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 256), nn.ReLU(), nn.Linear(256, 64))
    x = torch.randn(70, 8)
    with torch.no_grad():
        whole = batch_invariant(net, x)
        one_by_one = torch.cat([batch_invariant(net, x[i:i + 1]) for i in range(len(x))])
        odd_rows = batch_invariant(net, x[1::2])
    assert torch.equal(whole, one_by_one)
    assert torch.equal(whole[1::2], odd_rows)
