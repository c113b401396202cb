#!/bin/bash
#SBATCH --job-name=digits-mlp
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --output=work_dirs/digits-mlp/slurm-%j.out
#SBATCH --error=work_dirs/digits-mlp/slurm-%j.err
#SBATCH --open-mode=append
#SBATCH --signal=B:USR1@300
#SBATCH --requeue
# TrainJob digits-mlp, rendered by torchyard: re-render instead of editing.
# Slurm opens --output/--error before this runs: create the work dir first (slurm submit does).
# Single quotes below are deliberate: user strings and the per-node bash -c stay unexpanded here.
# shellcheck disable=SC2016
set -euo pipefail

work_dir=work_dirs/digits-mlp
mkdir -p -- "$work_dir"
work_dir="$(cd -- "$work_dir" && pwd)"

# Node 0, the first host of the allocation, is the rendezvous master.
MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
MASTER_PORT="${MASTER_PORT:-$((10000 + SLURM_JOB_ID % 20000))}"
export MASTER_ADDR MASTER_PORT

torchrun_args=(
  --nnodes=2 --nproc-per-node=1
  --master-addr="$MASTER_ADDR" --master-port="$MASTER_PORT"
  -m
  torchyard.trainer.train
  configs/digits_mlp.py
  --launcher
  pytorch
  --work-dir
  "$work_dir"
  --resume
)

# Near the time limit Slurm sends USR1 (see --signal): requeue; the next run resumes.
requeue() {
  echo "torchyard: time limit near, requeueing job $SLURM_JOB_ID" >&2
  scontrol requeue "$SLURM_JOB_ID"
}
trap requeue USR1

srun --nodes=2 --ntasks-per-node=1 bash -c 'exec torchrun --node-rank="$SLURM_NODEID" "$@"' torchrun "${torchrun_args[@]}" &
srun_pid=$!
# wait returns early when USR1 arrives; keep waiting until srun itself ends.
while true; do
  status=0; wait "$srun_pid" || status=$?
  if ! kill -0 "$srun_pid" 2>/dev/null; then exit "$status"; fi
done
