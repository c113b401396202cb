"""OpenMMLab's tools/test.py, for the commands its docs teach:

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE] [--show-dir DIR]
                         [--cfg-options KEY=VALUE ...] [--launcher none|pytorch|slurm|mpi]

A door to torchyard-test (torchyard/trainer/test.py), which does the work; `--help` lists every flag.
"""

from torchyard.trainer.test import cli

if __name__ == "__main__":
    cli()
