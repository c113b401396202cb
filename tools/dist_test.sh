#!/usr/bin/env bash
# OpenMMLab's tools/dist_test.sh: GPUS processes on this node (CPU processes where there is no GPU).
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [tools/test.py arguments]
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 CONFIG CHECKPOINT GPUS [tools/test.py arguments]" >&2
    exit 2
fi
exec "$(dirname "$0")/torchrun_here.sh" "$3" test.py "$1" "$2" --launcher pytorch "${@:4}"
