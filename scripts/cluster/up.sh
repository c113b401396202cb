#!/usr/bin/env bash
# `make cluster`: starts a real Kubernetes control plane on 127.0.0.1 (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler), building it first when needed (scripts/cluster/build.sh).
# RBAC and Node authorization, hardened admission (NodeRestriction, OwnerReferencesPermissionEnforcement,
# PodSecurity at baseline, ValidatingAdmissionPolicy; PodNodeSelector and PodTolerationRestriction, which
# the tests use to give each namespace a node of its own). Idempotent: on a running cluster it only checks it.
# Its last line is `export KUBECONFIG=<dir>/admin.kubeconfig`.
#   scripts/cluster/up.sh [DIR]      (default: $CLUSTER_DIR or .cluster; stop with scripts/cluster/down.sh)
# NODE=process (default): no node here; `torchyard dev-cluster` adds one that runs pods as local processes.
# NODE=kubelet: also a real node on this host, a kubelet on containerd with a pod network, kube-proxy and
#   cluster DNS (scripts/cluster/kubelet.sh; root). The API server then listens on all addresses, as pods
#   reach it through its `kubernetes` Service at the pod network's gateway.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mkdir -p "${1:-${CLUSTER_DIR:-.cluster}}" && cd "${1:-${CLUSTER_DIR:-.cluster}}" && pwd)
pki=$dir/pki
mkdir -p "$pki" "$dir/logs" "$dir/run"
say() { echo "cluster: $*" >&2; }
NODE=${NODE:-process}
NODE_NAME=kubelet BRIDGE=torchyard0 POD_CIDR=10.244.0.0/24 NODE_IP=10.244.0.1
HOST_NODE_FILE=/run/torchyard-kubelet-node  # which cluster folder holds this host's kubelet node
case $NODE in
    process) ;;
    kubelet)
        [[ $(id -u) == 0 ]] || { say "NODE=kubelet needs root (a bridge, iptables rules, containerd)"; exit 1; }
        for tool in containerd runc buildah iptables /usr/lib/cni/bridge; do
            command -v "$tool" >/dev/null || {
                say "NODE=kubelet needs $tool: apt-get install containerd runc buildah iptables containernetworking-plugins"
                exit 1; }
        done
        # one kubelet node per host: the bridge, its addresses and kube-proxy's iptables chains are the host's
        holder=$(cat "$HOST_NODE_FILE" 2>/dev/null || true)
        if [[ -n $holder && $holder != "$dir" ]] && kill -0 "$(cat "$holder/run/kubelet.pid" 2>/dev/null)" 2>/dev/null; then
            say "the kubelet node of the cluster in $holder runs on this host, and a host holds one" \
                "(bridge $BRIDGE, $POD_CIDR, kube-proxy's iptables chains); stop it first: scripts/cluster/down.sh $holder"
            exit 1
        fi ;;
    *) say "NODE=$NODE: expected process or kubelet"; exit 2 ;;
esac
if [[ $NODE == kubelet ]]; then
    bin=$("$here/build.sh" --node)
    PAUSE_IMAGE=$("$here/../../images/pause/build.sh")  # from the release's pause.c, which build.sh fetched
else
    bin=$("$here/build.sh")
fi

api_get() {  # path: succeeds when the API server answers 2xx to the admin
    [[ -f $dir/admin.kubeconfig && -f $dir/run/apiserver.port ]] || return 1
    curl -fsS --max-time 3 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
        "https://127.0.0.1:$(cat "$dir/run/apiserver.port")$1" >/dev/null 2>&1
}
ready() { api_get /readyz; }
components=(etcd kube-apiserver kube-controller-manager kube-scheduler)
[[ $NODE == kubelet ]] && components+=(containerd coredns kube-proxy kubelet)
all_running() {
    [[ $(cat "$dir/run/node" 2>/dev/null) == "$NODE" ]] || return 1
    local c
    for c in "${components[@]}"; do
        [[ -f $dir/run/$c.pid ]] && kill -0 "$(cat "$dir/run/$c.pid")" 2>/dev/null || return 1
    done
}
if all_running && ready; then
    say "already running (API server on port $(cat "$dir/run/apiserver.port"))"
    echo "export KUBECONFIG=$dir/admin.kubeconfig"
    exit 0
