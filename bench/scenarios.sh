#!/usr/bin/env bash
# `make bench` (second part): Rempart, NGINX and HAProxy side by side in eight scenarios, with the
# ratios Rempart/NGINX and Rempart/HAProxy for the rate and the p99 latency.
#
# Every proxy forwards to the same fixed-body origin (an NGINX of its own, one worker, answering
# {"ok":true} to everything: the echo origin of bench/run.sh would weigh in), and all three do the
# same header work: X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host and X-Request-Id (NGINX
# proxy_set_header, HAProxy option forwardfor, set-header and unique-id-header). Each proxy has one
# worker (server.threads 1, worker_processes 1, nbthread 1) but in the scaling scenario, a plain
# and a TLS listener (certs/dev/localhost.crt, ECDSA P-256, for all three), and the configuration
# of the scenario, generated into bench/out/scn-SCENARIO-*.
#
#   h1          plain HTTP/1.1: wrk, keep-alive GETs (the origin alone as a reference row)
#   ban         refusals of a banned address: 50 keep-alive connections from 127.0.0.1, banned
#               (Rempart: by its shield, see below; NGINX deny; HAProxy http-request deny): 403s
#   ratelimit   refusals by a rate limit: the same 50 connections, a client_ip limit of 1/s: 429s
#   churn       CHURN_REQUESTS (200,000) requests, each from a new client address given in
#               X-Forwarded-For by a trusted proxy (127.0.0.1), through a client_ip limit that
#               refuses nothing: the time it takes
#   h2tls       TLS + HTTP/2: h2load over TLS, ALPN h2, H2_CLIENTS connections x H2_STREAMS streams
#   handshakes  a new TLS connection per request (full handshakes, no resumption): HS_CLIENTS
#               `openssl s_time -new` in parallel
#   policy      a realistic policy: a client_ip limit that refuses nothing, the access log on (to a
#               file), 10% of the requests POST /login through a login queue (Rempart) or a
#               backend with maxconn (HAProxy), health checks on the upstream; wrk mixing paths
#   scaling     h1 again with two workers each (threads 2, worker_processes 2, nbthread 2)
#
# Rounds alternate: in each scenario the targets take turns BENCH_ROUNDS times, each keeps its
# best round (highest rate), errors add up over the rounds. A row with errors (answers other than
# the intended ones, socket errors) is flagged. The CPU idle share is taken before and after each
# scenario. Writes bench/out/scenarios.md (a summary table, then a section per scenario with its
# exact commands) and prints it; raw outputs stay in bench/out/scn-*.
#
# Environment: BENCH_DURATION (seconds, default 10), BENCH_WARMUP (seconds, default 2),
# BENCH_ROUNDS (default 3), BENCH_CONNECTIONS (wrk connections, default 64), BENCH_THREADS (wrk and
# h2load threads, default 2), FLOOD_CONNECTIONS (50), CHURN_REQUESTS (200000), CHURN_TIMEOUT
# (seconds a churn round may take at most, 300), H2_CLIENTS (32), H2_STREAMS (10), HS_CLIENTS (8),
# SCENARIOS (default: all, in the order above), BENCH_TARGETS (default "rempart nginx haproxy"),
# BENCH_BIN_DIR (prebuilt binaries, no build) and BENCH_NO_BUILD=1 (see bench_binaries in
# bench/common.sh). Everything listens on 127.0.0.1 only; everything started here is stopped on
# exit, even on Ctrl-C; every run and every wait is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=$root/bench/out

duration=${BENCH_DURATION:-10}
duration=${duration%s}
warmup=${BENCH_WARMUP:-2}
warmup=${warmup%s}
rounds=${BENCH_ROUNDS:-3}
connections=${BENCH_CONNECTIONS:-64}
threads=${BENCH_THREADS:-2}
flood_connections=${FLOOD_CONNECTIONS:-50}
churn_requests=${CHURN_REQUESTS:-200000}
churn_timeout=${CHURN_TIMEOUT:-300}
h2_clients=${H2_CLIENTS:-32}
h2_streams=${H2_STREAMS:-10}
hs_clients=${HS_CLIENTS:-8}
for v in "$duration" "$warmup" "$rounds" "$connections" "$threads" "$flood_connections" \
  "$churn_requests" "$churn_timeout" "$h2_clients" "$h2_streams" "$hs_clients"; do
  case $v in ''|*[!0-9]*) echo "scenarios bench: BENCH_DURATION, BENCH_WARMUP, BENCH_ROUNDS, BENCH_CONNECTIONS, BENCH_THREADS, FLOOD_CONNECTIONS, CHURN_REQUESTS, CHURN_TIMEOUT, H2_CLIENTS, H2_STREAMS and HS_CLIENTS take whole numbers" >&2; exit 2 ;; esac
done
for v in "$duration" "$rounds" "$connections" "$threads" "$flood_connections" "$churn_requests" \
  "$churn_timeout" "$h2_clients" "$h2_streams" "$hs_clients"; do
  [ "$v" -gt 0 ] || { echo "scenarios bench: only BENCH_WARMUP may be 0" >&2; exit 2; }
done
[ "$h2_clients" -ge "$threads" ] || { echo "scenarios bench: H2_CLIENTS must be at least BENCH_THREADS (h2load -c >= -t)" >&2; exit 2; }
all_scenarios=(h1 ban ratelimit churn h2tls handshakes policy scaling)
read -r -a scenarios <<<"${SCENARIOS:-${all_scenarios[*]}}"
for s in "${scenarios[@]}"; do
  case " ${all_scenarios[*]} " in *" $s "*) ;; *) echo "scenarios bench: unknown scenario $s (known: ${all_scenarios[*]})" >&2; exit 2 ;; esac
done
read -r -a targets <<<"${BENCH_TARGETS:-rempart nginx haproxy}"
for t in "${targets[@]}"; do
  case $t in rempart|nginx|haproxy) ;; *) echo "scenarios bench: unknown target $t (rempart, nginx, haproxy)" >&2; exit 2 ;; esac
done

log() { printf 'scenarios bench: %s\n' "$*" >&2; }

bash .ci/install-deps.sh --bench >/dev/null
PATH=$PATH:/usr/sbin:/sbin   # nginx and haproxy live in /usr/sbin

# bench_binaries, pids, cleanup on exit, free_port, wait_ready, stop_pid, proc_family, cpu_idle,
# nginx_head, start_nginx, start_fixed_origin, the forwarded headers, wrk_read, label, ratio.
. bench/common.sh
bench_binaries
[ -x "$bin_dir/rempart" ] || { log "no rempart binary in $bin_dir"; exit 1; }
mkdir -p "$out"
rm -rf "$out"/scn-*

