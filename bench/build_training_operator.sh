#!/usr/bin/env bash
# Builds (once) Kubeflow's training-operator manager (cmd/training-operator.v1), for bench/operator_latency.py
# to compare against on the same control plane. Through the Go module proxy, into the user's cache; none of its
# code enters this repository. Prints the folder holding bin/training-operator.v1 and crds/ (its
# manifests/base/crds). A second call finds the binary and returns at once. Cold: ~5 min on 2 cores.
#   bench/build_training_operator.sh [--check]     (--check: exit 1 when not built yet, build nothing)
# Exit 2 when the proxy does not serve the version; its answer is on stderr.
set -euo pipefail

# v1.9.x is the last release line of the v1 PyTorchJob API (kubeflow/trainer v2 replaced it). The proxy's
# version list (`go list -m -versions`) shows only v1.8.1, but it serves the v1.9 tags when asked by name;
# v1.9.4 builds against client-go v0.36, the release of our control plane.
VERSION=${TRAINING_OPERATOR_VERSION:-v1.9.4}
MODULE=github.com/kubeflow/training-operator
CACHE=${TORCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/torchyard}
OUT=$CACHE/training-operator-$VERSION
BIN=$OUT/bin/training-operator.v1

if [[ -x $BIN && -d $OUT/crds ]]; then echo "$OUT"; exit 0; fi
if [[ ${1:-} == --check ]]; then echo "build_training_operator.sh: not built yet in $OUT" >&2; exit 1; fi
command -v go >/dev/null || { echo "build_training_operator.sh: go is required" >&2; exit 1; }

mkdir -p "$CACHE"
if ! info=$(cd "$CACHE" && GOFLAGS=-mod=mod go mod download -json "$MODULE@$VERSION" 2>&1); then
    why=$(sed -n 's/.*"Error": "\(.*\)".*/\1/p' <<<"$info")
    echo "build_training_operator.sh: the Go module proxy does not serve $MODULE@$VERSION: ${why:-$info}" >&2
    exit 2
fi
mkdir -p "$OUT/bin"
dir=$(sed -n 's/.*"Dir": "\(.*\)".*/\1/p' <<<"$info")
# `go install pkg@version` builds with the module's own go.mod (it has no replace directives), so no
# throwaway module is needed; GOBIN keeps the binary in our cache.
echo "build_training_operator.sh: building $MODULE/cmd/training-operator.v1@$VERSION (cold: ~5 min)" >&2
(cd "$OUT" && GOBIN=$OUT/bin GOFLAGS=-mod=mod go install "$MODULE/cmd/training-operator.v1@$VERSION") >&2
rm -rf "$OUT/crds.new" && mkdir "$OUT/crds.new"
cp "$dir"/manifests/base/crds/kubeflow.org_*.yaml "$OUT/crds.new/"
chmod -R u+w "$OUT/crds.new" && rm -rf "$OUT/crds" && mv "$OUT/crds.new" "$OUT/crds"
echo "$OUT"
