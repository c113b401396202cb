"""Generation metrics, named as in mmagic: ``FID-Full-50k/fid`` (FrechetInceptionDistance, alias FID) and
``IS-50k/is``, ``IS-50k/is_std`` (InceptionScore, alias IS).

A generative model's ``predict`` returns one generated image per data set item; those are the fake images. The
real images are the evaluated data set's ``inputs``. Both go through the ``extractor`` network, by default the
digits feature network that ships with torchyard (see tasks/feature_net.py; point ``extractor`` at an
Inception-v3 wrapper and its checkpoint for numbers comparable with papers):

    test_evaluator = [
        dict(type="FrechetInceptionDistance", prefix="FID-Full", real_stats_cache="work_dirs/fid/val.pth",
             extractor=dict(type="DigitsFeatureNet", checkpoint="torchyard://digits_feature_net.pth")),
        dict(type="InceptionScore", prefix="IS", splits=10),
    ]

The real images' mean and covariance are cached in ``real_stats_cache``, keyed by a hash of every real image
(in data set order) and of the extractor (its type, arguments and weights): a cache of other data or another
extractor is recomputed and replaced, never used. Until the metric is computed each process keeps its own
share of the real images, which on a cache hit never go through the extractor.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from scipy import linalg

from torchyard.trainer.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from torchyard.trainer.config import ConfigError
from torchyard.trainer.evaluation import BaseMetric
from torchyard.trainer.registry import METRICS, MODELS

logger = logging.getLogger(__name__)

# OpenMMLab names model-zoo files by scheme (``open-mmlab://...``); ours names files shipped in the package.
ASSET_SCHEME = "torchyard://"
# The network is DigitsFeatureNet (tasks/feature_net.py); importing torchyard.trainer.tasks registers it.
DEFAULT_EXTRACTOR = {"type": "DigitsFeatureNet", "checkpoint": f"{ASSET_SCHEME}digits_feature_net.pth"}
# Rows per extractor call; see batch_invariant.
CHUNK = 64


def batch_invariant(fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor,
                    chunk: int = CHUNK) -> torch.Tensor:
    """``fn(inputs)``, computed in zero-padded chunks of exactly ``chunk`` rows.

    A CPU matmul can round a row differently when the batch has another size (a batch of one takes another
    kernel), so the same sample would get other features on 1 and on 2 processes. With every call the same
    shape, a sample's result does not depend on how the data set was sharded, and metrics match exactly.
    """
    n = len(inputs)
    padded = torch.cat([inputs, inputs.new_zeros(-n % chunk, *inputs.shape[1:])])
    return torch.cat([fn(part) for part in padded.split(chunk)])[:n]


def resolve_asset(path: str | Path) -> Path:
    """``torchyard://NAME`` is the file NAME shipped in ``torchyard/trainer/assets``; other paths are kept."""
    path = str(path)
    if not path.startswith(ASSET_SCHEME):
        return Path(path)
    return Path(str(importlib.resources.files("torchyard.trainer") / "assets" / path[len(ASSET_SCHEME):]))


class Extractor:
    """The network an ``extractor`` config names: built from MODELS, weights loaded strictly, frozen.

    ``fingerprint`` identifies it (type, arguments, weights) for the real-statistics cache.
    """

    def __init__(self, cfg: dict, where: str) -> None:
        cfg = dict(cfg)
        checkpoint = cfg.pop("checkpoint", None)
        self.module = MODELS.build(cfg, where=where).eval().requires_grad_(False)
        for method in ("features", "logits"):
            if not callable(getattr(self.module, method, None)):
                raise ConfigError(f"{where}: {type(self.module).__name__} has no {method}(images) method; an "
                                  "extractor needs features() for FID and logits() for IS")
        digest = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode())
        if checkpoint is not None:
            path = resolve_asset(checkpoint)
            try:
                state = load_checkpoint(path)
            except CheckpointError as err:
                raise ConfigError(f"{where}.checkpoint: {err}") from None
            weights = state.get("state_dict", state)
            try:
                self.module.load_state_dict(weights)
            except RuntimeError as err:
                raise ConfigError(f"{where}.checkpoint {path} does not fit {type(self.module).__name__}: "
                                  f"{err}") from None
            digest.update(path.read_bytes())
        self.fingerprint = digest.hexdigest()

    @torch.no_grad()
    def __call__(self, method: str, images: torch.Tensor) -> torch.Tensor:
        """``features`` or ``logits`` of ``images`` as float64 on the CPU."""
        self.module.to(images.device)
        # Images in the network's own precision (generators may emit bfloat16 under AMP, data may be uint8).
        dtype = next((p.dtype for p in self.module.parameters()), torch.float64)
        return batch_invariant(getattr(self.module, method), images.to(dtype)).double().cpu()


