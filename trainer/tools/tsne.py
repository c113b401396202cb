"""tsne CONFIG CHECKPOINT --out tsne.png: a t-SNE map (scikit-learn) of the model's features on the config's
test set, one colour per class label.

Features are what the model's ``extract_feat(inputs)`` returns, flattened; for classifiers that is the input
of the last linear layer (pre-logits, as mmpretrain's ``extract_feat(stage="pre_logits")``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from torchyard.trainer.config import ConfigError
from torchyard.trainer.tools.common import build_model, load_config, load_weights


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="the config the checkpoint was trained with")
    parser.add_argument("checkpoint", help="a checkpoint file, or a work dir (its best, else last)")
    parser.add_argument("--out", default="tsne.png", help="the image to write (default tsne.png)")
    parser.add_argument("--max-samples", type=int, default=1000, help="embed at most this many samples")
    parser.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity (default 30)")
    parser.add_argument("--seed", type=int, default=0, help="t-SNE random state")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config keys")


def run(args: argparse.Namespace) -> None:
    print(tsne(args.config, args.checkpoint, args.out, args.max_samples, args.perplexity, args.seed,
               args.cfg_options))


def extract_features(model, loader, max_samples: int):
    """``(features [N, D], labels [N])`` of the first ``max_samples`` samples, in evaluation mode."""
    import torch

    features, labels, seen = [], [], 0
    model.eval()
    with torch.no_grad():
        for batch in loader:
            targets = batch["targets"]
            if targets.ndim != 1 or targets.is_floating_point():
                raise ConfigError(f"tsne colours points by class label, but this test set's targets have "
                                  f"shape {tuple(targets.shape[1:])} per sample, not one integer label")
            features.append(model.extract_feat(batch["inputs"]).flatten(1).float())
            labels.append(targets)
            seen += len(targets)
            if seen >= max_samples:
                break
    return torch.cat(features)[:max_samples].numpy(), torch.cat(labels)[:max_samples].numpy()


def tsne(config: str, checkpoint: str, out: str | Path, max_samples: int = 1000, perplexity: float = 30.0,
         seed: int = 0, cfg_options: list[str] | None = None) -> Path:
    import numpy as np
    from matplotlib.figure import Figure
    from sklearn.manifold import TSNE

    from torchyard.trainer.data import build_dataloader
    from torchyard.trainer.dist import DistEnv

    cfg = load_config(config, cfg_options)
    model = build_model(cfg)
    if not hasattr(model, "extract_feat"):
        raise ConfigError(f"tsne: {type(model).__name__} has no extract_feat(inputs) method, so it has no "
                          "features to embed; add one that returns a feature vector per input")
    if not cfg.get("test_dataloader"):
        raise ConfigError(f"{config}: tsne embeds the test set, but the config has no test_dataloader")
    load_weights(model, checkpoint)
    loader = build_dataloader(cfg.test_dataloader, DistEnv(), seed=0, train=False, where="test_dataloader")
    features, labels = extract_features(model, loader, max_samples)
    if len(features) < 5:
        raise ConfigError(f"tsne: needs at least 5 samples, the test set gave {len(features)}")
    # scikit-learn requires perplexity < number of samples.
    points = TSNE(n_components=2, perplexity=min(perplexity, len(features) - 1), init="pca",
                  random_state=seed).fit_transform(features)

    classes = getattr(loader.dataset, "classes", None)
    figure = Figure(figsize=(7, 6), layout="constrained")
    ax = figure.subplots()
    for i, label in enumerate(np.unique(labels)):
        chosen = labels == label
        name = classes[label] if classes is not None and label < len(classes) else str(label)
        ax.scatter(points[chosen, 0], points[chosen, 1], s=8, color=_color(i), label=name)
    ax.legend(markerscale=2, fontsize="small", loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"t-SNE of {type(model).__name__} features, {len(features)} test samples")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    return out


def _color(i: int):
    from matplotlib import colormaps

    palette = colormaps["tab10" if i < 10 else "tab20"]
    return palette(i % palette.N)