# A few hundred sockets at most; raised anyway, as connections.sh does (children inherit it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cert=$root/certs/dev/localhost.crt
key=$root/certs/dev/localhost.key
cat "$cert" "$key" >"$out/scn-haproxy.pem"   # HAProxy wants the chain and the key in one file

# --- the fixed-body origin ------------------------------------------------------------------------
free_port; origin_port=$PORT
start_fixed_origin "$out/scn-origin" "$origin_port"

# --- Lua scripts for wrk --------------------------------------------------------------------------
# Counting the answers by status (each wrk thread has its own Lua state: done() adds them up).
status_lua='
local bench_threads = {}
function setup(thread) table.insert(bench_threads, thread) end
statuses = {}
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(bench_threads) do
    for code, n in pairs(t:get("statuses")) do total[code] = (total[code] or 0) + n end
  end
  local parts = {}
  for code, n in pairs(total) do table.insert(parts, code .. ":" .. n) end
  table.sort(parts)
  io.write("statuses " .. table.concat(parts, " ") .. "\n")
end
'
{
  echo "-- Generated by bench/scenarios.sh: counts the answers by status."
  echo "$status_lua"
} >"$out/scn-status.lua"
{
  echo "-- Generated by bench/scenarios.sh: a mix of an ENT's pages, one request in ten a POST /login"
  echo "-- (20 accounts, 20 schools named in X-ENT-UAI); counts the answers by status."
  echo "$status_lua"
  cat <<'LUA'
local reqs = {}
function init(args)
  local pages = { "/", "/pronote/eleve.html", "/api/v1/notes?periode=1", "/static/app.js",
    "/cahier-de-textes/semaine", "/messagerie/inbox", "/api/v1/agenda?jour=lundi",
    "/static/style.css", "/actualites/" }
  for i = 1, 200 do
    if i % 10 == 0 then
      local n = i / 10
      reqs[i] = wrk.format("POST", "/login", {
        ["Content-Type"] = "application/x-www-form-urlencoded",
        ["X-ENT-UAI"] = string.format("07500%02dA", n),
      }, string.format("username=eleve%02d&password=motdepasse", n))
    else
      reqs[i] = wrk.format("GET", pages[i % #pages + 1])
    end
  end
end
local next_req = 0
function request()
  next_req = next_req % #reqs + 1
  return reqs[next_req]
end
LUA
} >"$out/scn-policy.lua"

# --- configurations -------------------------------------------------------------------------------
# For scenario $scn and target T, on the ports port[T], tls_port[T] (and admin_port for Rempart),
# with $workers workers.
declare -A port=() tls_port=() main_pid=() status=()
admin_port=

rempart_conf() { # FILE
  {
    echo "# Generated by bench/scenarios.sh, scenario $scn"
    echo "server:"
    echo "  threads: $workers"
    if [ "$scn" = policy ]; then echo "  access_log: $out/scn-policy-rempart-access.log"; else echo "  access_log: off"; fi
    if [ "$scn" = churn ]; then echo "  trusted_proxies: [127.0.0.1/32]"; fi
    cat <<YAML
listeners:
  - address: 127.0.0.1:${port[rempart]}
  - address: 127.0.0.1:${tls_port[rempart]}
    tls:
      certificates:
        - { cert: $cert, key: $key }
admin:
  address: 127.0.0.1:$admin_port
upstreams:
  origin:
    datacenters:
      - name: local
        servers: [127.0.0.1:$origin_port]
YAML
    if [ "$scn" = policy ]; then
      echo "    health_check: { path: /healthz, interval: 1s, timeout: 500ms, rise: 2, fall: 2 }"
    fi
    echo "routes:"
    case $scn in
      ban) cat <<'YAML'
  - name: default
    match: { path_prefix: / }
    upstream: origin
    limits: [trip]
limits:
  # One request an hour: the second is refused, and that refusal bans the address for an hour.
  trip: { key: client_ip, rate: 1/h, burst: 1 }
shield:
  ban: { after: 1, within: 1m, for: 1h }
YAML
        ;;
      ratelimit) cat <<'YAML'
  - name: default
    match: { path_prefix: / }
    upstream: origin
    limits: [flood]
limits:
  flood: { key: client_ip, rate: 1/s, burst: 1, ban: false }
YAML
        ;;
      churn) cat <<'YAML'
  - name: default
    match: { path_prefix: / }
    upstream: origin
    limits: [per_client]
limits:
  per_client: { key: client_ip, rate: 100/s, burst: 100 }
YAML
        ;;
      policy) cat <<'YAML'
  - name: login
    match: { path_prefix: /login, methods: [POST] }
    upstream: origin
    limits: [per_ip]
    login_queue: logins
  - name: default
    match: { path_prefix: / }
    upstream: origin
    limits: [per_ip]
limits:
  per_ip: { key: client_ip, rate: 100000/s, burst: 100000 }
login_queues:
  logins:
    # More than the load generator's connections: nobody waits.
    concurrency: 128
    tenant: header:X-ENT-UAI
    secret: bench-scenarios-queue-secret
YAML
        ;;
      *) cat <<'YAML'
  - name: default
    match: { path_prefix: / }
    upstream: origin
YAML
        ;;
    esac
  } >"$1"
}

nginx_conf() { # FILE DIR
  {
    echo "# Generated by bench/scenarios.sh, scenario $scn"
    nginx_head "$2" "$workers"
    echo "http {"
    nginx_temp_paths "$2"
    if [ "$scn" = policy ]; then
      cat <<NGINX
  log_format bench escape=json '{"time":"\$time_iso8601","client_ip":"\$remote_addr","method":"\$request_method","path":"\$request_uri","status":\$status,"bytes":\$body_bytes_sent,"duration_ms":\$request_time,"upstream":"\$upstream_addr","request_id":"\$request_id"}';
  access_log $out/scn-policy-nginx-access.log bench;
NGINX
    else
      echo "  access_log off;"
    fi
    cat <<NGINX
  keepalive_requests 1000000;
  upstream origin {
    server 127.0.0.1:$origin_port;
    # Idle connections kept to the origin: as many as Rempart's (pingora's
    # upstream_keepalive_pool_size, 128).
    keepalive 128;
    keepalive_requests 1000000;
  }
  proxy_http_version 1.1;
  proxy_set_header Connection "";
$(nginx_forwarded_headers)
NGINX
    case $scn in
      ratelimit) cat <<'NGINX'
  limit_req_zone $binary_remote_addr zone=flood:1m rate=1r/s;
  limit_req_status 429;
NGINX
        ;;
      churn) cat <<'NGINX'
  set_real_ip_from 127.0.0.1;
  real_ip_header X-Forwarded-For;
  limit_req_zone $binary_remote_addr zone=per_client:64m rate=100r/s;
  limit_req_status 429;
