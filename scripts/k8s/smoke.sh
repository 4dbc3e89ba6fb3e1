#!/usr/bin/env bash
# Starts the control plane built by build.sh in a temp dir on free loopback ports, the way the
# Rust harness does (flags: see README.md beside this file), checks that it works, and stops
# everything it started:
#   - /readyz, `kubectl version` (server v1.x.y), a namespace, a StatefulSet whose pod is created
#     by the StatefulSet controller and stays Pending (there are no nodes), its default
#     ServiceAccount and kube-root-ca.crt ConfigMap, and the `kubernetes` Service's EndpointSlice.
# Root only: it adds an empty bridge interface with 10.203.0.1/32 for the apiserver's advertise address
# (it must not be loopback) and deletes it on exit. No traffic is sent to that address.
#
#   bash scripts/k8s/smoke.sh           KEEP=1 leaves the temp dir (logs) behind
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=$(bash "$here/build.sh" | tail -1)
kube=$bin/kube

dir=$(mktemp -d /tmp/toygres-k8s-smoke.XXXXXX)
pids=()
iface=tgk8s0
advertise=10.203.0.1
cleanup() {
    # Stop in reverse start order: an apiserver whose etcd is gone retries etcd for minutes
    # during its graceful shutdown. Whatever is still running after 10 s gets SIGKILL.
    local i pid t
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        pid=${pids[i]}
        kill "$pid" 2>/dev/null || continue
        for ((t = 0; t < 100; t++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    ip link del "$iface" 2>/dev/null || true
    if [[ -n ${KEEP:-} ]]; then echo "logs kept in $dir" >&2; else rm -rf "$dir"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ms() { echo $(( $(date +%s%N) / 1000000 )); }
started=$(ms)

ip link add "$iface" type bridge
ip addr add "$advertise/32" dev "$iface"
ip link set "$iface" up

etcd_port=$(free_port)
etcd_peer_port=$(free_port)
api_port=$(free_port)

# --- etcd
"$bin/etcd" --name=default --data-dir="$dir/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster="default=http://127.0.0.1:$etcd_peer_port" \
    --unsafe-no-fsync --log-level=warn >"$dir/etcd.log" 2>&1 &
pids+=($!)

# --- credentials: a service-account key pair, and static tokens for the admin and the components
openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
admin_token=$(openssl rand -hex 16)
kcm_token=$(openssl rand -hex 16)
sched_token=$(openssl rand -hex 16)
user_token=$(openssl rand -hex 16)
cat >"$dir/tokens.csv" <<EOF
$admin_token,admin,admin,"system:masters"
$kcm_token,system:kube-controller-manager,system:kube-controller-manager,"system:masters"
$sched_token,system:kube-scheduler,system:kube-scheduler
$user_token,tester,tester
EOF

# --- kube-apiserver (a self-signed serving cert is generated in --cert-dir)
mkdir -p "$dir/pki"
"$kube" kube-apiserver \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 --secure-port="$api_port" --advertise-address="$advertise" \
    --cert-dir="$dir/pki" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --service-account-issuer="https://127.0.0.1:$api_port" \
    --service-account-key-file="$dir/sa.pub" --service-account-signing-key-file="$dir/sa.key" \
    --authorization-mode=Node,RBAC --token-auth-file="$dir/tokens.csv" \
    --allow-privileged=true \
    >"$dir/kube-apiserver.log" 2>&1 &
pids+=($!)

kubeconfig() { # name token
    cat >"$dir/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: toygres
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $dir/pki/apiserver.crt
users:
- name: $1
  user:
    token: $2
contexts:
- name: $1
  context: {cluster: toygres, user: $1}
current-context: $1
EOF
}
kubeconfig admin "$admin_token"
kubeconfig kube-controller-manager "$kcm_token"
kubeconfig kube-scheduler "$sched_token"
kubeconfig tester "$user_token"
k() { "$kube" kubectl --kubeconfig="$dir/admin.kubeconfig" "$@"; }

wait_for() { # description seconds command...
    local what=$1 secs=$2 i
    shift 2
    for ((i = 0; i < secs * 10; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "timed out waiting for $what; logs in $dir" >&2
    KEEP=1
    tail -20 "$dir"/*.log >&2
    exit 1
}
wait_for "the apiserver's serving cert" 30 test -s "$dir/pki/apiserver.crt"
wait_for "/readyz" 60 k get --raw /readyz
echo "apiserver ready after $(( $(ms) - started )) ms"

# --- kube-controller-manager and kube-scheduler
"$kube" kube-controller-manager \
    --kubeconfig="$dir/kube-controller-manager.kubeconfig" \
    --leader-elect=false --secure-port=0 \
    --use-service-account-credentials=false \
    --service-account-private-key-file="$dir/sa.key" --root-ca-file="$dir/pki/apiserver.crt" \
    --controllers=serviceaccount-controller,namespace-controller,garbage-collector-controller,statefulset-controller,deployment-controller,replicaset-controller,endpoints-controller,endpointslice-controller,endpointslice-mirroring-controller,persistentvolume-binder-controller,persistentvolume-protection-controller,persistentvolumeclaim-protection-controller,root-ca-certificate-publisher-controller,clusterrole-aggregation-controller,disruption-controller \
    >"$dir/kube-controller-manager.log" 2>&1 &
pids+=($!)
"$kube" kube-scheduler \
    --kubeconfig="$dir/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="$dir/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$dir/kube-scheduler.kubeconfig" \
    --leader-elect=false --secure-port=0 \
    >"$dir/kube-scheduler.log" 2>&1 &
pids+=($!)

echo "--- checks"
k get --raw /readyz; echo
k version
k create namespace smoke
wait_for "the default ServiceAccount (serviceaccount-controller)" 30 k -n smoke get serviceaccount default
wait_for "kube-root-ca.crt (root-ca-certificate-publisher-controller)" 30 k -n smoke get configmap kube-root-ca.crt
echo "namespace ready after $(( $(ms) - started )) ms"
k -n smoke apply -f - <<'EOF'
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: pg}
spec:
  serviceName: pg
  replicas: 1
  selector: {matchLabels: {app: pg}}
  template:
    metadata: {labels: {app: pg}}
    spec:
      containers:
        - name: sidecar
          image: toygres/sidecar
EOF
wait_for "pod pg-0 (statefulset-controller)" 30 k -n smoke get pod pg-0
wait_for "pg-0 to be judged unschedulable (kube-scheduler)" 30 \
    bash -c "'$kube' kubectl --kubeconfig='$dir/admin.kubeconfig' -n smoke get pod pg-0 -o jsonpath='{.status.conditions[?(@.type==\"PodScheduled\")].reason}' | grep -qx Unschedulable"
k -n smoke get statefulset,pods -o wide
k get endpointslices -n default -l kubernetes.io/service-name=kubernetes
# A restricted user: nothing until bound; then what the aggregated `edit` ClusterRole allows
# (filled by clusterrole-aggregation-controller) in its namespace only.
kt() { "$kube" kubectl --kubeconfig="$dir/tester.kubeconfig" "$@"; }
[[ $(kt auth can-i list pods -n smoke) == no ]]
k -n smoke create rolebinding tester-edit --clusterrole=edit --user=tester
wait_for "tester may create configmaps in smoke (edit is aggregated)" 30 kt -n smoke auth can-i create configmaps
kt -n smoke create configmap from-tester --from-literal=a=b
if kt -n default get pods >/dev/null 2>&1; then echo "tester can read pods in default" >&2; exit 1; fi
echo "restricted user: allowed in smoke, denied in default"
k get --raw /version | grep -q "\"gitVersion\": \"$("$kube" kube-apiserver --version | awk '{print $2}')\""
echo "control plane smoke test passed after $(( $(ms) - started )) ms"
stop_started=$(ms)
trap - EXIT
cleanup
echo "stopped in $(( $(ms) - stop_started )) ms"
