#!/bin/bash
#SBATCH --job-name=digits-mlp
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --array=0-2%2
#SBATCH --output=work_dirs/digits-mlp/%a/slurm-%A_%a.out
#SBATCH --error=work_dirs/digits-mlp/%a/slurm-%A_%a.err
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

# A sweep of 3 runs, one per array task: run N works in $work_dir/N with its options.
run="$SLURM_ARRAY_TASK_ID"
work_dir="$work_dir/$run"
mkdir -p -- "$work_dir"
case "$run" in
  0) sweep_options=(optim_wrapper.optimizer.lr=0.01 model.act=relu) ;;
  1) sweep_options=(optim_wrapper.optimizer.lr=0.1 model.act=relu) ;;
  2) sweep_options=('model.hidden=[8, 16]') ;;
  *) echo "torchyard: array task $run is not one of the sweep's runs (0-2)" >&2
     exit 2 ;;
esac
echo "torchyard: sweep run $run of 3: ${sweep_options[*]}" >&2

# Node 0, the first host of the allocation, is the rendezvous master. A node name that does not
# resolve (emulated or unlisted nodes) is replaced by the node's NodeAddr from slurm.conf.
MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
if ! getent hosts "$MASTER_ADDR" >/dev/null; then
  node_addr="$(scontrol show node -o "$MASTER_ADDR" | sed -n 's/.*[[:space:]]NodeAddr=\([^[:space:]]*\).*/\1/p')" || true
  MASTER_ADDR="${node_addr:-$MASTER_ADDR}"
fi
MASTER_PORT="${MASTER_PORT:-$((10000 + SLURM_JOB_ID % 20000))}"
export MASTER_ADDR MASTER_PORT
echo "torchyard: job $SLURM_JOB_ID on $SLURM_JOB_NODELIST, master $MASTER_ADDR:$MASTER_PORT" >&2

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
  --cfg-options
  "${sweep_options[@]}"
)

# Rank 0's last word (contract/termination.py) says whether a restart can help after a failure.
export TORCHYARD_TERMINATION_LOG="$work_dir/.torchyard-$SLURM_JOB_ID-termination.json"
rm -f -- "$TORCHYARD_TERMINATION_LOG"

# Near the time limit Slurm sends USR1 to this script only (--signal=B:...). Stop the trainers with
# SIGTERM to every step but this one: torchrun forwards SIGTERM (USR1 would kill it), the trainers
# save a checkpoint at the next step boundary and exit; then this script requeues the job below.
stop_requested=0
# shellcheck disable=SC2317  # called by the trap
stop_trainers() {
  stop_requested=1
  echo "torchyard: USR1 (time limit near): stopping job ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} at a checkpoint" >&2
  scancel --signal=TERM "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}" || echo "torchyard: scancel --signal=TERM failed" >&2
}
trap stop_trainers USR1

srun --nodes=2 --ntasks-per-node=1 bash -c 'exec torchrun --node-rank="$SLURM_NODEID" "$@"' torchrun "${torchrun_args[@]}" &
srun_pid=$!
# wait returns early when USR1 arrives; keep waiting until srun itself ends.
while true; do
  status=0; wait "$srun_pid" || status=$?
  if ! kill -0 "$srun_pid" 2>/dev/null; then break; fi
done

# Requeue (only this script does; each run resumes from the last checkpoint): after a stop at a
# checkpoint up to slurm.maxRequeues times, after a failure that restartPolicy restarts up to
# backoffLimit times (restartPolicy OnFailure: contract/restarts.py). Each requeue is
# one line of the restarts file, so the two limits are counted apart across this job's requeues.
max_requeues=3
backoff_limit=3
restarts_file="$work_dir/.torchyard-$SLURM_JOB_ID-restarts"
requeue() {
  local kind="$1" limit="$2" what="$3" used=0
  if [ -f "$restarts_file" ]; then used="$(grep -cx -- "$kind" "$restarts_file" || true)"; fi
  if [ "$used" -ge "$limit" ]; then
    echo "torchyard: $what; no requeue left ($used of $limit used)" >&2
    return
  fi
  echo "torchyard: $what; requeueing job ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} ($((used + 1)) of $limit)" >&2
  echo "$kind" >>"$restarts_file"
  scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}" && exit 0
  echo "torchyard: scontrol requeue failed" >&2
}
restartable() { if grep -qF '"retryable":' "$1" 2>/dev/null; then grep -qF '"retryable": true' "$1" 2>/dev/null || grep -qF '"status": "succeeded"' "$1" 2>/dev/null; else case "$2" in 2|3) false ;; *) true ;; esac; fi; }
if [ "$status" -ne 0 ]; then
  if [ "$stop_requested" = 1 ]; then
    requeue stop "$max_requeues" "stopped at a checkpoint (slurm.maxRequeues)"
  elif ! restartable "$TORCHYARD_TERMINATION_LOG" "$status"; then
    echo "torchyard: the trainer failed with an error a restart cannot fix: no requeue" >&2
  else
    requeue failure "$backoff_limit" "a trainer failed (exit $status) (backoffLimit)"
  fi
fi
exit "$status"
