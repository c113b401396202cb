#!/usr/bin/env bash
# `make demo-k8s`: the README's Kubernetes path, for real, on this machine:
#   the control plane of `make cluster`; a node; `helm install` of charts/torchyard, whose operator
#   Deployment then runs on that node as the chart's ServiceAccount; `kubectl apply -f examples/trainjob.yaml`;
#   the TestJob after it. Exits 0 only if both jobs succeeded.
# NODE=kubelet: a real kubelet on containerd (scripts/cluster/kubelet.sh) running the images of
#   `make images` (built here first), so every pod is a container. NODE=process: `torchyard dev-cluster`,
#   pods as local processes (logged in as system:node:dev-cluster). NODE=auto (default): kubelet where
#   scripts/cluster/can-run-containers.sh says this machine can, else process, saying why.
# The control plane (and a kubelet node) stays up afterwards (`make cluster-down` stops it); the process node
# stops with this script. Needs `make install tools` (the Makefile target does it).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
bin=${BIN:-.venv/bin}
tools=${TOOLS:-.tools}/bin
cluster_dir=${CLUSTER_DIR:-.cluster}
state=${DEV_CLUSTER_DIR:-dev-cluster}
say() { echo "demo-k8s: $*"; }

node=${NODE:-auto}
if [[ $node == auto ]]; then
    if why=$(scripts/cluster/can-run-containers.sh); then
        node=kubelet
    else
        node=process
        say "containers cannot run here ($why): the node runs pods as local processes"
    fi
fi
runs=$state/volumes/runs
mkdir -p "$runs"
if [[ $node == kubelet ]]; then
    say "building the images (make images; cached after the first build)"
    images/build.sh
fi
NODE=$node scripts/cluster/up.sh "$cluster_dir" | tail -n 1
export KUBECONFIG=$repo/$cluster_dir/admin.kubeconfig
kubectl() { "$tools/kubectl" "$@" 2> >(grep -v "exceeds the supported minor version skew" >&2); }

if [[ $node == kubelet ]]; then
    node_name=kubelet
    say "node: kubelet (a real kubelet on containerd; pods are containers of the images; logs in $cluster_dir/logs)"
    # The example's claim is a folder of this host: pods run as uid 1000 (the image's user) and write their
    # work dirs there, as they would on a provisioned volume (a process node's earlier runs left root's files)
    mkdir -p "$runs/digits-mlp" "$runs/digits-mlp-test"
    chown -R 1000:1000 "$runs/digits-mlp" "$runs/digits-mlp-test"
else
    node_name=dev-cluster
    say "node: dev-cluster (torchyard dev-cluster, pods as local processes; log: $state/node.log)"
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
fi
kubectl wait --for=condition=Ready "node/$node_name" --timeout=60s

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
  hostPath: {path: $repo/$runs}
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
        say "$1 $2 ended $phase, not Succeeded; node $node_name (logs: $state/node.log or $cluster_dir/logs)"
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
if [[ $node == kubelet ]]; then
    say "the operator and the jobs ran as containers on node kubelet:"
    kubectl get pods -A -o custom-columns='POD:.metadata.name,NODE:.spec.nodeName,CONTAINER:.status.containerStatuses[0].containerID'
    say "both jobs succeeded. Work dirs: $runs/; pod logs: kubectl logs POD"
else
    say "both jobs succeeded on node dev-cluster. Work dirs: $runs/; pod logs: $state/state/default/*.log"
fi
say "the control plane keeps running: export KUBECONFIG=$KUBECONFIG (make cluster-down stops it)"