NGINX
        ;;
      policy) cat <<'NGINX'
  limit_req_zone $binary_remote_addr zone=per_ip:16m rate=100000r/s;
  limit_req_status 429;
NGINX
        ;;
    esac
    cat <<NGINX
  server {
    listen 127.0.0.1:${port[nginx]};
    listen 127.0.0.1:${tls_port[nginx]} ssl http2;
    ssl_certificate $cert;
    ssl_certificate_key $key;
    ssl_protocols TLSv1.2 TLSv1.3;
NGINX
    case $scn in
      ban) echo "    location / { deny 127.0.0.1; proxy_pass http://origin; }" ;;
      ratelimit) echo "    location / { limit_req zone=flood; proxy_pass http://origin; }" ;;
      churn) echo "    location / { limit_req zone=per_client burst=100 nodelay; proxy_pass http://origin; }" ;;
      policy)
        # NGINX (open source) has no queue in front of an upstream: the login location only
        # has its own limit, as Rempart's login route has.
        echo "    location /login { limit_req zone=per_ip burst=100000 nodelay; proxy_pass http://origin; }"
        echo "    location / { limit_req zone=per_ip burst=100000 nodelay; proxy_pass http://origin; }"
        ;;
      *) echo "    location / { proxy_pass http://origin; }" ;;
    esac
    echo "  }"
    echo "}"
  } >"$1"
}

haproxy_conf() { # FILE
  local check=""
  {
    echo "# Generated by bench/scenarios.sh, scenario $scn"
    cat <<HAPROXY
global
  nbthread $workers
  maxconn 4096
HAPROXY
    if [ "$scn" = policy ]; then echo "  log stdout format raw local0 info"; fi
    cat <<HAPROXY
defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  timeout http-keep-alive 30s
HAPROXY
    if [ "$scn" = policy ]; then
      cat <<'HAPROXY'
  log global
  option dontlognull
  log-format '{"time":"%tr","client_ip":"%ci","method":"%HM","path":"%HU","status":%ST,"bytes":%B,"duration_ms":%Ta,"backend":"%b","server":"%s","request_id":"%ID"}'
HAPROXY
    fi
    cat <<HAPROXY
frontend bench
  bind 127.0.0.1:${port[haproxy]}
  bind 127.0.0.1:${tls_port[haproxy]} ssl crt $out/scn-haproxy.pem alpn h2,http/1.1
HAPROXY
    case $scn in
      ban) echo "  http-request deny deny_status 403" ;;
      ratelimit) cat <<'HAPROXY'
  stick-table type ip size 100k expire 10s store http_req_rate(1s)
  http-request track-sc0 src
  http-request deny deny_status 429 if { sc_http_req_rate(0) gt 1 }
HAPROXY
        ;;
      churn) cat <<'HAPROXY'
  http-request set-src hdr(x-forwarded-for) if { src 127.0.0.1 }
  stick-table type ip size 1m expire 10s store http_req_rate(1s)
  http-request track-sc0 src
  http-request deny deny_status 429 if { sc_http_req_rate(0) gt 100 }
HAPROXY
        ;;
      policy) cat <<'HAPROXY'
  stick-table type ip size 100k expire 10s store http_req_rate(1s)
  http-request track-sc0 src
  http-request deny deny_status 429 if { sc_http_req_rate(0) gt 100000 }
  use_backend login if { method POST } { path_beg /login }
HAPROXY
        ;;
    esac
    haproxy_forwarded_headers
    echo "  default_backend origin"
    if [ "$scn" = policy ]; then
      check=" check inter 1s rise 2 fall 2"
      cat <<HAPROXY
backend login
  option httpchk GET /healthz
  http-reuse always
  # A queue in front of the server, as Rempart's login queue (concurrency 128).
  server origin 127.0.0.1:$origin_port maxconn 128$check
HAPROXY
    fi
    echo "backend origin"
    if [ "$scn" = policy ]; then echo "  option httpchk GET /healthz"; fi
    echo "  http-reuse always"
    echo "  server origin 127.0.0.1:$origin_port$check"
  } >"$1"
}

# Start the three proxies with the configuration of $scn; a target that does not start says why
# in status[T] and is left out of the scenario.
start_proxies() {
  local t f code
  for t in "${targets[@]}"; do
    free_port; port[$t]=$PORT
    free_port; tls_port[$t]=$PORT
    status[$t]=ok
    code=200
    case $scn in ban) [ "$t" = rempart ] || code=403 ;; esac
    case $t in
      rempart)
        free_port; admin_port=$PORT
        f=$out/scn-$scn-rempart.yaml
        rempart_conf "$f"
        if ! "$bin_dir/rempart" -t -c "$f" >"$out/scn-$scn-rempart-check.txt" 2>&1; then
          status[$t]="configuration refused (see bench/out/scn-$scn-rempart-check.txt)"; continue
        fi
        "$bin_dir/rempart" -c "$f" >"$out/scn-$scn-rempart.log" 2>&1 &
        pids+=($!)
        ;;
      nginx)
        f=$out/scn-$scn-nginx.conf
        nginx_conf "$f" "$out/scn-$scn-nginx"
        start_nginx "$f" "$out/scn-$scn-nginx" "$out/scn-$scn-nginx.log"
        ;;
      haproxy)
        f=$out/scn-$scn-haproxy.cfg
        haproxy_conf "$f"
        if [ "$scn" = policy ]; then   # its access log goes to stdout
          haproxy -db -f "$f" >>"$out/scn-policy-haproxy-access.log" 2>"$out/scn-$scn-haproxy.log" &
        else
          haproxy -db -f "$f" >"$out/scn-$scn-haproxy.log" 2>&1 &
        fi
        pids+=($!)
        ;;
    esac
    main_pid[$t]=${pids[-1]}
    if ! wait_ready "$(label "$t")" "http://127.0.0.1:${port[$t]}/bench" "${main_pid[$t]}" "$code"; then
      status[$t]="did not start (see bench/out/scn-$scn-$t.log)"
    fi
  done
  # Rempart bans through its shield: the admin API lists and lifts bans (GET /bans, DELETE
  # /bans/{ip}) but has no call to add one, so the address earns it: its first request took the
  # one-an-hour limit's only token, the next is refused, and that refusal bans it (after: 1).
  if [ "$scn" = ban ] && [ "${status[rempart]:-}" = ok ]; then
    curl -s -o /dev/null --max-time 2 "http://127.0.0.1:${port[rempart]}/bench" || true
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:${port[rempart]}/bench" || true)
    curl -s --max-time 2 "http://127.0.0.1:$admin_port/bans" >"$out/scn-ban-rempart-bans.json" || true
    if [ "$code" != 403 ] || ! grep -q '"127.0.0.1' "$out/scn-ban-rempart-bans.json"; then
      status[rempart]="127.0.0.1 not banned (answer $code; see bench/out/scn-ban-rempart-bans.json)"
    else
      log "Rempart: 127.0.0.1 banned ($(cat "$out/scn-ban-rempart-bans.json"))"
    fi
  fi
}

