#!/usr/bin/env bash
# OpenMMLab's tools/slurm_test.sh (variables: tools/srun_tasks.sh).
#   GPUS=8 bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args]
set -euo pipefail
if [ $# -lt 4 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG CHECKPOINT [tools/test.py arguments]" >&2
    exit 2
fi
exec "$(dirname "$0")/srun_tasks.sh" "$1" "$2" test.py "$3" "$4" "${@:5}"
