#!/usr/bin/env bash
# `make bench` (third part): what connections cost, Rempart against NGINX and HAProxy.
#
# One ent-origin (2 workers) and, in front of it on loopback, Rempart (server.threads 1, every
# other setting at its default), NGINX (worker_processes 1) and HAProxy (nbthread 1), each with a
# plain HTTP/1.1 listener and a TLS listener (certs/dev/localhost.crt, ALPN h2 and http/1.1).
#
# 1. Memory: for each kind of connection (plain HTTP/1.1, TLS + HTTP/1.1, TLS + HTTP/2) and each
#    proxy, started afresh: resident memory (VmRSS) once warm, then `idle-conns` opens CONN_COUNT
#    (default 10,000) keep-alive connections, one answered GET each, from CONN_SOURCES (default
#    50) loopback addresses 127.0.0.1, 127.0.0.2, ... (Rempart's max_connections_per_ip stays at
#    its default, 256), and once it says `ready` (plus a second to settle) VmRSS again. NGINX is
#    measured as master + worker summed.
# 2. CPU under HTTP/2 attacks: each proxy started once, then for each attack kind (rapid-reset,
#    continuation, ping-flood, settings-flood, headers-stall), the proxies taking turns:
#    `h2-attack --connections ATTACK_CONNECTIONS (4) --duration ATTACK_DURATION (10 s)` over TLS;
#    the proxy's CPU time (utime + stime of all its threads, from /proc/PID/stat; NGINX master +
#    worker) from just before the attack until the proxy is idle again after it (1 to 30 s
#    later), what the attacker saw (connections, frames sent, GOAWAYs, closes), the requests
#    that reached the origin over the same span, and the CPU time other work on the machine took
#    meanwhile (flagged from 0.5 s: such a row is skewed).
#
# Writes bench/out/connections.md (raw outputs and generated configurations in bench/out/conn-*)
# and prints it. Environment: CONN_COUNT, CONN_SOURCES, ATTACK_DURATION (seconds),
# ATTACK_CONNECTIONS, CONN_TARGETS (default "rempart nginx haproxy"), CONN_MODES (default "h1
# tls-h1 tls-h2"), CONN_ATTACKS (default every kind; "none" for memory only), BENCH_BIN_DIR (prebuilt
# binaries in that directory, no build) or BENCH_NO_BUILD=1 (no build: target/release, or
# target/dist with a [profile.dist], as it is); see bench_binaries in bench/common.sh. Loopback
# only; every process started here is stopped on exit, even on Ctrl-C; every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=$root/bench/out

count=${CONN_COUNT:-10000}
n_sources=${CONN_SOURCES:-50}
attack_seconds=${ATTACK_DURATION:-10}
attack_seconds=${attack_seconds%s}
attack_conns=${ATTACK_CONNECTIONS:-4}
for v in "$count" "$n_sources" "$attack_seconds" "$attack_conns"; do
  case $v in ''|*[!0-9]*|0) echo "connections bench: CONN_COUNT, CONN_SOURCES, ATTACK_DURATION and ATTACK_CONNECTIONS take whole numbers above 0" >&2; exit 2 ;; esac
done
[ "$n_sources" -le 250 ] || { echo "connections bench: CONN_SOURCES is at most 250 (127.0.0.1 to 127.0.0.250)" >&2; exit 2; }
read -r -a targets <<<"${CONN_TARGETS:-rempart nginx haproxy}"
read -r -a modes <<<"${CONN_MODES:-h1 tls-h1 tls-h2}"
read -r -a kinds <<<"${CONN_ATTACKS:-rapid-reset continuation ping-flood settings-flood headers-stall}"
[ "${kinds[*]}" != none ] || kinds=()
for m in "${modes[@]}"; do
  case $m in h1|tls-h1|tls-h2) ;; *) echo "connections bench: CONN_MODES takes h1, tls-h1, tls-h2" >&2; exit 2 ;; esac
done

log() { printf 'connections bench: %s\n' "$*" >&2; }

bash .ci/install-deps.sh --bench >/dev/null
PATH=$PATH:/usr/sbin:/sbin   # nginx and haproxy live in /usr/sbin