# Stop the proxies: each main process (NGINX's master stops its workers), then whatever of its
# family outlived it (a worker whose master had to be killed).
stop_proxies() {
  local t p fam
  for t in "${targets[@]}"; do
    [ -n "${main_pid[$t]:-}" ] || continue
    mapfile -t fam < <(proc_family "${main_pid[$t]}")
    stop_pid "${main_pid[$t]}"
    for p in "${fam[@]:1}"; do kill -KILL "$p" 2>/dev/null || true; done
    main_pid[$t]=
  done
}

# Whether a target answers two requests on one connection (a refusal may close it, and the client
# then pays a new connection for every request): "kept" or "closed".
keep_alive() { # URL
  local n
  n=$(curl -s -o /dev/null -o /dev/null -w '%{num_connects}\n' --max-time 5 "$1" "$1" 2>/dev/null | tail -n 1)
  if [ "$n" = 0 ]; then echo kept; else echo closed; fi
}

# --- measuring ------------------------------------------------------------------------------------
# measure TARGET ROUND (in scenario $scn) sets m_rate (the rate the scenario compares, whole),
# m_p50 and m_p99 (ms, or n/a), m_errors, m_note, cmd[SCENARIO] (the exact command, URL and PORT
# the target's) and how[SCENARIO] (what goes with it).
declare -A cmd=() how=()
m_rate= m_p50= m_p99= m_errors= m_note= m_cpu= cur_target=

# The target's CPU time over the measured run, per answer: cpu_begin where the measured run
# starts (after the warm-up), cpu_end ANSWERS where it ends; m_cpu is then the microseconds of
# CPU (utime + stime of the proxy's processes, every thread) per answer, or empty for the origin.
cpu_family=() cpu_t0=
cpu_begin() {
  cpu_family=() cpu_t0=
  [ "$cur_target" != origin ] && [ -n "${main_pid[$cur_target]:-}" ] || return 0
  mapfile -t cpu_family < <(proc_family "${main_pid[$cur_target]}")
  cpu_t0=$(cpu_ticks "${cpu_family[@]}")
}
cpu_end() { # ANSWERS
  m_cpu=
  [ -n "$cpu_t0" ] && [ "${1:-0}" -gt 0 ] || return 0
  m_cpu=$(awk -v a="$(cpu_ticks "${cpu_family[@]}")" -v b="$cpu_t0" -v hz="$clk_tck" -v n="$1" \
    'BEGIN { printf "%.1f", (a - b) * 1e6 / hz / n }')
}
# The median of a list of numbers separated by " / " (failed rounds left out).
median() {
  tr '/' '\n' <<<"$1" | awk '$1 ~ /^[0-9.]+$/ { print $1 }' | sort -n | awk '{ v[++n] = $1 } END {
    if (!n) print ""; else if (n % 2) print v[(n + 1) / 2]; else printf "%.1f\n", (v[n / 2] + v[n / 2 + 1]) / 2 }'
}

warm_text() {
  if [ "$warmup" = 0 ]; then echo "no warm-up"; else echo "after the same for ${warmup}s, unmeasured"; fi
}
status_count() { # FILE CODE: answers with that status, from status.lua's line
  awk -v c="$2" '/^statuses/ { for (i = 2; i <= NF; i++) { split($i, a, ":"); if (a[1] == c) n += a[2] } } END { printf "%d", n }' "$1"
}
status_total() { # FILE
  awk '/^statuses/ { for (i = 2; i <= NF; i++) { split($i, a, ":"); n += a[2] } } END { printf "%d", n }' "$1"
}

run_wrk() { # RAW URL CONNECTIONS THREADS [SCRIPT]: a warm-up, then the measured run
  local raw=$1 url=$2 c=$3 th=$4 script=${5:-}
  local -a s=()
  [ -z "$script" ] || s=(-s "$script")
  [ "$warmup" = 0 ] || timeout -k 5 $((warmup + 30)) wrk -t"$th" -c"$c" -d"${warmup}s" "${s[@]}" "$url" >/dev/null 2>&1 || true
  cpu_begin
  timeout -k 5 $((duration + 30)) wrk -t"$th" -c"$c" -d"${duration}s" --latency "${s[@]}" "$url" >"$raw" 2>&1
}

measure_plain() { # TARGET ROUND THREADS URL
  local raw=$out/scn-$scn-$1-$2.txt
  cmd[$scn]="wrk -t$3 -c$connections -d${duration}s --latency URL"
  how[$scn]=$(warm_text)
  if ! run_wrk "$raw" "$4" "$connections" "$3"; then m_rate=; m_note="wrk failed (see $raw)"; return; fi
  wrk_read "$raw"
  cpu_end "${wrk_requests:-0}"
  m_rate=$wrk_rps m_p50=$wrk_p50 m_p99=$wrk_p99 m_errors=$((wrk_non2xx + wrk_sockerr)) m_note=
}

measure_flood() { # TARGET ROUND CODE
  local raw=$out/scn-$scn-$1-$2.txt refused passed total
  local url="http://127.0.0.1:${port[$1]}/bench"
  cmd[$scn]="wrk -t$threads -c$flood_connections -d${duration}s --latency -s bench/out/scn-status.lua URL"
  how[$scn]=$(warm_text)
  if ! run_wrk "$raw" "$url" "$flood_connections" "$threads" "$out/scn-status.lua"; then m_rate=; m_note="wrk failed (see $raw)"; return; fi
  wrk_read "$raw"
  refused=$(status_count "$raw" "$3")
  passed=$(status_count "$raw" 200)
  total=$(status_total "$raw")
  cpu_end "$total"
  m_rate=$(awk -v n="$refused" -v s="$wrk_seconds" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print "" }')
  m_p50=$wrk_p50 m_p99=$wrk_p99
  if [ "$3" = 429 ]; then   # the limit lets about one a second through: not errors
    m_errors=$((total - refused - passed + wrk_sockerr))
    m_note="$passed passed (200)"
  else
    m_errors=$((total - refused + wrk_sockerr))
    m_note=
  fi
}

