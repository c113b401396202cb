"""The formats the trainer and the operator share, torch-free: each side imports them from here, never
from the other.

- exitcodes: what the trainer's exit code promises (a usage or config error is not worth a retry);
- termination: rank 0's last word (a small JSON file) and how a reader judges it;
- workdir: the files a run leaves in its work dir (checkpoint pointers, scalars.jsonl, metrics.json);
- ports: where node 0 listens (the default port, the Slurm rule deriving one from the job id);
- launchers: the names of `--launcher`, and the one every backend's torchrun passes.
"""
