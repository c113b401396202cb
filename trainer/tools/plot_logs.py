"""plot-logs WORK_DIR... --keys KEY...: curves of logged scalars (losses, lr, validation metrics) from each
work dir's ``scalars.jsonl``, one panel per key, one line per work dir.

    torchyard tools plot-logs work_dirs/a work_dirs/b --keys loss accuracy/top1 --out curves.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from torchyard.contract.workdir import SCALAR_KEYS, SCALARS
from torchyard.trainer.config import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("work_dirs", nargs="+", help=f"training work dirs (or {SCALARS} files)")
    parser.add_argument("--keys", nargs="+", default=["loss"], help="scalars to plot (default: loss)")
    parser.add_argument("--out", default="curves.png", help="the image to write (default curves.png)")
    parser.add_argument("--title", help="a title over the panels")


def run(args: argparse.Namespace) -> None:
    print(plot_logs(args.work_dirs, args.keys, args.out, args.title))


def read_curves(work_dir: str | Path, keys: list[str]) -> dict[str, tuple[list[int], list[float]]]:
    """``{key: (iterations, values)}``. A resumed run logs some iterations again; the later value wins."""
    path = Path(work_dir)
    path = path / SCALARS if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"plot-logs: no {SCALARS} in {work_dir}; LoggerHook writes it while training, "
                          "so pass a training work dir")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ConfigError(f"plot-logs: {path} line {number} is not JSON: {err}") from None
    curves = {}
    for key in keys:
        points = {r["iter"]: r[key] for r in records if isinstance(r.get(key), int | float) and "iter" in r}
        if not points:
            known = sorted({k for r in records for k, v in r.items()
                            if k not in SCALAR_KEYS and isinstance(v, int | float)})
            raise ConfigError(f"plot-logs: key {key!r} is not in {path}; "
                              f"it has: {', '.join(known) or 'nothing'}")
        iterations = sorted(points)
        curves[key] = (iterations, [points[i] for i in iterations])
    return curves


def plot_logs(work_dirs: list[str], keys: list[str], out: str | Path, title: str | None = None) -> Path:
    from matplotlib.figure import Figure  # a Figure with no pyplot state renders with Agg, no display needed

    runs = {str(d): read_curves(d, keys) for d in work_dirs}
    labels = _labels(work_dirs)
    figure = Figure(figsize=(7, 2.6 * len(keys)), layout="constrained")
    axes = figure.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
    for ax, key in zip(axes, keys, strict=True):
        for work_dir, label in zip(work_dirs, labels, strict=True):
            iterations, values = runs[str(work_dir)][key]
            # Validation metrics come every few hundred iterations: mark the points, not only the line.
            ax.plot(iterations, values, label=label, marker="o" if len(values) < 30 else None, markersize=3)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("iteration")
    axes[0].legend(fontsize="small")
    if title:
        figure.suptitle(title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    return out


def _labels(work_dirs: list[str]) -> list[str]:
    """Each work dir's name, or its whole path where two names are the same."""
    names = [Path(d).name if Path(d).is_dir() else Path(d).parent.name for d in work_dirs]
    return [name if names.count(name) == 1 else str(d) for name, d in zip(names, work_dirs, strict=True)]