fi
"$here/down.sh" "$dir" >/dev/null 2>&1 || true

# --- certificates (made once per folder) ---
cert() {  # name subject [extensions]
    local name=$1 subject=$2 ext=${3:-}
    [[ -f $pki/$name.crt ]] && return
    openssl genrsa -out "$pki/$name.key" 2048 2>/dev/null
    openssl req -new -key "$pki/$name.key" -subj "$subject" -out "$pki/$name.csr" 2>/dev/null
    printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
        "extendedKeyUsage=${ext:-clientAuth}" > "$pki/$name.ext"
    [[ $name == apiserver ]] && echo "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" >> "$pki/$name.ext"
    openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
        -days 3650 -sha256 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
    rm -f "$pki/$name.csr" "$pki/$name.ext"
}
if [[ ! -f $pki/ca.crt ]]; then
    say "making certificates in $pki"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$pki/ca.key" -out "$pki/ca.crt" -days 3650 \
        -subj "/CN=torchyard-dev-ca" 2>/dev/null
    openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
    openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
fi
cert apiserver "/CN=kube-apiserver" serverAuth
cert admin "/O=system:masters/CN=torchyard-admin"
cert controller-manager "/CN=system:kube-controller-manager"
cert scheduler "/CN=system:kube-scheduler"
cert node-dev-cluster "/O=system:nodes/CN=system:node:dev-cluster"
cert apiserver-kubelet-client "/CN=kube-apiserver-kubelet-client"

# A restart keeps the ports of the last start when they are free, so kubeconfigs and clients that were
# talking to this cluster find it again (and etcd its peer URL).
# (SO_REUSEADDR as the servers bind: the last start's connections may linger in TIME_WAIT)
port_free() {
    python3 -c 'import socket as so, sys; s = so.socket(); s.setsockopt(so.SOL_SOCKET, so.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pick() {  # name: the port of the last start if still free, else a free one
    local last
    last=$(sed -n "s/^$1=//p" "$dir/ports" 2>/dev/null)
    if [[ -n $last ]] && port_free "$last"; then echo "$last"; else free_port; fi
}
etcd_port=$(pick etcd); peer_port=$(pick peer); api_port=$(pick api); kcm_port=$(pick kcm); sched_port=$(pick sched)
printf '%s\n' "etcd=$etcd_port" "peer=$peer_port" "api=$api_port" "kcm=$kcm_port" "sched=$sched_port" > "$dir/ports"
echo "$api_port" > "$dir/run/apiserver.port"
server=https://127.0.0.1:$api_port

kubeconfig() {  # file user cert-name
    cat > "$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: torchyard-dev
  cluster: {server: "$server", certificate-authority: "$pki/ca.crt"}
users:
- name: $2
  user: {client-certificate: "$pki/$3.crt", client-key: "$pki/$3.key"}
contexts:
- name: torchyard-dev
  context: {cluster: torchyard-dev, user: $2}
current-context: torchyard-dev
KC
}
kubeconfig "$dir/admin.kubeconfig" admin admin
kubeconfig "$dir/controller-manager.kubeconfig" controller-manager controller-manager
kubeconfig "$dir/scheduler.kubeconfig" scheduler scheduler
kubeconfig "$dir/node-dev-cluster.kubeconfig" system:node:dev-cluster node-dev-cluster

start() {  # name args...: a process in its own session, its pid in run/, its output in logs/
    local name=$1; shift
    setsid "$bin/$name" "$@" > "$dir/logs/$name.log" 2>&1 < /dev/null &
    echo $! > "$dir/run/$name.pid"
}
wait_for() {  # what seconds command...
    local what=$1 seconds=$2; shift 2
    local deadline=$((SECONDS + seconds))
    until "$@"; do
        if (( SECONDS > deadline )); then
            say "$what did not come up in ${seconds}s; its log:"
            tail -n 30 "$dir/logs/$what.log" >&2 || true
            "$here/down.sh" "$dir" >/dev/null 2>&1 || true
            exit 1
        fi
        sleep 0.3
    done
}

