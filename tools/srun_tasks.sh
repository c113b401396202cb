#!/usr/bin/env bash
# What tools/slurm_train.sh and tools/slurm_test.sh share: one srun task per GPU, each tools/SCRIPT with
# --launcher=slurm, shaped by OpenMMLab's GPUS (all tasks), GPUS_PER_NODE, CPUS_PER_TASK and SRUN_ARGS, and
# GRES (default gpu:$GPUS_PER_NODE; GRES= asks for none, for CPU partitions).
#   tools/srun_tasks.sh PARTITION JOB_NAME SCRIPT [arguments of SCRIPT]
set -euo pipefail
PARTITION=$1
JOB_NAME=$2
SCRIPT=$3
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
GRES=${GRES-gpu:$GPUS_PER_NODE}
read -r -a SRUN_EXTRA <<< "${SRUN_ARGS:-}"
HERE=$(cd "$(dirname "$0")" && pwd)
exec srun -p "$PARTITION" --job-name="$JOB_NAME" ${GRES:+--gres="$GRES"} --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="${CPUS_PER_TASK:-5}" --kill-on-bad-exit=1 \
    "${SRUN_EXTRA[@]}" "${PYTHON:-python}" -u "$HERE/$SCRIPT" "${@:4}" --launcher=slurm
