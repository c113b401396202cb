#!/usr/bin/env bash
# OpenMMLab's tools/slurm_train.sh (variables: tools/srun_tasks.sh).
#   GPUS=16 GPUS_PER_NODE=8 bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args]
set -euo pipefail
if [ $# -lt 4 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [tools/train.py arguments]" >&2
    exit 2
fi
exec "$(dirname "$0")/srun_tasks.sh" "$1" "$2" train.py "$3" --work-dir="$4" "${@:5}"