@METRICS.register()
class FrechetInceptionDistance(BaseMetric):
    """Fréchet distance between Gaussians fitted to the extractor's features of real and generated images:
    ``|mu_r - mu_g|^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2))``, as in pytorch-fid and mmagic.

    ``real_stats_cache``: a file for the real images' mean and covariance (None: computed every time).
    ``eps``: added to both covariances' diagonals when their product has no finite square root.
    """

    default_prefix = "FID"

    def __init__(self, extractor: dict = DEFAULT_EXTRACTOR, real_stats_cache: str | None = None,
                 eps: float = 1e-6, prefix: str | None = None) -> None:
        super().__init__(prefix)
        self.extractor = Extractor(extractor, where="FrechetInceptionDistance.extractor")
        self.real_stats_cache = Path(real_stats_cache) if real_stats_cache else None
        self.eps = eps
        self.real_images: list[tuple[torch.Tensor, torch.Tensor]] = []

    def process(self, batch: dict, outputs: torch.Tensor) -> None:
        fake = self.extractor("features", outputs)
        real = batch["inputs"].detach().cpu()
        for index, features, image in zip(batch["index"].tolist(), fake, real, strict=True):
            self.records.append((index, (features, _digest(image))))
        self.real_images.append((batch["index"].cpu(), real))

    def compute(self, records: list[Any]) -> dict[str, float]:
        if len(records) < 2:
            raise ConfigError(f"{type(self).__name__}: needs at least 2 samples for a covariance, got "
                              f"{len(records)}")
        key = hashlib.sha256(self.extractor.fingerprint.encode())
        for _, image_digest in records:
            key.update(image_digest)
        real_mean, real_cov = self._real_statistics(key.hexdigest())
        fake_mean, fake_cov = statistics(torch.stack([features for features, _ in records]).numpy())
        return {"fid": frechet_distance(fake_mean, fake_cov, real_mean, real_cov, self.eps)}

    def _real_statistics(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """From the cache when its key matches, else from this evaluation's real images (and then cached).

        Every rank calls this together; rank 0 alone reads and writes the cache, so all ranks take the same
        branch even when the file is on a disk only rank 0 sees.
        """
        local, self.real_images = self.real_images, []
        distributed = dist.is_available() and dist.is_initialized()
        main = not distributed or dist.get_rank() == 0
        cached = [self._read_cache(key) if main else None]
        if distributed:
            dist.broadcast_object_list(cached, src=0)
        if cached[0] is not None:
            logger.info(f"{type(self).__name__}: real-image statistics from {self.real_stats_cache}")
            return cached[0]
        features = {}
        for indices, images in local:
            features.update(zip(indices.tolist(), self.extractor("features", images), strict=True))
        if distributed:
            per_rank: list[dict] = [{} for _ in range(dist.get_world_size())]
            dist.all_gather_object(per_rank, features)
            features = {index: f for rank_features in per_rank for index, f in rank_features.items()}
        mean, cov = statistics(torch.stack([features[i] for i in sorted(features)]).numpy())
        if main and self.real_stats_cache is not None:
            self.real_stats_cache.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint({"key": key, "mean": torch.from_numpy(mean), "cov": torch.from_numpy(cov),
                             "num_images": len(features)}, self.real_stats_cache)
            logger.info(f"{type(self).__name__}: cached the statistics of {len(features)} real images in "
                        f"{self.real_stats_cache}")
        return mean, cov

    def _read_cache(self, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        if self.real_stats_cache is None or not self.real_stats_cache.exists():
            return None
        try:
            cache = load_checkpoint(self.real_stats_cache)
        except CheckpointError as err:
            logger.warning(f"{type(self).__name__}: recomputing the statistics in an unreadable cache: {err}")
            return None
        if not isinstance(cache, dict) or cache.get("key") != key:
            logger.info(f"{type(self).__name__}: {self.real_stats_cache} holds statistics of other images or "
                        "another extractor; recomputing them")
            return None
        return cache["mean"].numpy(), cache["cov"].numpy()


@METRICS.register()
class InceptionScore(BaseMetric):
    """``exp(E_x KL(p(y|x) || p(y)))`` over the extractor's class probabilities of the generated images, in
    ``splits`` consecutive parts (in data set order) as in the reference implementation: ``is`` is the mean
    over the parts, ``is_std`` their standard deviation."""

    default_prefix = "IS"

    def __init__(self, extractor: dict = DEFAULT_EXTRACTOR, splits: int = 10,
                 prefix: str | None = None) -> None:
        super().__init__(prefix)
        if splits < 1:
            raise ConfigError(f"InceptionScore.splits must be >= 1, got {splits}")
        self.extractor = Extractor(extractor, where="InceptionScore.extractor")
        self.splits = splits

    def process(self, batch: dict, outputs: torch.Tensor) -> None:
        probabilities = self.extractor("logits", outputs).softmax(dim=1)
        self.records.extend(zip(batch["index"].tolist(), probabilities, strict=True))

    def compute(self, records: list[Any]) -> dict[str, float]:
        if len(records) < self.splits:
            raise ConfigError(f"InceptionScore: cannot cut {len(records)} samples into {self.splits} splits")
        scores = [inception_score(part) for part in torch.stack(records).tensor_split(self.splits)]
        return {"is": float(np.mean(scores)), "is_std": float(np.std(scores))}


METRICS.register(FrechetInceptionDistance, name="FID")
METRICS.register(InceptionScore, name="IS")


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (N - 1 in the denominator, as np.cov and the reference implementation)."""
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mean1: np.ndarray, cov1: np.ndarray, mean2: np.ndarray, cov2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """The Fréchet distance of two Gaussians, computed as pytorch-fid does."""
    diff = mean1 - mean2
    # Singular covariances are common (features that never fire, fewer samples than features); the checks
    # below handle them, so scipy's warning about them (silenced by disp=False in pytorch-fid) is noise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(cov1 @ cov2)
        if not np.isfinite(covmean).all():
            # No finite root: nudge both covariances away from singular.
            offset = np.eye(cov1.shape[0]) * eps
            covmean = linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    if np.iscomplexobj(covmean):
        # A product of two covariances has real, non-negative eigenvalues: imaginary parts are rounding noise,
        # unless they are large, which means the statistics are broken.
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: the covariances' product has a complex square root (imaginary part up to "
                             f"{np.abs(covmean.imag).max():.3g}); are the features finite?")
        covmean = covmean.real
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(covmean))


def inception_score(probabilities: torch.Tensor) -> float:
    """``exp`` of the mean KL divergence of each row from the mean row; 0 log 0 counts as 0."""
    marginal = probabilities.mean(dim=0, keepdim=True)
    kl = (torch.xlogy(probabilities, probabilities) - torch.xlogy(probabilities, marginal)).sum(dim=1)
    return float(kl.mean().exp())


def _digest(image: torch.Tensor) -> bytes:
    data = image.contiguous().numpy()
    return hashlib.sha256(f"{data.dtype}{data.shape}".encode() + data.tobytes()).digest()