# bench_binaries, pids, cleanup on exit, free_port, wait_ready, stop_pid, proc_family, rss_kib,
# cpu_ticks, machine_busy_ticks, reaped_children_ticks, cpu_idle.
. bench/common.sh
bench_binaries
mkdir -p "$out"
rm -rf "$out"/conn-*

# Every proxy and idle-conns need a descriptor per connection: the soft limit goes up to the hard
# one (children inherit it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -n)
if [ "$nofile" != unlimited ] && [ "$nofile" -lt $((count + 1000)) ]; then
  log "RLIMIT_NOFILE is $nofile (hard limit): too few descriptors for CONN_COUNT=$count (needs $((count + 1000)))"
  exit 1
fi
[ "$nofile" != unlimited ] || nofile=$((count * 2 + 1000))

sources=$(seq -s, -f '127.0.0.%g' 1 "$n_sources")
ca=$root/certs/dev/ca.crt
cert=$root/certs/dev/localhost.crt
key=$root/certs/dev/localhost.key
cat "$cert" "$key" >"$out/conn-haproxy.pem"   # HAProxy wants the chain and the key in one file

# --- origin ------------------------------------------------------------------------------------
free_port; origin_port=$PORT
"$bin_dir/ent-origin" --listen "127.0.0.1:$origin_port" --name bench-origin --workers 2 \
  >"$out/conn-origin.log" 2>&1 &
origin_pid=$!
pids+=($origin_pid)
wait_ready origin "http://127.0.0.1:$origin_port/healthz" "${pids[-1]}"
# Requests the origin received, health checks (Rempart's, every few seconds) excluded.
origin_requests() {
  curl -s --max-time 2 "http://127.0.0.1:$origin_port/__origin/stats" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(s["requests_total"] - s.get("by_path", {}).get("/healthz", 0))' 2>/dev/null || echo 0
}

# --- proxies -----------------------------------------------------------------------------------
# start_proxy NAME: a fresh instance with a plain and a TLS listener, warm (one plain request,
# one HTTP/2 request over TLS); sets main_pid[NAME], plain_port[NAME], tls_port[NAME]; on failure
# says why in why[NAME] and returns 1.
declare -A main_pid=() plain_port=() tls_port=() why=()
start_proxy() {
  local t=$1 p tp
  free_port; p=$PORT
  free_port; tp=$PORT
  plain_port[$t]=$p
  tls_port[$t]=$tp
  case $t in
    rempart)
      local admin
      free_port; admin=$PORT
      rempart_admin=$admin
      cat >"$out/conn-rempart.yaml" <<YAML
# Generated by bench/connections.sh: one worker thread, everything else at its default.
server:
  threads: 1
  access_log: off
listeners:
  - address: 127.0.0.1:$p
  - address: 127.0.0.1:$tp
    tls:
      certificates:
        - { cert: $cert, key: $key }
admin:
  address: 127.0.0.1:$admin
upstreams:
  origin:
    datacenters:
      - name: local
        servers: [127.0.0.1:$origin_port]
routes:
  - name: default
    match: { path_prefix: / }
    upstream: origin
