#!/usr/bin/env bash
# `make cluster-down`: stops what scripts/cluster/up.sh started in DIR (TERM, then KILL after 10 s).
# A kubelet node (NODE=kubelet) goes first: its pods' containers are killed, their mounts released,
# kube-proxy's rules removed, the pod bridge and the Node object deleted.
# Keeps DIR (certificates, etcd data, logs): the next `make cluster` starts with the same state.
#   scripts/cluster/down.sh [DIR]
set -euo pipefail
dir=$(cd "${1:-${CLUSTER_DIR:-.cluster}}" 2>/dev/null && pwd) || exit 0
[[ -d $dir/run ]] || exit 0

stop() {  # name...: TERM to each process of that name recorded in run/, KILL to those alive after 10 s
    local c pid pids=()
    for c in "$@"; do
        [[ -f $dir/run/$c.pid ]] || continue
        pid=$(cat "$dir/run/$c.pid")
        # only a process of that name: a pid reused since by another program is left alone
        if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "${c:0:15}" ]]; then
            kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
        fi
        rm -f "$dir/run/$c.pid"
    done
    for _ in $(seq 100); do
        local alive=()
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
        (( ${#alive[@]} == 0 )) && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}

if [[ $(cat "$dir/run/node" 2>/dev/null) == kubelet ]]; then
    stop kubelet
    # the node is gone, not just unreachable: its pods are then garbage-collected instead of staying
    # Terminating for ever (a job on it could not be deleted on a cluster restarted with NODE=process)
    curl -sS --max-time 5 -o /dev/null -X DELETE --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" \
        --key "$dir/pki/admin.key" "https://127.0.0.1:$(cat "$dir/run/apiserver.port")/api/v1/nodes/kubelet" || true
    # the containers outlive containerd in their shims: kill the shims of this containerd and their children
    for shim in $(pgrep -f "containerd-shim-runc-v2 .*-address $dir/run/containerd.sock" || true); do
        pkill -KILL -P "$shim" 2>/dev/null || true
        kill -KILL "$shim" 2>/dev/null || true
    done
    stop coredns kube-proxy containerd
    rm -rf "$dir/kubelet/ipam"
    findmnt -rn -o TARGET | grep "^$dir/kubelet/" | sort -r | xargs -r -n 1 umount -l 2>/dev/null || true
    # The host's share (kube-proxy's and the CNI's iptables rules, the bridge) only if this folder's node
    # holds the host (up.sh records which): another folder's node may run on this host now.
    if [[ $(cat /run/torchyard-kubelet-node 2>/dev/null) == "$dir" ]]; then
        if bin=$("$(dirname "$0")/build.sh" --node --check 2>/dev/null); then
            "$bin/kube-proxy" --cleanup >/dev/null 2>&1 || true
        fi
        # a chain still in use by another program, e.g. another CNI network's, cannot be deleted and stays
        for table in nat filter mangle; do
            iptables-save -t "$table" | grep '^-A' | grep -E 'KUBE-|name: \\"torchyard\\"' | sed 's/^-A/-D/' |
                while read -r rule; do eval "iptables -t $table $rule" 2>/dev/null || true; done || true
            for chain in $(iptables-save -t "$table" | sed -n 's/^:\(KUBE-[^ ]*\|CNI-[0-9a-f]*\) .*/\1/p'); do
                { iptables -t "$table" -F "$chain" && iptables -t "$table" -X "$chain"; } 2>/dev/null || true
            done
        done
        ip link del torchyard0 2>/dev/null || true
        rm -f /run/torchyard-kubelet-node
    fi
fi
stop kube-scheduler kube-controller-manager kube-apiserver etcd
echo "cluster: stopped ($dir)"
