# shellcheck shell=bash disable=SC2154  # sourced by up.sh, whose variables it uses
# Sourced by scripts/cluster/up.sh when NODE=kubelet, after the control plane is up: a real node on this
# host, every part from the pinned release or from Debian, none of it from a registry.
#   containerd (Debian) with a private config, state and socket under $dir/kubelet, runc, and the
#     Debian CNI plugins: a bridge $BRIDGE with the pod network $POD_CIDR, its gateway $NODE_IP being this host
#   the pause image built from the release's pause.c (images/pause/build.sh), and the images of `make images`
#     imported into containerd's k8s.io namespace under the names pods use (nothing is ever pulled); its
#     image store is in the user's cache, so a restarted or second cluster finds them imported
#   kube-proxy (iptables) so that pods reach Services, the API server's own `kubernetes` Service included
#   cluster DNS: CoreDNS (built by build.sh) as a process on $NODE_IP:53, the kubelet's clusterDNS, serving
#     cluster.local from the API as a cluster's DNS does (pod hostname/subdomain records of headless Services)
#   the kubelet, node name $NODE_NAME, logged in as system:node:$NODE_NAME
# Uses up.sh's variables and functions (dir, bin, pki, server, cert, kubeconfig, start, wait_for, pick, say).
# Needs root: the bridge, iptables and containerd. cgroup v1 works (the kubelet's failCgroupV1 is off).

kubelet_dir=$dir/kubelet
image_store=${TORCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/torchyard}/containerd
mkdir -p "$kubelet_dir"/{cni,ipam,root,containerd,runc} "$image_store/imported"
kubelet_port=$(pick kubelet); proxy_health_port=$(pick proxy-health); proxy_metrics_port=$(pick proxy-metrics)
printf '%s\n' "kubelet=$kubelet_port" "proxy-health=$proxy_health_port" "proxy-metrics=$proxy_metrics_port" \
    >> "$dir/ports"

cert "node-$NODE_NAME" "/O=system:nodes/CN=system:node:$NODE_NAME"
cert kube-proxy "/CN=system:kube-proxy"
cert coredns "/CN=torchyard:coredns"
cert kubelet-serving "/CN=$NODE_NAME" serverAuth
kubeconfig "$dir/node-$NODE_NAME.kubeconfig" "system:node:$NODE_NAME" "node-$NODE_NAME"
kubeconfig "$dir/kube-proxy.kubeconfig" system:kube-proxy kube-proxy
kubeconfig "$dir/coredns.kubeconfig" torchyard:coredns coredns

cat > "$kubelet_dir/containerd.toml" <<TOML
version = 2
root = "$image_store/root"
state = "$kubelet_dir/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$dir/run/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$kubelet_dir/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # this host may withhold CAP_SYS_RESOURCE, which lowering a process's oom_score_adj needs (the pause
  # container asks for -998): containers then keep containerd's own score or above
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "$kubelet_dir/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$kubelet_dir/cni"
TOML

cat > "$kubelet_dir/cni/10-torchyard.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "torchyard", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$kubelet_dir/ipam", "routes": [{"dst": "0.0.0.0/0"}],
            "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON

# pods reach Services through kube-proxy's rules, and those of a pod to a Service back on the same bridge
# pass iptables only when bridged traffic is sent through it
sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1

echo "$dir" > "$HOST_NODE_FILE"
say "starting containerd ($(containerd --version | cut -d' ' -f3)) on $dir/run/containerd.sock"
setsid containerd --config "$kubelet_dir/containerd.toml" > "$dir/logs/containerd.log" 2>&1 < /dev/null &
echo $! > "$dir/run/containerd.pid"
containerd_up() { ctr --address "$dir/run/containerd.sock" version >/dev/null 2>&1; }
wait_for containerd 30 containerd_up