YAML
      [ -x "$bin_dir/rempart" ] || { why[$t]="no binary"; return 1; }
      "$bin_dir/rempart" -c "$out/conn-rempart.yaml" >>"$out/conn-rempart.log" 2>&1 &
      ;;
    nginx)
      mkdir -p "$out/conn-nginx"
      {
        if [ "$(id -u)" -eq 0 ]; then echo "user root;"; fi
        cat <<NGINX
# Generated by bench/connections.sh: one worker, timeouts and buffers at their defaults.
worker_processes 1;
worker_rlimit_nofile $nofile;
pid $out/conn-nginx/nginx.pid;
error_log $out/conn-nginx/error.log warn;
events { worker_connections $((count + 1000)); }
http {
  access_log off;
  client_body_temp_path $out/conn-nginx/client_body;
  proxy_temp_path $out/conn-nginx/proxy;
  fastcgi_temp_path $out/conn-nginx/fastcgi;
  uwsgi_temp_path $out/conn-nginx/uwsgi;
  scgi_temp_path $out/conn-nginx/scgi;
  upstream origin {
    server 127.0.0.1:$origin_port;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$p;
    listen 127.0.0.1:$tp ssl http2;
    ssl_certificate $cert;
    ssl_certificate_key $key;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX
      } >"$out/conn-nginx.conf"
      nginx -e "$out/conn-nginx/error.log" -c "$out/conn-nginx.conf" -p "$out/conn-nginx" -g 'daemon off;' \
        >>"$out/conn-nginx.log" 2>&1 &
      ;;
    haproxy)
      cat >"$out/conn-haproxy.cfg" <<HAPROXY
# Generated by bench/connections.sh: one thread; client timeouts as NGINX's keepalive_timeout.
global
  nbthread 1
  maxconn $((count + 1000))
  ulimit-n $nofile
  # HAProxy counts two descriptors per connection (client and server); idle keep-alive clients
  # hold none on the server side, so a limit below 2 x maxconn is enough: a warning, not an exit.
  no strict-limits
defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 75s
  timeout server 30s
  timeout http-keep-alive 75s
frontend conns
  bind 127.0.0.1:$p
  bind 127.0.0.1:$tp ssl crt $out/conn-haproxy.pem alpn h2,http/1.1
  default_backend origin
backend origin
  http-reuse always
  server origin 127.0.0.1:$origin_port
HAPROXY
      haproxy -db -f "$out/conn-haproxy.cfg" >>"$out/conn-haproxy.log" 2>&1 &
      ;;
  esac
  main_pid[$t]=$!
  pids+=($!)
  if ! wait_ready "$t" "http://127.0.0.1:$p/" "${main_pid[$t]}"; then
    why[$t]="did not start"; return 1
  fi
  local got
  got=$(curl -s -o /dev/null -w '%{http_code} %{http_version}' --max-time 5 --http2 --cacert "$ca" \
    --resolve "localhost:$tp:127.0.0.1" "https://localhost:$tp/" 2>/dev/null || true)
  if [ "$got" != "200 2" ]; then
    why[$t]="no HTTP/2 over TLS (curl: ${got:-nothing})"; return 1
  fi
}
# Stop a proxy: its main process (NGINX's master stops its worker), then whatever of its family
# outlived it (a worker whose master had to be killed).
stop_proxy() { # NAME
  local pid=${main_pid[$1]:-} fam p
  [ -n "$pid" ] || return 0
  mapfile -t fam < <(proc_family "$pid")
  stop_pid "$pid"
  for p in "${fam[@]:1}"; do kill -KILL "$p" 2>/dev/null || true; done
  main_pid[$1]=
}
family() { proc_family "${main_pid[$1]}"; }   # the proxy's processes

label() { case $1 in rempart) echo Rempart ;; nginx) echo NGINX ;; haproxy) echo HAProxy ;; *) echo "$1" ;; esac; }
mode_label() { case $1 in h1) echo "plain HTTP/1.1" ;; tls-h1) echo "TLS + HTTP/1.1" ;; tls-h2) echo "TLS + HTTP/2" ;; esac; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

idle_before=$(cpu_idle 2)
log "CPU idle before measuring (2 s): $idle_before (other work on the machine skews the CPU figures)"

