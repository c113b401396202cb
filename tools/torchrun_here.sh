#!/usr/bin/env bash
# What tools/dist_train.sh and tools/dist_test.sh share: NPROC processes of tools/SCRIPT on this node under
# torchrun, placed by OpenMMLab's variables NNODES, NODE_RANK, PORT and MASTER_ADDR.
#   tools/torchrun_here.sh NPROC SCRIPT [arguments of SCRIPT]
set -euo pipefail
NPROC=$1
SCRIPT=$2
HERE=$(cd "$(dirname "$0")" && pwd)
exec "${PYTHON:-python}" -m torch.distributed.run --nnodes="${NNODES:-1}" --node-rank="${NODE_RANK:-0}" \
    --master-addr="${MASTER_ADDR:-127.0.0.1}" --master-port="${PORT:-29500}" --nproc-per-node="$NPROC" \
    "$HERE/$SCRIPT" "${@:3}"