measure_churn() { # TARGET ROUND
  local raw=$out/scn-churn-$1-$2.txt lua=$out/scn-churn-$1-$2.lua mark=$out/scn-churn-$1-$2.mark
  local base=$(( ($2 - 1) * churn_requests )) wrk_pid started n stats
  cmd[$scn]="wrk -t$threads -c$connections -d${churn_timeout}s --latency -s bench/out/scn-churn-TARGET-ROUND.lua URL"
  how[$scn]="each thread stops after its share of $churn_requests answers, and wrk is then stopped with SIGINT, upon which it prints its summary; no warm-up"
  cat >"$lua" <<LUA
-- Generated by bench/scenarios.sh: $churn_requests requests in all, each with a new client address
-- in X-Forwarded-For (10.x.y.z, from number $base on); each thread stops after its share of the
-- answers and writes, to ${mark#"$root"/}.ID: answered, non-200, sent, and the monotonic clock at
-- its first request and at its last answer.
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now()
  ffi.C.clock_gettime(1, ts)   -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end
local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end
local total, threads, base = $churn_requests, $threads, $base
local quota
local sent, answered, bad = 0, 0, 0
local first, last
function init(args)
  quota = math.floor(total / threads)
  if id < total % threads then quota = quota + 1 end
end
function request()
  if not first then first = now() end
  local n = base + sent * threads + id
  sent = sent + 1
  local xff = string.format("10.%d.%d.%d", math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
  return wrk.format("GET", "/churn", { ["X-Forwarded-For"] = xff })
end
function response(status, headers, body)
  if last then return end
  answered = answered + 1
  if status ~= 200 then bad = bad + 1 end
  if answered >= quota then
    last = now()
    local f = io.open("$mark." .. id, "w")
    f:write(string.format("%d %d %d %.6f %.6f\n", answered, bad, sent, first, last))
    f:close()
    wrk.thread:stop()
  end
end
LUA
  rm -f "$mark".*
  cpu_begin
  # wrk sleeps its whole -d even once its threads have stopped: it is stopped (SIGINT, upon
  # which it prints its summary) once every thread has written its line, or after
  # CHURN_TIMEOUT seconds.
  wrk -t"$threads" -c"$connections" -d"${churn_timeout}s" --latency -s "$lua" "http://127.0.0.1:${port[$1]}/churn" >"$raw" 2>&1 &
  wrk_pid=$!
  pids+=($wrk_pid)
  started=$SECONDS
  while kill -0 "$wrk_pid" 2>/dev/null && [ $((SECONDS - started)) -lt $((churn_timeout + 10)) ]; do
    n=$(find "$out" -maxdepth 1 -name "${mark##*/}.*" | wc -l)
    [ "$n" -lt "$threads" ] || break
    sleep 0.2
  done
  kill -INT "$wrk_pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$wrk_pid" 2>/dev/null || break; sleep 0.1; done
  stop_pid "$wrk_pid"
  wrk_read "$raw"
  cpu_end "${wrk_requests:-0}"
  stats=$(cat "$mark".* 2>/dev/null | awk '
    { answered += $1; bad += $2; sent += $3; if (first == "" || $4 < first) first = $4; if ($5 > last) last = $5; n++ }
    END { if (n) printf "%d %d %d %.3f %d", answered, bad, sent, last - first, n; else print "0 0 0 0 0" }')
  read -r m_answered m_bad m_sent m_elapsed n <<<"$stats"
  m_errors=$((m_bad + wrk_sockerr))
  m_p50=$wrk_p50 m_p99=$wrk_p99
  if [ "$n" -lt "$threads" ]; then
    m_rate= m_note="only $n of $threads wrk threads finished within ${churn_timeout}s (see $raw)"
    return
  fi
  m_rate=$(awk -v n="$m_answered" -v s="$m_elapsed" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print "" }')
  m_note="$m_answered answers in ${m_elapsed} s ($m_sent addresses sent)"
}

measure_h2() { # TARGET ROUND
  local raw=$out/scn-h2tls-$1-$2.txt reqlog=$out/scn-h2tls-$1-$2.log url="https://127.0.0.1:${tls_port[$1]}/bench"
  local -a h2=(h2load -t"$threads" -c"$h2_clients" -m"$h2_streams")
  cmd[$scn]="${h2[*]} -D $duration --log-file=bench/out/scn-h2tls-TARGET-ROUND.log URL"
  how[$scn]="$(warm_text), without the log; p50 and p99 from the log, a line per request: start, status, microseconds"
  [ "$warmup" = 0 ] || timeout -k 5 $((warmup + 30)) "${h2[@]}" -D "$warmup" "$url" >/dev/null 2>&1 || true
  cpu_begin
  if ! timeout -k 5 $((duration + 30)) "${h2[@]}" -D "$duration" --log-file="$reqlog" "$url" >"$raw" 2>&1; then
    m_rate=; m_note="h2load failed (see $raw)"; return
  fi
  m_rate=$(awk '/^finished in/ { gsub(/,/, ""); printf "%.0f", $4 }' "$raw")
  local failed ok2xx done_n proto
  failed=$(awk '/^requests:/ { gsub(/,/, ""); print $10 + $12 + $14 }' "$raw")
  done_n=$(awk '/^requests:/ { gsub(/,/, ""); print $6 }' "$raw")
  ok2xx=$(awk '/^status codes:/ { gsub(/,/, ""); print $3 }' "$raw")
  cpu_end "${done_n:-0}"
  # h2load's threads print at once: the line may start after another thread's words, and its
  # value may be on the next line.
  proto=$(tr '\n' ' ' <"$raw" | grep -o 'Application protocol: *[A-Za-z0-9./-]*' | head -n 1 | awk '{ print $3 }')
  m_errors=$(( ${failed:-0} + ${done_n:-0} - ${ok2xx:-0} ))
  read -r m_p50 m_p99 < <(awk -F'\t' '{ print $3 }' "$reqlog" | sort -n | awk '
    function at(q,  i) { i = int(NR * q + 0.5); if (i < 1) i = 1; return v[i] / 1000 }
    { v[NR] = $1 }
    END { if (NR) printf "%.2f %.2f\n", at(0.50), at(0.99); else print "n/a n/a" }')
  m_note=
  if [ "$proto" != h2 ]; then m_note="application protocol ${proto:-unknown}, not h2"; m_errors=$((m_errors + 1)); fi
}

measure_handshakes() { # TARGET ROUND
  local raw=$out/scn-handshakes-$1-$2 i t0 t1 conns bytes expected
  local -a hs=()
  # s_time sends "GET <www> HTTP/1.0" and no header: a proxy would forward that without a Host,
  # which the origin (as any HTTP/1.1 server) refuses. The page named here ends the request line
  # and adds a Host and Connection: close; s_time's own " HTTP/1.0" becomes a header's value.
  local www=$'/bench HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-Bench:'
  cmd[$scn]="openssl s_time -connect 127.0.0.1:PORT -new -tls1_3 -time $duration -www \$'/bench HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\nX-Bench:'"
  how[$scn]="$hs_clients of them at once, $(warm_text); handshakes/s = their connections added up / the wall time from the start of the first to the end of the last; s_time runs from -time to -time + 1 s"
  if [ "$warmup" != 0 ]; then
    for i in $(seq "$hs_clients"); do
      timeout -k 5 $((warmup + 30)) openssl s_time -connect "127.0.0.1:${tls_port[$1]}" -new -tls1_3 -time "$warmup" -www "$www" >/dev/null 2>&1 &
      hs+=($!); pids+=($!)
    done
    for i in "${hs[@]}"; do wait "$i" 2>/dev/null || true; stop_pid "$i"; done
    hs=()
  fi
  cpu_begin
  t0=$(date +%s.%N)
  for i in $(seq "$hs_clients"); do
    timeout -k 5 $((duration + 30)) openssl s_time -connect "127.0.0.1:${tls_port[$1]}" -new -tls1_3 -time "$duration" -www "$www" >"$raw.$i.txt" 2>&1 &
    hs+=($!); pids+=($!)
  done
  for i in "${hs[@]}"; do wait "$i" 2>/dev/null || true; stop_pid "$i"; done
  t1=$(date +%s.%N)
  # "N connections in T real seconds, B bytes read per connection": N added up (the CPU window
  # ends here, before the reference request); B is checked against one answer to the same
  # request (curl, HTTP/1.1 with Connection: close and no ALPN, as s_time), so that refused or
  # cut connections do not count as handshakes done.
  conns=$(cat "$raw".*.txt | awk '/connections in .* real seconds/ { n += $1 } END { printf "%d", n }')
  cpu_end "$conns"
  bytes=$(cat "$raw".*.txt | awk '/bytes read per connection/ { for (i = 1; i < NF; i++) if ($(i + 1) == "bytes") b = $i } END { printf "%d", b }')
  expected=$(curl -sk --http1.1 --no-alpn -H 'Connection: close' -o /dev/null -w '%{size_header} %{size_download} %{http_code}' --max-time 5 "https://127.0.0.1:${tls_port[$1]}/bench" 2>/dev/null | awk '{ if ($3 == 200) print $1 + $2; else print "none" }' || true)
  m_rate=$(awk -v n="$conns" -v a="$t0" -v b="$t1" 'BEGIN { if (b > a && n > 0) printf "%.0f", n / (b - a); else print "" }')
  m_p50=n/a m_p99=n/a m_errors=0
  m_errors=$(cat "$raw".*.txt | grep -ci 'error' || true)
  m_note="$conns connections in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s, $bytes bytes read per connection"
  if [ "$expected" = none ] || awk -v b="$bytes" -v e="$expected" 'BEGIN { exit !(b < 0.9 * e || b > 1.1 * e) }'; then
    m_errors=$((m_errors + 1))
    m_note+=" (one answer to curl: ${expected} bytes)"
  fi
}

measure_policy() { # TARGET ROUND
  local raw=$out/scn-policy-$1-$2.txt log=$out/scn-policy-$1-access.log ok total
  cmd[$scn]="wrk -t$threads -c$connections -d${duration}s --latency -s bench/out/scn-policy.lua URL"
  how[$scn]=$(warm_text)
  if ! run_wrk "$raw" "http://127.0.0.1:${port[$1]}/" "$connections" "$threads" "$out/scn-policy.lua"; then
    m_rate=; m_note="wrk failed (see $raw)"; return
  fi
  wrk_read "$raw"
  ok=$(status_count "$raw" 200)
  total=$(status_total "$raw")
  cpu_end "$total"
  m_rate=$wrk_rps m_p50=$wrk_p50 m_p99=$wrk_p99 m_errors=$((total - ok + wrk_sockerr))
  # The access log of the round (warm-up included), then emptied, so that the disk holds one
  # round's at most (every proxy appends: NGINX and Rempart open the file so, HAProxy's stdout
  # is redirected with >>).
  sleep 0.5
  local lines
  lines=$(wc -l <"$log" 2>/dev/null || echo 0)
  : >"$log"
  m_note="access log: $lines lines (warm-up included), $total answers counted by wrk"
  if [ "$1" = rempart ]; then
    local dropped admitted
    dropped=$(curl -s --max-time 2 "http://127.0.0.1:$admin_port/metrics" | awk '/^rempart_access_log_dropped_total/ { print $NF }')
    admitted=$(curl -s --max-time 2 "http://127.0.0.1:$admin_port/status" | python3 -c 'import json, sys; print(json.load(sys.stdin)["queues"]["logins"]["admitted"])' 2>/dev/null || echo "n/a")
    m_note+=", ${dropped:-n/a} dropped so far; login queue: $admitted admitted so far"
  fi
}

measure() { # TARGET ROUND
  m_rate= m_p50=n/a m_p99=n/a m_errors=0 m_note= m_cpu= cpu_t0=
  cur_target=$1
  case $scn in
    h1) measure_plain "$1" "$2" "$threads" "${url[$1]}" ;;
    scaling) measure_plain "$1" "$2" "$(( threads > 2 ? threads : 2 ))" "${url[$1]}" ;;
    ban) measure_flood "$1" "$2" 403 ;;
    ratelimit) measure_flood "$1" "$2" 429 ;;
    churn) measure_churn "$1" "$2" ;;
    h2tls) measure_h2 "$1" "$2" ;;
    handshakes) measure_handshakes "$1" "$2" ;;
    policy) measure_policy "$1" "$2" ;;
  esac
}

