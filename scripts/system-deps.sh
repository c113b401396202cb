#!/usr/bin/env bash
# Installs the Debian packages the tests use, only those missing (a no-op once they are there).
#   the linter of the rendered sbatch scripts (package shellcheck)
# --containers: also those of the kubelet node and the image builds (NODE=kubelet, make images): containerd,
#   runc, the CNI plugins, iptables, buildah, and mmdebstrap for the base image made of Debian packages.
# (Slurm's packages are installed by tests/slurm/cluster.sh, which keeps their init scripts from starting.)
set -euo pipefail
packages=(shellcheck)
[[ ${1:-} == --containers ]] &&
  packages+=(containerd runc containernetworking-plugins iptables buildah mmdebstrap)
missing=()
for package in "${packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: missing ${missing[*]}; run: sudo apt-get install --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
