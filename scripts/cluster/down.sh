#!/usr/bin/env bash
# `make cluster-down`: stops what scripts/cluster/up.sh started in DIR (TERM, then KILL after 10 s).
# Keeps DIR (certificates, etcd data, logs): the next `make cluster` starts with the same state.
#   scripts/cluster/down.sh [DIR]
set -euo pipefail
dir=${1:-${CLUSTER_DIR:-.cluster}}
[[ -d $dir/run ]] || exit 0
pids=()
for c in kube-scheduler kube-controller-manager kube-apiserver etcd; do
    file=$dir/run/$c.pid
    [[ -f $file ]] || continue
    pid=$(cat "$file")
    # only a process of that name: a pid reused since by another program is left alone
    if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "${c:0:15}" ]]; then
        kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    fi
    rm -f "$file"
done
for _ in $(seq 100); do
    alive=()
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
    (( ${#alive[@]} == 0 )) && break
    sleep 0.1
done
for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
echo "cluster: stopped ($dir)"