# --- 1. memory per idle connection -----------------------------------------------------------
declare -A mem_row=()
for mode in "${modes[@]}"; do
  case $mode in
    h1) mode_args=() ;;
    tls-h1) mode_args=(--tls) ;;
    tls-h2) mode_args=(--tls --h2) ;;
  esac
  for t in "${targets[@]}"; do
    if ! start_proxy "$t"; then
      mem_row[$t,$mode]="| $(label "$t") | $(mode_label "$mode") | ${why[$t]} | | | | | |"
      stop_proxy "$t"; continue
    fi
    if [ "$mode" = h1 ]; then port=${plain_port[$t]}; else port=${tls_port[$t]}; fi
    sleep 1
    mapfile -t fam < <(family "$t")
    before=$(rss_kib "${fam[@]}")
    raw=$out/conn-idle-$t-$mode.txt
    : >"$raw"
    log "memory, $(label "$t"), $(mode_label "$mode"): idle-conns --count $count from $n_sources source addresses"
    "$bin_dir/idle-conns" --target "127.0.0.1:$port" --count "$count" "${mode_args[@]}" \
      --sources "$sources" --hold 600s --timeout 10s >"$raw" 2>"$out/conn-idle-$t-$mode.err" &
    ic=$!
    pids+=($ic)
    # Opening takes seconds (TLS handshakes on one core); bounded all the same.
    deadline=$((SECONDS + 60 + count / 50))
    until grep -q '^ready ' "$raw"; do
      if ! kill -0 "$ic" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then break; fi
      sleep 0.5
    done
    if ! grep -q '^ready ' "$raw"; then
      mem_row[$t,$mode]="| $(label "$t") | $(mode_label "$mode") | idle-conns never ready (see $raw) | | | | | |"
      stop_pid "$ic"; stop_proxy "$t"; continue
    fi
    sleep 1
    mapfile -t fam < <(family "$t")
    after=$(rss_kib "${fam[@]}")
    stop_pid "$ic" 50   # SIGTERM: it prints `done held H closed_by_server K`
    if [ "$t" = rempart ]; then   # the answers by status and the connections closed, by reason
      curl -s --max-time 2 "http://127.0.0.1:$rempart_admin/metrics" >"$out/conn-rempart-metrics-$mode.txt" || true
    fi
    ready=$(awk '/^ready / { print $2 }' "$raw")
    failed=$(awk '/^ready / { print $4 }' "$raw")
    open_s=$(awk '/^ready / { for (i = 1; i < NF; i++) if ($i == "seconds") print $(i + 1) }' "$raw")
    non2xx=$(awk '/^ready / { for (i = 1; i < NF; i++) if ($i == "non_2xx") print $(i + 1) }' "$raw")
    closed=$(awk '/^done / { print $5 }' "$raw")
    per_conn=$(awk -v a="$after" -v b="$before" -v n="$ready" 'BEGIN { if (n > 0) printf "%.1f", (a - b) / n; else print "n/a" }')
    note=""
    [ "${failed:-0}" = 0 ] || note+="; $failed failed"
    [ "${non2xx:-0}" = 0 ] || note+="; $non2xx non-2xx"
    [ "${closed:-0}" = 0 ] || note+="; ${closed:-?} closed by the server before the end"
    [ "$t" != nginx ] || note+="; master + worker"
    note=${note#; }
    mem_row[$t,$mode]="| $(label "$t") | $(mode_label "$mode") | $ready | $open_s | $(mib "$before") | $(mib "$after") | **$per_conn** | $note |"
    stop_proxy "$t"
  done
done

# --- 2. CPU under HTTP/2 attacks ---------------------------------------------------------------
declare -A up=() cpu=() atk=()
for t in "${targets[@]}"; do
  if start_proxy "$t"; then up[$t]=1; else log "$(label "$t"): ${why[$t]}"; fi
done
sleep 1
for kind in "${kinds[@]}"; do
  for t in "${targets[@]}"; do
    [ -n "${up[$t]:-}" ] || continue
    raw=$out/conn-attack-$t-$kind.json
    log "attack, $(label "$t"): h2-attack --kind $kind --connections $attack_conns --duration ${attack_seconds}s"
    mapfile -t fam < <(family "$t")
    o0=$(origin_requests)
    c0=$(cpu_ticks "${fam[@]}")
    m0=$(machine_busy_ticks) a0=$(reaped_children_ticks) g0=$(cpu_ticks "$origin_pid")
    timeout -k 5 $((attack_seconds + 30)) "$bin_dir/h2-attack" --target "127.0.0.1:${tls_port[$t]}" \
      --sni localhost --kind "$kind" --connections "$attack_conns" --duration "${attack_seconds}s" \
      >"$raw" 2>"$out/conn-attack-$t-$kind.err" || true
    # The attack's cost includes the work it leaves behind (streams still being forwarded):
    # wait until the proxy is idle (at most a tick of CPU in half a second) and the origin gets
    # nothing more, for at least a second and at most 30.
    settled=0 c1=$(cpu_ticks "${fam[@]}") o1=$(origin_requests)
    for i in $(seq 60); do
      sleep 0.5
      c=$(cpu_ticks "${fam[@]}") o=$(origin_requests)
      if [ "$i" -ge 2 ] && [ $((c - c1)) -le 1 ] && [ "$o" = "$o1" ]; then c1=$c; settled=1; break; fi
      c1=$c o1=$o
    done
    tail_s=$(awk -v i="$i" 'BEGIN { printf "%.1f", i / 2 }')
    # Other work on the machine over the same span: all busy CPU time but the proxy's, the
    # origin's and the attacker's (and the curl calls': a few ticks).
    other=$(( $(machine_busy_ticks) - m0 - (c1 - c0) - ($(reaped_children_ticks) - a0) - ($(cpu_ticks "$origin_pid") - g0) ))
    other_s=$(awk -v o="$other" -v hz="$clk_tck" 'BEGIN { printf "%.1f", (o > 0 ? o : 0) / hz }')
    other_total=$(( ${other_total:-0} + (other > 0 ? other : 0) ))
    if ! kill -0 "${main_pid[$t]}" 2>/dev/null; then
      atk[$t,$kind]="| $(label "$t") | $kind | **the proxy died** | | | | | | |"
      unset "up[$t]"; continue
    fi
    cpu[$t,$kind]=$(awk -v a="$c1" -v b="$c0" -v hz="$clk_tck" 'BEGIN { printf "%.2f", (a - b) / hz }')
    fields=$(python3 - "$raw" <<'PY' 2>/dev/null || echo "n/a|n/a|n/a|n/a|n/a|h2-attack gave no result (see $raw)|"
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
g = ", ".join(f"{n} {c}" for c, n in sorted(r["goaways"].items())) or "none"
e = r.get("ended_after_ms") or {}
ended = f'{e["count"]} after {e["mean"]} ms (mean)' if e else "none"
stalls = r.get("write_stalls", 0)
errs = r.get("connect_errors", 0) + r.get("handshake_errors", 0)
notes = []
if stalls: notes.append(f"{stalls} write stalls")
if errs: notes.append(f"{errs} connect/handshake errors")
if r.get("resets_by_server"): notes.append(f'{r["resets_by_server"]} resets')
print("|".join(str(x) for x in (r["connections_opened"], f'{r["frames_sent"]:,}', g,
      r["closes_by_server"], ended, "; ".join(notes) or "", "")))
PY
)
    IFS='|' read -r opened frames goaways closes ended notes _ <<<"$fields"
    if [ "$settled" = 0 ]; then notes+="${notes:+; }still busy 30 s after the attack"
    elif [ "$i" -gt 2 ]; then notes+="${notes:+; }busy ${tail_s} s after the attack"
    fi
    if awk -v o="$other_s" 'BEGIN { exit !(o >= 0.5) }'; then
      notes+="${notes:+; }**other work on the machine: $other_s CPU s**"
    fi
    atk[$t,$kind]="| $(label "$t") | $kind | **${cpu[$t,$kind]}** | $opened | $frames | $goaways | $closes | $ended | $((o1 - o0)) | $notes |"
  done
done
idle_after=$(cpu_idle 2)
other_attacks=$(awk -v o="${other_total:-0}" -v hz="$clk_tck" 'BEGIN { printf "%.1f", o / hz }')

# --- report ------------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }
mem_table=$(
  echo "| proxy | connections | held | opened in s | RSS before MiB | RSS after MiB | KiB per connection | notes |"
  echo "|---|---|---:|---:|---:|---:|---:|---|"
  for mode in "${modes[@]}"; do
    for t in "${targets[@]}"; do echo "${mem_row[$t,$mode]}"; done
  done
)
cpu_table=$(
  printf '| attack |'; for t in "${targets[@]}"; do printf ' %s CPU s |' "$(label "$t")"; done
  printf ' Rempart/NGINX |\n|---|'; for _ in "${targets[@]}"; do printf -- '---:|'; done; printf -- '---:|\n'
  for kind in "${kinds[@]}"; do
    printf '| %s |' "$kind"
    for t in "${targets[@]}"; do printf ' %s |' "${cpu[$t,$kind]:-n/a}"; done
    # A ratio of two figures near zero says nothing.
    if awk -v b="${cpu[nginx,$kind]:-0}" 'BEGIN { exit !(b + 0 >= 0.1) }'; then
      printf ' %s |\n' "$(ratio "${cpu[rempart,$kind]:-}" "${cpu[nginx,$kind]:-}")"
    else
      printf ' n/a |\n'
    fi
  done
)
attack_table=$(
  echo "| proxy | attack | CPU s | connections opened | frames sent | GOAWAYs (error code) | closes by the server | ended by the server | requests at the origin | notes |"
  echo "|---|---|---:|---:|---:|---|---:|---|---:|---|"
  for kind in "${kinds[@]}"; do
    for t in "${targets[@]}"; do echo "${atk[$t,$kind]:-| $(label "$t") | $kind | ${why[$t]:-n/a} | | | | | | | |}"; done
  done
)
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
rempart_version=$( ("$bin_dir/rempart" --version 2>/dev/null || echo "rempart n/a") | head -n 1)
{
  echo "# Connections benchmark: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- machine: $(nproc) CPUs, ${cpu_model:-unknown CPU}, Linux $(uname -r); CPU idle $idle_before before the runs, $idle_after after (over 2 s each, proxies idle)"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with local changes)')"
  echo "- versions: $rempart_version; $(nginx -v 2>&1 | sed 's/^nginx version: //'); $(haproxy -v 2>/dev/null | head -n 1 | awk '{ print "HAProxy " $3 }')"
  echo "- command: \`CONN_COUNT=$count CONN_SOURCES=$n_sources ATTACK_DURATION=$attack_seconds ATTACK_CONNECTIONS=$attack_conns bash bench/connections.sh\` (part of \`make bench\`)"
  echo "- set-up: one ent-origin (--workers 2); Rempart server.threads 1 (other settings at their defaults: max_connections 20000, max_connections_per_ip 256, keepalive_timeout 60s); NGINX worker_processes 1; HAProxy nbthread 1; TLS with certs/dev/localhost.crt (ECDSA P-256) for all; loopback; RLIMIT_NOFILE $nofile"
  echo
  echo "## Memory: $count idle keep-alive connections"
  echo
  echo "Each proxy started afresh for each kind of connection and warmed (one plain request, one HTTP/2"
  echo "request over TLS); VmRSS a second later, then \`idle-conns --count $count --sources 127.0.0.1,...,127.0.0.$n_sources\`"
  echo "(one answered \`GET /\` on each, then idle), and VmRSS a second after it said \`ready\`."
  echo "KiB per connection = (after - before) / connections held. NGINX: master + worker summed."
  echo
  echo "$mem_table"
  echo
  echo "## CPU under HTTP/2 attacks"
  echo
  echo "\`h2-attack --kind KIND --connections $attack_conns --duration ${attack_seconds}s\` over TLS (one attacker thread;"
  echo "a slot reconnects when the server ends its connection). CPU s: utime + stime of the proxy (all"
  echo "threads; NGINX master + worker) from just before the attack until, after it, the proxy is idle"
  echo "again and the origin receives nothing more (at least 1 s, at most 30 s: the work left behind"
  echo "counts); one core for ${attack_seconds} s is ${attack_seconds} CPU s. Requests at the origin: those that reached it"
  echo "over the same span, health checks excluded. Other work on the machine (all busy CPU time minus"
  echo "the proxy's, the origin's and the attacker's) during all the attacks: $other_attacks CPU s; an attack"
  echo "with 0.5 s or more of it says so in its notes."
  echo
  echo "$cpu_table"
  echo
  echo "What the attacker saw:"
  echo
  echo "$attack_table"
} >"$out/connections.md"
cat "$out/connections.md"
log "written to bench/out/connections.md (raw outputs and configurations: bench/out/conn-*)"
