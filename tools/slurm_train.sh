#!/usr/bin/env bash
# OpenMMLab's tools/slurm_train.sh: one srun task per GPU, each a tools/train.py --launcher slurm.
#   GPUS=16 GPUS_PER_NODE=8 bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args]
# GPUS (all tasks), GPUS_PER_NODE, CPUS_PER_TASK and SRUN_ARGS as in OpenMMLab; GRES (default
# gpu:$GPUS_PER_NODE) is the --gres request, and GRES= asks for none, for CPU partitions.
set -euo pipefail
if [ $# -lt 4 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [tools/train.py arguments]" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
GRES=${GRES-gpu:$GPUS_PER_NODE}
read -r -a SRUN_EXTRA <<< "${SRUN_ARGS:-}"
HERE=$(cd "$(dirname "$0")" && pwd)
exec srun -p "$PARTITION" --job-name="$JOB_NAME" ${GRES:+--gres="$GRES"} --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 \
    "${SRUN_EXTRA[@]}" "${PYTHON:-python}" -u "$HERE/train.py" "$CONFIG" --work-dir="$WORK_DIR" \
    --launcher=slurm "${@:5}"
