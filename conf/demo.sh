#!/usr/bin/env bash
# The demo behind `make run`: two stand-in datacenters and Rempart in front of them.
#
#   dc-a  dc-a-1 on 127.0.0.1:18081, dc-a-2 on 127.0.0.1:18083   (first in priority)
#   dc-b  dc-b-1 on 127.0.0.1:18082                             (takes over when dc-a is down)
#   Rempart  http://127.0.0.1:8080, https://localhost:8443, admin http://127.0.0.1:9901
#
# Rempart runs in the foreground with conf/rempart.yaml. Ctrl-C stops Rempart and the origins.
# Expects release binaries (make build); run it through `make run`.
set -euo pipefail
cd "$(dirname "$0")/.."

rempart=target/release/rempart
origin=target/release/ent-origin
config=conf/rempart.yaml

for bin in "$rempart" "$origin"; do
  if [ ! -x "$bin" ]; then
    echo "demo: $bin is missing: run 'make run' (or 'make build') first" >&2
    exit 1
  fi
done

. conf/demo-lib.sh   # port_taken, stop, wait_http
for port in 18081 18082 18083 8080 8443 9901; do
  if port_taken "$port"; then
    echo "demo: port $port is already in use (another demo still running?)" >&2
    exit 1
  fi
done

# The TLS listener needs the dev certificate (committed; certs/make-dev-certs.sh remakes it).
if [ ! -f certs/dev/localhost.crt ] || [ ! -f certs/dev/localhost.key ]; then
  echo "demo: certs/dev/localhost.{crt,key} missing: making the dev certificates"
  sh certs/make-dev-certs.sh
fi

pids=()
rempart_pid=
cleanup() {
  trap - EXIT
  trap "" INT TERM   # a second Ctrl-C must not cut the clean-up short
  if [ -n "$rempart_pid" ]; then stop INT "$rempart_pid"; fi
  for pid in "${pids[@]}"; do stop TERM "$pid"; done
  echo "demo: stopped"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_origin() { # NAME PORT
  # Logins cost 1 s on these stand-in backends, so that the login queue has something to do.
  "$origin" --listen "127.0.0.1:$2" --name "$1" --login-cost 1s &
  pids+=($!)
}
start_origin dc-a-1 18081
start_origin dc-a-2 18083
start_origin dc-b-1 18082

for port in 18081 18083 18082; do
  wait_http "http://127.0.0.1:$port/healthz" 10 || { echo "demo: origin on :$port did not start" >&2; exit 1; }
done

"$rempart" -c "$config" &
rempart_pid=$!

# Wait for the admin endpoint, unless Rempart exits first (bad config, port taken...).
deadline=$((SECONDS + 20))
until curl -fsS -o /dev/null --max-time 1 http://127.0.0.1:9901/healthz 2>/dev/null; do
  if ! kill -0 "$rempart_pid" 2>/dev/null; then
    set +e; wait "$rempart_pid"; rc=$?; set -e
    rempart_pid=
    echo "demo: rempart exited with status $rc" >&2
    exit "$rc"
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "demo: rempart's admin endpoint did not answer within 20s; still waiting on it" >&2
    break
  fi
  sleep 0.2
done

token_hdr=
# Calls that change something need the token when there is one, else X-Rempart-Admin: 1.
post_hdr=" -H 'X-Rempart-Admin: 1'"
if [ -n "${REMPART_ADMIN_TOKEN:-}" ]; then
  token_hdr=' -H "Authorization: Bearer $REMPART_ADMIN_TOKEN"'
  post_hdr=$token_hdr
fi
cat <<BANNER

  Rempart demo is running (Ctrl-C stops everything)
  ------------------------------------------------------------------
  proxy    curl http://127.0.0.1:8080/                 (answered by dc-a)
           curl -k --http2 https://localhost:8443/     (or --cacert certs/dev/ca.crt instead of -k)
  admin    curl${token_hdr} http://127.0.0.1:9901/status
           curl${token_hdr} -s http://127.0.0.1:9901/metrics | grep rempart_
           curl -X POST${post_hdr} http://127.0.0.1:9901/upstreams/ent/datacenters/dc-a/drain
           (traffic moves to dc-b; .../dc-a/undrain brings it back after failback_after, 30s)
           dashboard: http://127.0.0.1:9901/
  origins  dc-a: 127.0.0.1:18081 (dc-a-1), 127.0.0.1:18083 (dc-a-2)
           dc-b: 127.0.0.1:18082 (dc-b-1)
  logins   curl -X POST -H 'X-ENT-UAI: 0750001A' http://127.0.0.1:8080/auth/login
           (schools: conf/tenants.txt; a pass after a successful login, not after password=wrong)
  config   $config (reload: kill -HUP $rempart_pid,
           or curl -X POST${post_hdr} http://127.0.0.1:9901/reload)
  ------------------------------------------------------------------

BANNER

set +e
wait "$rempart_pid"
rc=$?
set -e
rempart_pid=
exit "$rc"
