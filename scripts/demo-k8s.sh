#!/usr/bin/env bash
# `make demo-k8s`: the README's Kubernetes path, for real, on this machine:
#   the control plane of `make cluster`; a node (`torchyard dev-cluster`, pods as local processes, logged in
#   as system:node:dev-cluster); `helm install` of charts/torchyard, whose operator Deployment then runs on
#   that node as the chart's ServiceAccount; `kubectl apply -f examples/trainjob.yaml`; the TestJob after it.
# Exits 0 only if both jobs succeeded. The control plane stays up afterwards (`make cluster-down` stops it);
# the node stops with this script. Needs `make install tools` (the Makefile target does it).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
bin=${BIN:-.venv/bin}
tools=${TOOLS:-.tools}/bin
cluster_dir=${CLUSTER_DIR:-.cluster}
state=${DEV_CLUSTER_DIR:-dev-cluster}
say() { echo "demo-k8s: $*"; }

scripts/cluster/up.sh "$cluster_dir" | tail -n 1
export KUBECONFIG=$repo/$cluster_dir/admin.kubeconfig
kubectl() { "$tools/kubectl" "$@" 2> >(grep -v "exceeds the supported minor version skew" >&2); }

say "starting the node (torchyard dev-cluster; log: $state/node.log)"
mkdir -p "$state/volumes/runs"
KUBECONFIG=$repo/$cluster_dir/node-dev-cluster.kubeconfig setsid "$bin/torchyard" dev-cluster \
    --node dev-cluster --volumes "$state/volumes" --state "$state/state" --workdir "$repo" \
    > "$state/node.log" 2>&1 &
node_pid=$!
trap 'kill -INT $node_pid 2>/dev/null; wait $node_pid 2>/dev/null || true' EXIT
for _ in $(seq 60); do
    grep -q "is Ready" "$state/node.log" && break
    kill -0 $node_pid 2>/dev/null || { cat "$state/node.log"; exit 1; }
    sleep 0.5
done
kubectl wait --for=condition=Ready node/dev-cluster --timeout=60s

say "helm install torchyard charts/torchyard -n torchyard-system --create-namespace"
# Helm installs a chart's CRDs only the first time: on a cluster of an earlier run, bring them up to date
kubectl apply --server-side --force-conflicts -f charts/torchyard/crds/ >/dev/null
# --reset-values: the chart's defaults, as a first install gets them (helm upgrade otherwise reuses the
# values of the last release, e.g. the tests' replicaCount=0)
"$tools/helm" upgrade --install torchyard charts/torchyard -n torchyard-system --create-namespace --wait=false \
    --reset-values
kubectl -n torchyard-system rollout status deployment/torchyard --timeout=180s

# The example writes to the claim `runs`: here a volume that is a folder of this host.
kubectl apply -f - <<EOF
apiVersion: v1
kind: PersistentVolume
metadata: {name: dev-cluster-runs}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteMany]
  storageClassName: ""
  hostPath: {path: $repo/$state/volumes/runs}
  claimRef: {namespace: default, name: runs}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: runs, namespace: default}
spec:
  accessModes: [ReadWriteMany]
  storageClassName: ""
  volumeName: dev-cluster-runs
  resources: {requests: {storage: 10Gi}}
EOF

kubectl delete --ignore-not-found --wait --timeout=120s testjob/digits-mlp-test trainjob/digits-mlp >/dev/null
say "kubectl apply -f examples/trainjob.yaml"
kubectl apply -f examples/trainjob.yaml
finished() {  # kind name: waits until the job ends; fails unless it succeeded
    local phase=""
    for _ in $(seq 900); do
        phase=$(kubectl get "$1" "$2" -o jsonpath='{.status.phase}')
        [[ $phase == Succeeded || $phase == Failed ]] && break
        sleep 1
    done
    kubectl get "$1" "$2"
    if [[ $phase != Succeeded ]]; then
        kubectl describe "$1" "$2" | tail -n 20
        say "$1 $2 ended $phase, not Succeeded; node log: $state/node.log"
        exit 1
    fi
}
finished trainjob digits-mlp
say "kubectl apply -f examples/testjob.yaml"
kubectl apply -f examples/testjob.yaml
finished testjob digits-mlp-test
echo
kubectl get trainjobs,testjobs
echo
say "both jobs succeeded. Work dirs: $state/volumes/runs/; pod logs: $state/state/default/*.log"
say "the control plane keeps running: export KUBECONFIG=$KUBECONFIG (make cluster-down stops it)"
