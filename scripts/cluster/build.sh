#!/usr/bin/env bash
# Builds (once) the control plane that `make cluster` runs: etcd, kube-apiserver, kube-controller-manager
# and kube-scheduler from one pinned Kubernetes release, through the Go module proxy, into the user's cache.
# A second call finds the binaries and returns at once. Cold: ~15 min and ~4 GB (module + build cache) on
# 2 cores. `build.sh --check` only says whether they are built (exit 1 if not).
# `build.sh --node` also builds what a real node needs (NODE=kubelet): kubelet and kube-proxy from the same
# release, and CoreDNS (the cluster DNS) from the Go module proxy (a few minutes more).
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}
# etcd 3.5+ is required: Debian's 3.4 sends no watch progress notifications to a 1.36 API server, and its
# watches on quiet resources then fail with "Too large resource version".
ETCD_VERSION=${ETCD_VERSION:-v3.6.8}
CACHE=${TORCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/torchyard}
BIN=$CACHE/k8s-$K8S_VERSION/bin
COREDNS_VERSION=${COREDNS_VERSION:-v1.14.7}
COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler)
NODE_COMPONENTS=(kubelet kube-proxy)
node=false
for arg in "$@"; do
    case $arg in
        --node) node=true COMPONENTS+=("${NODE_COMPONENTS[@]}") ;;
        --check) ;;
        *) echo "build.sh: unknown argument $arg (expected --node, --check)" >&2; exit 2 ;;
    esac
done

have_all() {
    [[ -x $BIN/etcd ]] || return 1
    [[ $node == false || -x $BIN/coredns ]] || return 1
    local c
    for c in "${COMPONENTS[@]}"; do [[ -x $BIN/$c ]] || return 1; done
}
if have_all; then echo "$BIN"; exit 0; fi
if [[ " $* " == *" --check "* ]]; then echo "build.sh: not built yet in $BIN (run make cluster-build)" >&2; exit 1; fi
command -v go >/dev/null || { echo "build.sh: go is required to build the control plane (Go 1.26+)" >&2; exit 1; }

mkdir -p "$BIN"
work=$CACHE/k8s-$K8S_VERSION/module
mkdir -p "$work"
staging_minor=v0.${K8S_VERSION#v1.}

# k8s.io/kubernetes replaces its staging modules with ./staging paths, which a dependent module cannot see:
# a throwaway module requires it and pins each staging module to the matching v0.X release instead.
{
    echo "module torchyard.dev/controlplane"
    echo
    echo "go 1.26.0"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    curl_mod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$curl_mod" | while read -r m; do
        echo "    $m => $m $staging_minor"
    done
    echo ")"
} > "$work/go.mod.new"
mv "$work/go.mod.new" "$work/go.mod"
cat > "$work/tools.go" <<'GO'
//go:build tools

package controlplane

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
GO
cd "$work"
echo "build.sh: resolving k8s.io/kubernetes $K8S_VERSION modules (cold: a few minutes)" >&2
GOFLAGS=-mod=mod go get "k8s.io/kubernetes@$K8S_VERSION" >&2

# helm's kubeVersion checks and `kubectl version` read these; an unversioned build reports v0.0.0.
pkg=k8s.io/component-base/version
minor=${K8S_VERSION#v1.}
ldflags="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor%%.*}"
ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
for c in "${COMPONENTS[@]}"; do
    [[ -x $BIN/$c ]] && continue
    echo "build.sh: building $c $K8S_VERSION" >&2
    GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c"
    mv "$BIN/$c.tmp" "$BIN/$c"
done

if [[ ! -x $BIN/etcd ]]; then
    echo "build.sh: building etcd $ETCD_VERSION" >&2
    etcd_work=$CACHE/etcd-$ETCD_VERSION
    mkdir -p "$etcd_work"
    cd "$etcd_work"
    [[ -f go.mod ]] || go mod init torchyard.dev/etcd >/dev/null 2>&1
    GOFLAGS=-mod=mod go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
    GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3
    mv "$BIN/etcd.tmp" "$BIN/etcd"
fi
if [[ $node == true && ! -x $BIN/coredns ]]; then
    echo "build.sh: building coredns $COREDNS_VERSION" >&2
    coredns_work=$CACHE/coredns-$COREDNS_VERSION
    mkdir -p "$coredns_work"
    cd "$coredns_work"
    [[ -f go.mod ]] || go mod init torchyard.dev/coredns >/dev/null 2>&1
    GOFLAGS=-mod=mod go get "github.com/coredns/coredns@$COREDNS_VERSION" >&2
    GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN/coredns.tmp" github.com/coredns/coredns
    mv "$BIN/coredns.tmp" "$BIN/coredns"
fi
echo "$BIN"
