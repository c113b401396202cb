"""OpenMMLab's tools/train.py, for the commands its docs teach:

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--auto-scale-lr]
                          [--no-validate] [--cfg-options KEY=VALUE ...] [--launcher none|pytorch|slurm|mpi]

A door to torchyard-train (torchyard/trainer/train.py), which does the work; `--help` lists every flag.
"""

from torchyard.trainer.train import cli

if __name__ == "__main__":
    cli()