# images are imported under the names pods give (torchyard/trainer:X is docker.io/torchyard/trainer:X),
# once per build: imported/<name>.id remembers which build containerd has
import_image() {  # buildah-name pod-name
    local id marker
    marker=$image_store/imported/$(echo "$2" | tr '/:' '__').id
    id=$(buildah inspect --type image --format '{{.FromImageID}}' "$1")
    if [[ $(cat "$marker" 2>/dev/null) == "$id" ]] &&
        ctr --address "$dir/run/containerd.sock" -n k8s.io images ls -q "name==$2" | grep -q .; then
        return
    fi
    say "importing $2 into containerd (namespace k8s.io)"
    buildah push --quiet "$1" "docker-archive:${marker%.id}.tar:$2" >/dev/null
    ctr --address "$dir/run/containerd.sock" -n k8s.io images import "${marker%.id}.tar" >/dev/null
    rm -f "${marker%.id}.tar"
    echo "$id" > "$marker"
}
import_image "$PAUSE_IMAGE" "$PAUSE_IMAGE"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/../../pyproject.toml" | head -1)
for image in operator trainer; do
    if buildah inspect --type image "localhost/torchyard/$image:$version" >/dev/null 2>&1; then
        import_image "localhost/torchyard/$image:$version" "docker.io/torchyard/$image:$version"
    else
        say "torchyard/$image:$version is not built (make images): pods that name it will not start"
    fi
done

api_post() {  # path json: creates an object as the admin unless it exists
    curl -sS --max-time 10 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
        -H 'Content-Type: application/json' -X POST "$server$1" -d "$2" -o /dev/null -w '%{http_code}' |
        grep -qE '^(201|409)$'
}
api_post /apis/rbac.authorization.k8s.io/v1/clusterroles '{"metadata": {"name": "torchyard:coredns"},
  "rules": [{"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": ["list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}]}'
api_post /apis/rbac.authorization.k8s.io/v1/clusterrolebindings '{"metadata": {"name": "torchyard:coredns"},
  "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "torchyard:coredns"},
  "subjects": [{"kind": "User", "name": "torchyard:coredns", "apiGroup": "rbac.authorization.k8s.io"}]}'
# the API server asks the kubelet for logs, exec and port-forward as this user
api_post /apis/rbac.authorization.k8s.io/v1/clusterrolebindings '{"metadata": {"name": "torchyard:apiserver-kubelet"},
  "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:kubelet-api-admin"},
  "subjects": [{"kind": "User", "name": "kube-apiserver-kubelet-client", "apiGroup": "rbac.authorization.k8s.io"}]}'

cat > "$kubelet_dir/Corefile" <<CORE
cluster.local:53 in-addr.arpa:53 {
    bind $NODE_IP
    errors
    kubernetes cluster.local in-addr.arpa {
        kubeconfig $dir/coredns.kubeconfig torchyard-dev
        pods insecure
    }
    cache 5
}
.:53 {
    bind $NODE_IP
    forward . /etc/resolv.conf
    cache 30
}
CORE
start coredns -conf "$kubelet_dir/Corefile"

cat > "$kubelet_dir/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
clientConnection: {kubeconfig: $dir/kube-proxy.kubeconfig}
healthzBindAddress: 127.0.0.1:$proxy_health_port
metricsBindAddress: 127.0.0.1:$proxy_metrics_port
conntrack: {maxPerCore: 0}
YAML
start kube-proxy --config "$kubelet_dir/kube-proxy.yaml"

# Thresholds for a shared development disk: the defaults (evict below 15% free, image GC above 85% used)
# would evict the pods and delete the imported images on a disk that is merely full of other work.
cat > "$kubelet_dir/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$dir/run/containerd.sock
address: $NODE_IP
port: $kubelet_port
readOnlyPort: 0
healthzPort: 0
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
clusterDNS: [$NODE_IP]
failSwapOn: false
podLogsDir: $kubelet_dir/pod-logs
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionPressureTransitionPeriod: 30s
YAML
start kubelet --config "$kubelet_dir/kubelet.yaml" --kubeconfig "$dir/node-$NODE_NAME.kubeconfig" \
    --root-dir "$kubelet_dir/root" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP"
node_ready() {
    curl -fsS --max-time 3 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
        "$server/api/v1/nodes/$NODE_NAME" 2>/dev/null |
        python3 -c 'import json, sys; s = json.load(sys.stdin)["status"]
sys.exit(0 if any(c["type"] == "Ready" and c["status"] == "True" for c in s["conditions"]) else 1)' 2>/dev/null
}
wait_for kubelet 90 node_ready
say "node $NODE_NAME is Ready (kubelet on containerd; pod network $POD_CIDR on $BRIDGE; DNS $NODE_IP)"
