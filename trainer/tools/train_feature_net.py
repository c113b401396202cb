"""Train the digits feature network that FID and Inception Score use by default (see tasks/feature_net.py).

    python -m torchyard.trainer.tools.train_feature_net --out trainer/assets/digits_feature_net.pth

Deterministic (fixed seed, one thread, deterministic kernels) and a few seconds on a CPU. The file holds
``{"state_dict", "meta"}`` and loads with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from torchyard.trainer.data import DigitsDataset
from torchyard.trainer.tasks.feature_net import DigitsFeatureNet


def train_feature_net(epochs: int = 30, seed: int = 0, lr: float = 3e-3) -> tuple[DigitsFeatureNet, float]:
    """The trained network and its accuracy (percent) on the digits images it never saw (val and test)."""
    # Reductions split over threads round differently per thread count; one thread gives the same weights
    # on any machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(seed)
        model = DigitsFeatureNet()
        train_set = DigitsDataset("train", pipeline=[dict(type="RandomShift", max_shift=1)])
        loader = DataLoader(train_set, batch_size=64, shuffle=True,
                            generator=torch.Generator().manual_seed(seed))
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(loader))
        model.train()
        for _ in range(epochs):
            for batch in loader:
                loss = F.cross_entropy(model.logits(batch["inputs"]), batch["targets"])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
        return model.eval(), held_out_accuracy(model)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


@torch.no_grad()
def held_out_accuracy(model: DigitsFeatureNet) -> float:
    """On the 359 digits outside the train split: val and test together, as the shipped weights record it."""
    splits = [DigitsDataset("val"), DigitsDataset("test")]
    images, targets = torch.cat([s.images for s in splits]), torch.cat([s.targets for s in splits])
    return float((model.logits(images).argmax(dim=1) == targets).float().mean() * 100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torchyard.trainer.tools.train_feature_net",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="where to write the weights (.pth)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    model, val_accuracy = train_feature_net(args.epochs, args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(),
                "meta": {"val_accuracy": val_accuracy, "epochs": args.epochs, "seed": args.seed,
                         "torch_version": str(torch.__version__)}}, out)
    print(f"held-out accuracy {val_accuracy:.2f}%; wrote {out} ({out.stat().st_size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
