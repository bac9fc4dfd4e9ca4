#!/usr/bin/env bash
# The demo behind `make cluster`: two Rempart nodes sharing one redis-server, in front of the
# same stand-in datacenters as `make run`.
#
#   store    redis-server on 127.0.0.1:6390 (no persistence; a directory under /tmp)
#   dc-a     dc-a-1 on 127.0.0.1:18081, dc-a-2 on 127.0.0.1:18083;  dc-b: dc-b-1 on 127.0.0.1:18082
#   node a   http://127.0.0.1:8080, admin http://127.0.0.1:9901
#   node b   http://127.0.0.1:8081, admin http://127.0.0.1:9902
#
# Both nodes read conf/cluster.yaml; their differences come from the environment. Ctrl-C stops
# everything. Expects release binaries (make build); run it through `make cluster`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash .ci/install-deps.sh --cluster
rempart=target/release/rempart
origin=target/release/ent-origin
for bin in "$rempart" "$origin"; do
  if [ ! -x "$bin" ]; then
    echo "cluster demo: $bin is missing: run 'make cluster' (or 'make build') first" >&2
    exit 1
  fi
done

. conf/demo-lib.sh   # port_taken, stop, wait_http
for port in 6390 18081 18082 18083 8080 8081 9901 9902; do
  if port_taken "$port"; then
    echo "cluster demo: port $port is already in use (another demo still running?)" >&2
    exit 1
  fi
done

work=$(mktemp -d /tmp/rempart-cluster-demo.XXXXXX)
pids=()
cleanup() {
  trap - EXIT
  trap "" INT TERM
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop TERM "${pids[i]}"; done
  rm -rf "$work"
  echo "cluster demo: stopped"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The store: Debian's redis-server, on loopback only, nothing written to disk.
mkdir -p "$work/store"
redis-server --port 6390 --bind 127.0.0.1 --save '' --appendonly no --dir "$work/store" \
  --logfile "$work/store/redis.log" &
pids+=($!)
for _ in $(seq 50); do port_taken 6390 && break; sleep 0.1; done
port_taken 6390 || { echo "cluster demo: redis-server did not start (see $work/store/redis.log)" >&2; exit 1; }

start_origin() { # NAME PORT
  "$origin" --listen "127.0.0.1:$2" --name "$1" --login-cost 1s &
  pids+=($!)
}
start_origin dc-a-1 18081
start_origin dc-a-2 18083
start_origin dc-b-1 18082
for port in 18081 18083 18082; do
  wait_http "http://127.0.0.1:$port/healthz" 10 || { echo "cluster demo: origin on :$port did not start" >&2; exit 1; }
done

# One secret for both nodes, new for each demo run.
REMPART_CLUSTER_SECRET=$(openssl rand -hex 32)
export REMPART_CLUSTER_SECRET
start_node() { # NAME LISTEN ADMIN
  mkdir -p "$work/$1"
  chmod 700 "$work/$1"
  REMPART_NODE=$1 REMPART_LISTEN=$2 REMPART_ADMIN=$3 REMPART_RUNTIME_DIR=$work/$1 \
    "$rempart" -c conf/cluster.yaml &
  pids+=($!)
}
start_node a 127.0.0.1:8080 127.0.0.1:9901
start_node b 127.0.0.1:8081 127.0.0.1:9902
for admin in 9901 9902; do
  wait_http "http://127.0.0.1:$admin/healthz" 20 || { echo "cluster demo: node on admin :$admin did not start" >&2; exit 1; }
done

cat <<BANNER

  Rempart cluster demo is running (Ctrl-C stops everything)
  ------------------------------------------------------------------
  nodes    a: curl http://127.0.0.1:8080/     admin http://127.0.0.1:9901/ (dashboard)
           b: curl http://127.0.0.1:8081/     admin http://127.0.0.1:9902/
  cluster  curl -s http://127.0.0.1:9901/status | python3 -m json.tool | grep -A12 '"cluster"'
           curl -s http://127.0.0.1:9901/metrics | grep rempart_cluster_
  logins   4 in flight for both nodes together:
           for i in \$(seq 12); do curl -s -o /dev/null -w '%{http_code} ' -X POST \\
             -H 'X-ENT-UAI: 0750001A' http://127.0.0.1:808\$((i % 2))/auth/login & done; wait
  store    pause it and see each node keep to its share:
           kill -STOP \$(pgrep -f 'redis-server 127.0.0.1:6390'); ...; kill -CONT \$(pgrep -f 'redis-server 127.0.0.1:6390')
  ------------------------------------------------------------------

BANNER

# Until Ctrl-C, or until one of the processes stops.
set +e
wait -n "${pids[@]}"
echo "cluster demo: a process stopped; stopping the others" >&2
exit 1
