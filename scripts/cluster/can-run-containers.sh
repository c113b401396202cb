#!/usr/bin/env bash
# Says whether this machine can run the kubelet node of NODE=kubelet (containers on containerd + runc):
# exit 0 and "yes", or exit 1 and the first thing missing, with what to do about it.
#   scripts/cluster/can-run-containers.sh
# Needs: root; new mount, PID, network and UTS namespaces; cgroups (v1 or v2) with the memory, cpu and pids
# controllers; overlayfs; the Debian packages of scripts/system-deps.sh --containers; and disk for the
# trainer image three times over (buildah's store, containerd's content and its unpacked snapshot), less
# what is there already.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
IMAGE_GB=${IMAGE_GB:-6}  # the trainer image with torch's CUDA libraries (PyPI's torch), rounded up
no() { echo "no: $*"; exit 1; }

[[ $(id -u) == 0 ]] || no "not root (the node needs a bridge, iptables rules and containerd)"
unshare --mount --pid --net --uts --fork true 2>/dev/null || no "cannot create namespaces (unshare failed)"
if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    for controller in memory cpu pids; do
        grep -qw "$controller" /sys/fs/cgroup/cgroup.controllers || no "cgroup v2 lacks the $controller controller"
    done
else
    for controller in memory cpu pids; do
        [[ -d /sys/fs/cgroup/$controller ]] || no "cgroup v1 has no $controller hierarchy at /sys/fs/cgroup/$controller"
    done
fi
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || no "the kernel has no overlayfs"
for tool in containerd runc ctr buildah mmdebstrap iptables /usr/lib/cni/bridge; do
    command -v "$tool" >/dev/null || no "$tool is missing (scripts/system-deps.sh --containers installs it)"
done
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
copies=3
if trainer=$(buildah inspect --type image --format '{{.FromImageID}}' "localhost/torchyard/trainer:$version" 2>/dev/null); then
    copies=2
    cache=${TORCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/torchyard}
    [[ $(cat "$cache/containerd/imported/docker.io_torchyard_trainer_$version.id" 2>/dev/null) == "$trainer" ]] && copies=0
fi
store=/var/lib/containers
mkdir -p "$store"
free_gb=$(( $(df --output=avail -k "$store" | tail -n 1) / 1024 / 1024 ))
(( free_gb >= IMAGE_GB * copies + 2 )) ||
    no "${free_gb} GB free on $store's disk; the trainer image needs $((IMAGE_GB * copies + 2)) GB more ($copies copies)"
echo yes