# --- the scenarios --------------------------------------------------------------------------------
title() {
  case $1 in
    h1) echo "Plain HTTP/1.1" ;;
    ban) echo "Refusals: a banned address" ;;
    ratelimit) echo "Refusals: a rate-limited address" ;;
    churn) echo "Churn of new client addresses" ;;
    h2tls) echo "TLS + HTTP/2" ;;
    handshakes) echo "TLS handshakes" ;;
    policy) echo "A realistic policy" ;;
    scaling) echo "Scaling: plain HTTP/1.1 with two workers" ;;
  esac
}
unit() {
  case $1 in ban|ratelimit) echo "refusals/s" ;; handshakes) echo "handshakes/s" ;; *) echo "req/s" ;; esac
}
setup_text() {
  case $1 in
    h1) echo "Keep-alive GETs of /bench. The origin alone is the reference (a ceiling: no proxy forwards faster than its origin answers)." ;;
    ban) echo "$flood_connections keep-alive connections from 127.0.0.1, which is banned: Rempart's shield bans it before the run (a client_ip limit of 1/h, burst 1, and \`shield.ban: { after: 1, within: 1m, for: 1h }\`: the second request is refused and bans the address; the admin API lists bans but cannot add one), so every request is answered 403 \`banned\`; NGINX \`deny 127.0.0.1\` (403); HAProxy \`http-request deny deny_status 403\`. Refusals/s: 403 answers over wrk's duration; errors: any other answer, socket errors." ;;
    ratelimit) echo "The same $flood_connections connections through a client_ip limit of 1/s: Rempart \`{ key: client_ip, rate: 1/s, burst: 1, ban: false }\`; NGINX \`limit_req_zone \$binary_remote_addr zone=flood:1m rate=1r/s\` + \`limit_req_status 429\`; HAProxy a stick-table \`http_req_rate(1s)\` tracked on src + \`http-request deny deny_status 429 if { sc_http_req_rate(0) gt 1 }\`. Refusals/s: 429 answers over wrk's duration; the few 200s the limit lets through are not errors." ;;
    churn) echo "$churn_requests requests, each with a new IPv4 client address in X-Forwarded-For (10.x.y.z; each round a new range), from a trusted proxy (127.0.0.1), through a client_ip limit of 100/s, burst 100, that refuses nobody: Rempart \`server.trusted_proxies: [127.0.0.1/32]\` + the limit; NGINX \`set_real_ip_from 127.0.0.1; real_ip_header X-Forwarded-For;\` + \`limit_req\` on \`\$binary_remote_addr\` (zone of 64 MiB, burst=100 nodelay); HAProxy \`http-request set-src hdr(x-forwarded-for) if { src 127.0.0.1 }\` + a stick-table keyed on src (size 1m). Every address is a new key for the limiter. Req/s: answers / (last answer - first request), from wrk's threads (monotonic clock); no warm-up. Errors: non-200 answers, socket errors." ;;
    h2tls) echo "TLS 1.3 with ALPN h2, $h2_clients connections x $h2_streams concurrent streams, GETs of /bench; the same certificate for all three (certs/dev/localhost.crt, ECDSA P-256). Errors: failed, errored and timed-out requests, non-2xx answers, a protocol other than h2." ;;
    handshakes) echo "Every connection a full TLS handshake (\`openssl s_time -new\`: no session resumption, TLS 1.3, X25519, the ECDSA P-256 certificate) and one GET of /bench (HTTP/1.1, \`Connection: close\`), answered, then closed; $hs_clients clients at once, each one connection at a time. Not wrk or h2load: both resume TLS sessions on reconnection, and the three proxies do not cache sessions alike. No latency: s_time gives none. Errors: error lines from s_time, or bytes read per connection off by more than 10% from one answer to the same request." ;;
    policy) echo "wrk mixing nine GET paths and, one request in ten, POST /login (a small form, a school in X-ENT-UAI). Rempart: a client_ip limit of 100000/s (refuses nothing) on every route, the access log to a file (bench/out/scn-policy-rempart-access.log), POST /login through a login queue (concurrency 128, more than wrk's connections: nobody waits), health checks on the upstream (GET /healthz every 1 s). NGINX: limit_req at 100000r/s on both locations, the access log to a file in JSON (escape=json); open-source NGINX has no queue in front of an upstream, nor active health checks. HAProxy: a stick-table rate at 100000/s, the access log in JSON to stdout, redirected to a file; POST /login to a backend whose server has \`maxconn 128\` (HAProxy's queue), \`option httpchk GET /healthz\` + \`check inter 1s\` on both backends. Errors: any answer but 200, socket errors." ;;
    scaling) echo "Scenario h1 again with two workers each: Rempart \`server.threads: 2\`, NGINX \`worker_processes 2\`, HAProxy \`nbthread 2\`; wrk with $(( threads > 2 ? threads : 2 )) threads. The origin keeps one worker: its row is the ceiling." ;;
  esac
}

