#!/usr/bin/env bash
# Builds the pod sandbox ("pause") image that the kubelet node's containerd starts first in every pod, from
# the pause.c of the pinned k8s.io/kubernetes release (already in the Go module cache after
# scripts/cluster/build.sh), compiled statically as upstream does: no registry is needed.
#   images/pause/build.sh        prints the image name (a second call finds it and returns at once)
set -euo pipefail
K8S_VERSION=${K8S_VERSION:-v1.36.3}
image=localhost/torchyard/pause:${K8S_VERSION}
if buildah inspect --type image "$image" >/dev/null 2>&1; then echo "$image"; exit 0; fi
module=$(go env GOMODCACHE)/k8s.io/kubernetes@$K8S_VERSION
[[ -f $module/build/pause/linux/pause.c ]] || {
    echo "pause: $module/build/pause/linux/pause.c is missing; run scripts/cluster/build.sh first" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -Os -Wall -Werror -static -DVERSION="$K8S_VERSION" -o "$work/pause" "$module/build/pause/linux/pause.c"
strip "$work/pause"
ctr=$(buildah from scratch)
buildah copy --quiet "$ctr" "$work/pause" /pause >/dev/null
buildah config --entrypoint '["/pause"]' --user 65535:65535 \
    --label org.opencontainers.image.source="k8s.io/kubernetes@$K8S_VERSION build/pause" "$ctr"
buildah commit --quiet --rm --timestamp 0 "$ctr" "$image" >/dev/null
echo "$image"
