"""The README's task table, from what `make demo-tasks` measured: each family's test-split metrics.json.

    python scripts/task_results.py work_dirs/tasks > bench/tasks.md     (make demo-tasks does this)

tests/test_readme.py checks that the README's table is this file's, row for row.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path

# family, config(s), the work dir under the tasks dir, the metrics shown, the baseline shown (same run).
ROWS = [
    ("classification", "`configs/digits_cnn.py`", "digits_cnn",
     [("accuracy/top1", "accuracy/top1 {:.1f}")], []),
    ("segmentation (generated shapes, small FCN)", "`configs/shapes_fcn.py`", "shapes_fcn",
     [("mIoU", "mIoU {:.1f}"), ("aAcc", "aAcc {:.1f}")], []),
    ("restoration (x2 super-resolution on scikit-image photos, VDSR)", "`configs/vdsr_x2_skimage.py`",
     "vdsr_x2",
     [("PSNR", "PSNR {:.2f} dB"), ("SSIM", "SSIM {:.3f}")],
     [("bicubic/PSNR", "bicubic: {:.2f} dB"), ("bicubic/SSIM", "{:.3f}")]),
    ("generation (VAE on digits)", "`configs/digits_vae.py`", "digits_vae",
     [("FID-Full/fid", "FID-Full/fid {:.1f}"), ("IS/is", "IS {:.2f}")], []),
    ("self-supervised (SimCLR, then a linear probe)", "`configs/digits_simclr.py`, "
     "`configs/digits_linear_probe.py`", "linear_probe", [("accuracy/top1", "probe accuracy {:.1f}")], []),
]
HEADER = ["| family | config | metric on the test split | baseline, same run |", "|---|---|---|---|"]


def table(tasks_dir: Path) -> list[str]:
    lines = list(HEADER)
    for family, config, work_dir, shown, baseline in ROWS:
        path = tasks_dir / work_dir / "test" / "metrics.json"
        try:
            metrics = json.loads(path.read_text())["metrics"]
        except FileNotFoundError:
            sys.exit(f"task_results: no {path}; run make demo-tasks first")
        cells = [", ".join(fmt.format(metrics[key]) for key, fmt in part) for part in (shown, baseline)]
        lines.append(f"| {family} | {config} | {cells[0]} | {cells[1]} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tasks_dir", type=Path, help="the work dirs of make demo-tasks (work_dirs/tasks)")
    args = parser.parse_args()
    import torch

    today = datetime.date.today().isoformat()
    print(f"# What `make demo-tasks` measured\n\n{today}, torch {torch.__version__}, {platform.machine()}, "
          "2 processes where the Makefile says so. Each metric is on the family's test split, which neither "
          "training nor the choice of checkpoint sees.\n")
    print("\n".join(table(args.tasks_dir)))


if __name__ == "__main__":
    main()