declare -A best=() best_p50=() best_p99=() errs=() rates=() notes=() why=() idle=() url=() cpus=()
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
idle_start=$(cpu_idle 2)
log "CPU idle before the scenarios (2 s): $idle_start (other work on the machine skews the figures)"

for scn in "${scenarios[@]}"; do
  workers=1
  [ "$scn" != scaling ] || workers=2
  log "scenario $scn: $(title "$scn")"
  start_proxies
  run_targets=()
  if [ "$scn" = h1 ] || [ "$scn" = scaling ]; then
    run_targets+=(origin)
    url[origin]="http://127.0.0.1:$origin_port/bench"
  fi
  for t in "${targets[@]}"; do
    url[$t]="http://127.0.0.1:${port[$t]}/bench"
    if [ "${status[$t]}" = ok ]; then
      run_targets+=("$t")
      if [ "$scn" = ban ] || [ "$scn" = ratelimit ]; then
        notes[$scn,$t]="connection after a refusal: $(keep_alive "${url[$t]}")"
      fi
    else
      why[$scn,$t]=${status[$t]}
      log "$(label "$t"): ${status[$t]}"
    fi
  done
  idle[$scn,before]=$(cpu_idle)
  for round in $(seq "$rounds"); do
    for t in "${run_targets[@]}"; do
      log "$scn, round $round/$rounds, $(label "$t")"
      measure "$t" "$round"
      errs[$scn,$t]=$(( ${errs[$scn,$t]:-0} + ${m_errors:-0} ))
      [ -z "$m_note" ] || notes[$scn,$t]="${notes[$scn,$t]:+${notes[$scn,$t]} / }r$round: $m_note"
      if [ -z "$m_rate" ]; then
        rates[$scn,$t]="${rates[$scn,$t]:+${rates[$scn,$t]} / }failed"
        continue
      fi
      rates[$scn,$t]="${rates[$scn,$t]:+${rates[$scn,$t]} / }$m_rate"
      [ -z "$m_cpu" ] || cpus[$scn,$t]="${cpus[$scn,$t]:+${cpus[$scn,$t]} / }$m_cpu"
      if [ -z "${best[$scn,$t]:-}" ] || [ "$m_rate" -gt "${best[$scn,$t]}" ]; then
        best[$scn,$t]=$m_rate best_p50[$scn,$t]=$m_p50 best_p99[$scn,$t]=$m_p99
      fi
    done
  done
  idle[$scn,after]=$(cpu_idle)
  stop_proxies
done
idle_end=$(cpu_idle 2)

