#!/usr/bin/env bash
# OpenMMLab's tools/dist_train.sh: GPUS processes on this node (CPU processes where there is no GPU).
#   bash tools/dist_train.sh CONFIG GPUS [tools/train.py arguments]
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=host0 PORT=29500 bash tools/dist_train.sh CONFIG 8    (on each node)
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG GPUS [tools/train.py arguments]" >&2
    exit 2
fi
exec "$(dirname "$0")/torchrun_here.sh" "$2" train.py "$1" --launcher pytorch "${@:3}"
