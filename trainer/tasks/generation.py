"""Generation: a variational autoencoder on 8x8 digits, evaluated with FID and Inception Score.

A VAE rather than a GAN because the trainer steps one optimizer per model on one summed loss; a GAN needs two
optimizers stepping in turn. ``predict`` generates one digit per data set item, so the evaluated split sets
the number of generated images (and its real images are FID's reference).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from torchyard.trainer.metrics.generation import batch_invariant
from torchyard.trainer.models import BaseModel
from torchyard.trainer.registry import MODELS
from torchyard.trainer.visualization import caption, to_rgb, upscale


@MODELS.register()
class DigitsVAE(BaseModel):
    """An MLP encoder and decoder over the 64 pixels with a ``latent_dim``-dimensional Gaussian latent.

    ``loss``: ``loss_rec`` (binary cross-entropy summed over pixels; inputs are intensities in [0, 1]) and
    ``loss_kl`` (KL divergence of q(z|x) from N(0, I), times ``kl_weight``), both averaged over the batch.
    ``predict``: for each item, z ~ N(0, I) drawn by a generator seeded from ``sample_seed`` and the item's
    data set index, decoded to pixel intensities [N, 1, 8, 8]; the same images on any number of processes.
    """

    def __init__(self, latent_dim: int = 8, hidden: int = 256, kl_weight: float = 1.0,
                 sample_seed: int = 0) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.kl_weight = kl_weight
        self.sample_seed = sample_seed
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(inplace=True),
                                     nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                                     nn.Linear(hidden, 2 * latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(inplace=True),
                                     nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 64))

    def loss(self, batch: dict) -> dict[str, torch.Tensor]:
        inputs = batch["inputs"]
        mean, log_var = self.encoder(inputs).float().chunk(2, dim=1)
        z = mean + torch.randn_like(mean) * (0.5 * log_var).exp()
        logits = self.decoder(z).float().view_as(inputs)
        rec = F.binary_cross_entropy_with_logits(logits, inputs.float(), reduction="sum") / len(inputs)
        kl = -0.5 * (1 + log_var - mean.pow(2) - log_var.exp()).sum() / len(inputs)
        return {"loss_rec": rec, "loss_kl": self.kl_weight * kl}

    def predict(self, batch: dict) -> torch.Tensor:
        # NumPy mixes (seed, index) into one stream; torch.Generator keeps only 32 bits of a combined seed.
        z = np.stack([np.random.default_rng([self.sample_seed, index]).standard_normal(self.latent_dim)
                      for index in batch["index"].tolist()])
        z = torch.from_numpy(z).float().to(batch["inputs"].device)
        return batch_invariant(self.decoder, z).sigmoid().view(-1, 1, 8, 8)

    def visualize(self, batch: dict, outputs: torch.Tensor) -> list[tuple[int, np.ndarray]]:
        """The digit generated for each item, captioned with its index (the seed of its latent)."""
        return [(index, caption(upscale(to_rgb(image)), f"sample {index}"))
                for index, image in zip(batch["index"].tolist(), outputs, strict=True)]