# --- report ---------------------------------------------------------------------------------------
fmt_errors() { # N: a row with errors is flagged
  if [ "${1:-0}" -gt 0 ]; then echo "**$1 ⚠**"; else echo 0; fi
}
cpu_of() { median "${cpus[$1,$2]:-}"; } # SCENARIO TARGET: the median CPU µs per answer
# Answers per CPU-second, Rempart's over another's: the other's CPU per answer over Rempart's.
per_core() { ratio "$(cpu_of "$1" "$2")" "$(cpu_of "$1" rempart)"; }
cell() { # SCENARIO TARGET: the best rate, flagged when the row has errors
  local v=${best[$1,$2]:-}
  if [ -z "$v" ]; then echo "${why[$1,$2]:+failed}"; return; fi
  if [ "${errs[$1,$2]:-0}" -gt 0 ]; then echo "$v ⚠"; else echo "$v"; fi
}
summary=$(
  echo "| scenario | unit | Rempart | NGINX | HAProxy | Rempart/NGINX rate | Rempart/HAProxy rate | Rempart/NGINX p99 | Rempart/HAProxy p99 | CPU µs per answer: Rempart / NGINX / HAProxy | Rempart/NGINX per core | Rempart/HAProxy per core |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for scn in "${scenarios[@]}"; do
    echo "| $(title "$scn") | $(unit "$scn") | $(cell "$scn" rempart) | $(cell "$scn" nginx) | $(cell "$scn" haproxy) | $(ratio "${best[$scn,rempart]:-}" "${best[$scn,nginx]:-}") | $(ratio "${best[$scn,rempart]:-}" "${best[$scn,haproxy]:-}") | $(ratio "${best_p99[$scn,rempart]:-}" "${best_p99[$scn,nginx]:-}") | $(ratio "${best_p99[$scn,rempart]:-}" "${best_p99[$scn,haproxy]:-}") | $(cpu_of "$scn" rempart) / $(cpu_of "$scn" nginx) / $(cpu_of "$scn" haproxy) | $(per_core "$scn" nginx) | $(per_core "$scn" haproxy) |"
  done
)
sections=$(
  n=1
  for scn in "${scenarios[@]}"; do
    echo
    echo "## $n. $(title "$scn") (\`$scn\`)"
    echo
    setup_text "$scn"
    echo
    echo "- command: \`${cmd[$scn]:-none run}\`${how[$scn]:+ (${how[$scn]})}"
    echo "- configurations: bench/out/scn-$scn-rempart.yaml, scn-$scn-nginx.conf, scn-$scn-haproxy.cfg; raw outputs: bench/out/scn-$scn-*"
    echo "- CPU idle ${idle[$scn,before]:-?} before the rounds, ${idle[$scn,after]:-?} after (over 1 s each)"
    echo
    echo "| target | $(unit "$scn") | p50 ms | p99 ms | errors | each round | CPU µs per answer, each round | notes |"
    echo "|---|---:|---:|---:|---:|---|---|---|"
    rows=()
    if [ "$scn" = h1 ] || [ "$scn" = scaling ]; then rows+=(origin); fi
    rows+=("${targets[@]}")
    for t in "${rows[@]}"; do
      if [ -n "${why[$scn,$t]:-}" ]; then
        echo "| $(label "$t") | ${why[$scn,$t]} | | | | | | |"
      else
        echo "| $(label "$t") | ${best[$scn,$t]:-failed} | ${best_p50[$scn,$t]:-n/a} | ${best_p99[$scn,$t]:-n/a} | $(fmt_errors "${errs[$scn,$t]:-0}") | ${rates[$scn,$t]:-} | ${cpus[$scn,$t]:-} | ${notes[$scn,$t]:-} |"
      fi
    done
    echo
    for t in nginx haproxy; do
      echo "- Rempart/$(label "$t"): $(unit "$scn") $(ratio "${best[$scn,rempart]:-}" "${best[$scn,$t]:-}"), p99 $(ratio "${best_p99[$scn,rempart]:-}" "${best_p99[$scn,$t]:-}") (rate: higher is better; p99: lower is better); per core $(per_core "$scn" "$t") (answers per CPU-second of the proxy, from the median round's CPU per answer)"
    done
    n=$((n + 1))
  done
)
rempart_version=$( ("$bin_dir/rempart" --version 2>/dev/null || echo "rempart n/a") | head -n 1)
{
  echo "# Rempart, NGINX and HAProxy, scenario by scenario: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- machine: $(nproc) CPUs, ${cpu_model:-unknown CPU}, Linux $(uname -r); CPU idle $idle_start before the scenarios, $idle_end after (over 2 s each, nothing running)"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with local changes)'); binaries: $binaries_note"
  echo "- versions: $rempart_version; $(nginx -v 2>&1 | sed 's/^nginx version: //'); $(haproxy -v 2>/dev/null | head -n 1 | awk '{ print "HAProxy " $3 }'); $(wrk --version 2>&1 | head -n 1 | awk '{ print "wrk " $2 }'); $(h2load --version 2>/dev/null | head -n 1 | awk '{ print "h2load " $2 }'); $(openssl version | awk '{ print "OpenSSL " $2 }')"
  echo "- command: \`BENCH_DURATION=$duration BENCH_WARMUP=$warmup BENCH_ROUNDS=$rounds BENCH_CONNECTIONS=$connections BENCH_THREADS=$threads FLOOD_CONNECTIONS=$flood_connections CHURN_REQUESTS=$churn_requests H2_CLIENTS=$h2_clients H2_STREAMS=$h2_streams HS_CLIENTS=$hs_clients SCENARIOS=\"${scenarios[*]}\" BENCH_TARGETS=\"${targets[*]}\" bash bench/scenarios.sh\` (part of \`make bench\`)"
  echo "- set-up: one fixed-body origin for all (NGINX, 1 worker, \`return 200 '{\"ok\":true}'\` on every path, bench/out/scn-origin.conf); each proxy 1 worker (2 in the scaling scenario), a plain and a TLS listener (certs/dev/localhost.crt, ECDSA P-256), upstream keep-alive (Rempart's pool at pingora's default of 128 idle connections, NGINX keepalive 128, HAProxy http-reuse always); NGINX and HAProxy add X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host and X-Request-Id as Rempart does; Rempart's health checks at their default (GET /healthz every 1 s) in every scenario; all on loopback, on the same machine as the load generators"
  echo "- rounds: $rounds per scenario, the targets taking turns; each keeps its best round (highest rate), errors add up over the rounds; ⚠: the row has errors, not a fair row"
  echo "- per core: the proxy's CPU time over each measured run (utime + stime of all its processes and threads, /proc/PID/stat, ${clk_tck} ticks a second) per answer; the summary takes each proxy's median round; \"per core\" is answers per CPU-second, Rempart's over the other's (higher is better). It does not depend on the load generators and the origin sharing the machine's two CPUs, which cap the rates alike when no proxy has a whole core"
  echo
  echo "## Summary"
  echo
  echo "$summary"
  echo "$sections"
} >"$out/scenarios.md"
cat "$out/scenarios.md"
log "written to bench/out/scenarios.md (raw outputs and configurations: bench/out/scn-*)"
