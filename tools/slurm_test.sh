#!/usr/bin/env bash
# OpenMMLab's tools/slurm_test.sh: one srun task per GPU, each a tools/test.py --launcher slurm.
#   GPUS=8 bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args]
# GPUS, GPUS_PER_NODE, CPUS_PER_TASK, SRUN_ARGS and GRES as in tools/slurm_train.sh.
set -euo pipefail
if [ $# -lt 4 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG CHECKPOINT [tools/test.py arguments]" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
CHECKPOINT=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
GRES=${GRES-gpu:$GPUS_PER_NODE}
read -r -a SRUN_EXTRA <<< "${SRUN_ARGS:-}"
HERE=$(cd "$(dirname "$0")" && pwd)
exec srun -p "$PARTITION" --job-name="$JOB_NAME" ${GRES:+--gres="$GRES"} --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 \
    "${SRUN_EXTRA[@]}" "${PYTHON:-python}" -u "$HERE/test.py" "$CONFIG" "$CHECKPOINT" --launcher=slurm "${@:5}"
