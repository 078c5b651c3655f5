#!/usr/bin/env bash
# A real multi-node Ray cluster on this one machine: a head and two worker nodes started with
# `ray start`, each its own raylet with its own ports, object store and logical CPUs, so that
# placement, node loss and cluster-wide storage can be tried without a cloud account.
#
#   scripts/cluster.sh up        # head + node_a + node_b; prints the addresses
#   scripts/cluster.sh status    # the nodes Ray sees (node id, custom resource, alive)
#   scripts/cluster.sh pid NODE  # the raylet PID of head | node_a | node_b (to kill a node)
#   scripts/cluster.sh down      # stops exactly this cluster's processes (not another Ray on the machine)
#
# Each node carries a custom resource naming it (tamor_head, tamor_node_a, tamor_node_b: 1 each) so
# a test can place work and check where it ran. Token authentication stays on (Ray 2.60's default):
# the head writes ~/.ray/auth_token and the worker nodes and clients on this machine read it.
# Settings: TAMOR_CLUSTER_PORT (GCS, 6391), TAMOR_CLUSTER_DASHBOARD (8267), TAMOR_CLUSTER_CPUS (logical
# CPUs per node, 2), TAMOR_CLUSTER_OBJECT_STORE (bytes per node, 1 GiB).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f .venv/bin/activate ] && source .venv/bin/activate

gcs_port=${TAMOR_CLUSTER_PORT:-6391}
dashboard_port=${TAMOR_CLUSTER_DASHBOARD:-8267}
cpus=${TAMOR_CLUSTER_CPUS:-2}
store=${TAMOR_CLUSTER_OBJECT_STORE:-$((1024 * 1024 * 1024))}
address="127.0.0.1:$gcs_port"
export RAY_AUTH_MODE=token

# Every port a node opens, offset per node so three raylets share one host.
node_ports() {  # $1: node index 0 (head), 1, 2
    local base=$((20000 + $1 * 1000))
    echo "--node-manager-port $((base + 1)) --object-manager-port $((base + 2)) --metrics-export-port $((base + 3))" \
         "--dashboard-agent-listen-port $((base + 4)) --dashboard-agent-grpc-port $((base + 5))" \
         "--runtime-env-agent-port $((base + 6)) --min-worker-port $((base + 100)) --max-worker-port $((base + 999))"
}

up() {
    if pgrep -f -- "--gcs_server_port=$gcs_port" >/dev/null; then
        echo "a cluster already runs on $address (scripts/cluster.sh down first)" >&2
        exit 1
    fi
    # shellcheck disable=SC2046
    ray start --head --node-ip-address 127.0.0.1 --port "$gcs_port" --num-cpus "$cpus" --object-store-memory "$store" \
        --resources '{"tamor_head": 1}' --dashboard-host 127.0.0.1 --dashboard-port "$dashboard_port" \
        --ray-client-server-port $((gcs_port + 10)) --disable-usage-stats $(node_ports 0) >/dev/null
    local i=1
    for node in node_a node_b; do
        # shellcheck disable=SC2046
        ray start --address "$address" --node-ip-address 127.0.0.1 --num-cpus "$cpus" --object-store-memory "$store" \
            --resources "{\"tamor_$node\": 1}" --disable-usage-stats $(node_ports $i) >/dev/null
        i=$((i + 1))
    done
    pgrep -af -- "--gcs_server_port=$gcs_port( |$)" | grep -o "/[^ ]*/session_[0-9_-]*" | head -1 >"$session_file"
    wait_for_nodes 3
    echo "cluster up: RAY_ADDRESS=$address  dashboard/jobs: http://127.0.0.1:$dashboard_port  (nodes: head, node_a, node_b)"
}

wait_for_nodes() {  # until Ray reports $1 alive nodes (60 s)
    for _ in $(seq 60); do
        [ "$(alive_nodes)" -ge "$1" ] && return 0
        sleep 1
    done
    echo "the cluster did not reach $1 nodes:" >&2
    status >&2
    exit 1
}

alive_nodes() {
    RAY_ADDRESS=$address python -c "import ray; ray.init(logging_level='ERROR', log_to_driver=False); print(sum(n['Alive'] for n in ray.nodes()))" 2>/dev/null || echo 0
}

status() {
    RAY_ADDRESS=$address python - <<'EOF'
import ray
ray.init(logging_level="ERROR", log_to_driver=False)
for n in ray.nodes():
    name = next((k for k in n["Resources"] if k.startswith("tamor_")), "?")
    print(f"{name:14s} {n['NodeID'][:12]} alive={n['Alive']} port={n['NodeManagerPort']} cpus={n['Resources'].get('CPU', 0)}")
EOF
}

pid() {  # the raylet of one node, found by its node-manager port
    local index
    case "$1" in head) index=0 ;; node_a) index=1 ;; node_b) index=2 ;; *) echo "unknown node $1 (head, node_a, node_b)" >&2; exit 2 ;; esac
    pgrep -f -- "raylet.*--node_manager_port=$((20000 + index * 1000 + 1))( |$)" | head -1
}

descendants() {  # $@ and every process below them
    local pid
    for pid in "$@"; do
        echo "$pid"
        # shellcheck disable=SC2046
        descendants $(pgrep -P "$pid" || true)
    done
}

session_file="${TMPDIR:-/tmp}/tamor-cluster-$gcs_port.session"

cluster_pids() {
    # Every root process of this cluster (GCS, dashboard, monitors, raylets) names the cluster's session
    # directory on its command line; agents and workers are their children. Nothing else is touched:
    # another Ray on the machine keeps running.
    local session
    session=$(cat "$session_file" 2>/dev/null || true)
    [ -z "$session" ] && return 0
    # shellcheck disable=SC2046
    descendants $(pgrep -f -- "($session|--address=[^ ]*:$gcs_port)( |/|$)" || true) | sort -u
}

running() {  # which of $@ still run (zombies waiting for their parent do not count)
    ps -o pid=,stat= -p "$(echo "$@" | tr ' ' ',')" 2>/dev/null | awk '$2 !~ /^Z/ {print $1}'
}

down() {
    # `ray.init()` with no address would otherwise try to join the cluster being stopped
    if grep -qs ":$gcs_port\$" /tmp/ray/ray_current_cluster; then rm -f /tmp/ray/ray_current_cluster; fi
    local pids
    pids=$(cluster_pids)
    [ -z "$pids" ] && { echo "no cluster on $address"; rm -f "$session_file"; return 0; }
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 10); do  # raylets and workers go at once; the GCS and monitors linger: then SIGKILL
        # shellcheck disable=SC2086
        [ -z "$(running $pids)" ] && break
        sleep 0.5
    done
    local left
    # shellcheck disable=SC2086
    left=$(running $pids)
    # shellcheck disable=SC2086
    kill -KILL $left 2>/dev/null || true
    rm -f "$session_file"
    echo "cluster down${left:+ ($(echo $left | wc -w) lingering processes killed)}"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    pid) pid "${2:?node name}" ;;
    *) echo "usage: $0 up|down|status|pid NODE" >&2; exit 2 ;;
esac