cat > "$dir/admission.yaml" <<AC
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: PodSecurity
  configuration:
    apiVersion: pod-security.admission.config.k8s.io/v1
    kind: PodSecurityConfiguration
    defaults: {enforce: baseline, enforce-version: latest, warn: restricted, warn-version: latest}
    exemptions: {namespaces: [kube-system]}
AC

# Every request made by a ServiceAccount of torchyard-system, one JSON line each: tests compare what the operator
# (as the chart's ServiceAccount) really asked for with the chart's RBAC rules.
cat > "$dir/audit-policy.yaml" <<AP
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  userGroups: ["system:serviceaccounts:torchyard-system"]
- level: None
AP

echo "$NODE" > "$dir/run/node"
bind=127.0.0.1 endpoints=(--advertise-address 127.0.0.1 --endpoint-reconciler-type none)
if [[ $NODE == kubelet ]]; then
    # the pod network's gateway exists before the API server advertises it as the `kubernetes` endpoint
    ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
    ip addr replace "$NODE_IP/${POD_CIDR#*/}" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    bind=0.0.0.0 endpoints=(--advertise-address "$NODE_IP")
fi

say "starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler ($("$bin/kube-apiserver" --version))"
start etcd --name default --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "default=http://127.0.0.1:$peer_port" --log-level warn
etcd_healthy() { curl -fsS --max-time 2 "http://127.0.0.1:$etcd_port/health" -o /dev/null 2>/dev/null; }
wait_for etcd 30 etcd_healthy

start kube-apiserver --bind-address "$bind" "${endpoints[@]}" --secure-port "$api_port" \
    --etcd-servers "http://127.0.0.1:$etcd_port" --cert-dir "$dir/run" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$pki/sa.pub" \
    --service-account-signing-key-file "$pki/sa.key" --service-cluster-ip-range 10.96.0.0/16 \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction,OwnerReferencesPermissionEnforcement,PodSecurity,PodNodeSelector,PodTolerationRestriction,ValidatingAdmissionPolicy \
    --admission-control-config-file "$dir/admission.yaml" \
    --audit-policy-file "$dir/audit-policy.yaml" --audit-log-path "$dir/logs/audit.log" \
    --audit-log-maxsize 200 --audit-log-maxbackup 1 \
    --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$pki/apiserver-kubelet-client.key" --kubelet-preferred-address-types InternalIP \
    --allow-privileged=false
wait_for kube-apiserver 90 ready

common=(--bind-address 127.0.0.1 --leader-elect=false)
start kube-controller-manager "${common[@]}" --secure-port "$kcm_port" \
    --kubeconfig "$dir/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$dir/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$dir/controller-manager.kubeconfig" \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --use-service-account-credentials --cluster-signing-cert-file "$pki/ca.crt" \
    --cluster-signing-key-file "$pki/ca.key"
start kube-scheduler "${common[@]}" --secure-port "$sched_port" --kubeconfig "$dir/scheduler.kubeconfig" \
    --authentication-kubeconfig "$dir/scheduler.kubeconfig" --authorization-kubeconfig "$dir/scheduler.kubeconfig"

# without the controller manager no namespace gets its default ServiceAccount, and every pod is refused
has_default_sa() { api_get /api/v1/namespaces/default/serviceaccounts/default; }
wait_for kube-controller-manager 60 has_default_sa
# shellcheck source=scripts/cluster/kubelet.sh
[[ $NODE == kubelet ]] && source "$here/kubelet.sh"
say "up: API server $server; logs in $dir/logs; stop with scripts/cluster/down.sh $dir"
echo "export KUBECONFIG=$dir/admin.kubeconfig"
