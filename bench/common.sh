# Shared by bench/run.sh, bench/scenarios.sh, bench/shield.sh and bench/connections.sh (sourced,
# not run): the binaries to run, processes stopped on exit, free loopback ports, readiness, what
# /proc says about a process (resident memory, CPU time) and the machine (idle CPU), the fixed-body
# origin, the forwarded headers NGINX and HAProxy add, and reading wrk's output. The sourcing
# script defines log() and root (the repository) first.

# Every process started by the benchmark goes in pids; all are stopped on exit, even on failure
# or Ctrl-C (TERM, then KILL after 3 s).
pids=()
cleanup() {
  local rc=$?
  trap - EXIT
  trap "" INT TERM   # a second Ctrl-C must not cut the clean-up short
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

used_ports=" "
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Listening ports are taken outside the kernel's ephemeral range: a port in it may be held by an
# outgoing connection (a client's, a proxy's to its upstream), which no connect test sees and
# which makes the listener's bind fail.
read -r eph_lo eph_hi </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || { eph_lo=32768; eph_hi=60999; }
if [ "$eph_lo" -ge 12000 ]; then port_base=10000 port_span=$((eph_lo - 10000))
elif [ "$eph_hi" -le 63000 ]; then port_base=$((eph_hi + 1)) port_span=$((65535 - eph_hi))
else port_base=20000 port_span=30000
fi
[ "$port_span" -le 32000 ] || port_span=32000   # RANDOM stops at 32767
free_port() { # sets PORT to a free loopback port not handed out before
  local p
  for _ in $(seq 200); do
    p=$((port_base + RANDOM % port_span))
    case $used_ports in *" $p "*) continue ;; esac
    if ! port_taken "$p"; then used_ports+="$p "; PORT=$p; return 0; fi
  done
  log "no free port found"; return 1
}

# Wait until URL answers CODE (default 200), while PID lives; at most 30 s.
wait_ready() { # NAME URL PID [CODE]
  local deadline=$((SECONDS + 30)) code=${4:-200}
  until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$2" 2>/dev/null)" = "$code" ]; do
    if ! kill -0 "$3" 2>/dev/null; then log "$1 exited during start-up (see its log in bench/out/)"; return 1; fi
    if [ "$SECONDS" -ge "$deadline" ]; then log "$1 not answering $code on $2 after 30s"; return 1; fi
    sleep 0.2
  done
}

# Stop one process started here before the end (TERM, then KILL after WAIT tenths of a second,
# default 30) and forget it, so that the clean-up on exit never signals a reused pid.
stop_pid() { # PID [WAIT]
  local pid=$1 p kept=()
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq "${2:-30}"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${pids[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
  pids=("${kept[@]}")
}

# A process and its children (NGINX: the master and its worker), one pid a line.
proc_family() { # PID
  echo "$1"
  ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' ' || true
}

# Resident memory (VmRSS, KiB) of one process, or of several summed.
rss_kib() { # PID...
  local p sum=0 k
  for p in "$@"; do
    k=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null || true)
    sum=$((sum + ${k:-0}))
  done
  echo "$sum"
}

# CPU time (utime + stime, every thread included) of one process, or of several summed, in
# clock ticks (clk_tck a second). The command name in /proc/PID/stat is skipped whole (it may
# hold spaces): after it, utime and stime are the 12th and 13th fields.
clk_tck=$(getconf CLK_TCK)
cpu_ticks() { # PID...
  local p sum=0 t
  for p in "$@"; do
    t=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }' || true)
    sum=$((sum + ${t:-0}))
  done
  echo "$sum"
}

# CPU time the whole machine spent in processes (user, nice, system) or lent to other guests of
# the hypervisor (steal), in clock ticks, all CPUs added: over an interval, minus what the
# benchmark's own processes used, it is the other work that skewed the figures. Interrupts and
# softirqs are left out: the loopback traffic of the benchmark itself is processed there, and
# charged to no process.
machine_busy_ticks() {
  awk '/^cpu / { print $2 + $3 + $4 + $9 }' /proc/stat
}

# CPU time (clock ticks) of the children this shell has waited for, theirs included.
reaped_children_ticks() {
  sed 's/^.*) //' "/proc/$$/stat" | awk '{ print $14 + $15 }'
}

# Share of the CPUs that is idle over SECONDS (default 1), to tell a quiet machine from a busy
# one.
cpu_idle() { # [SECONDS]
  local a b
  a=$(awk '/^cpu / { print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat)
  sleep "${1:-1}"
  b=$(awk '/^cpu / { print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " "); t = y[2] - x[2]; printf "%.0f%%", (t > 0 ? 100 * (y[1] - x[1]) / t : 0) }'
}

# --- the binaries ------------------------------------------------------------------------------
# Sets bin_dir (where rempart, ent-origin, idle-conns, h2-attack and examples/ are), cargo_profile
# (the cargo flags of the profile that ships) and binaries_note (for the reports):
# - BENCH_BIN_DIR=DIR: the binaries already in DIR, nothing built (another checkout's
#   target/release, say);
# - else the profile that ships is built, `cargo build --profile dist --workspace` (target/dist/)
#   when the top Cargo.toml defines [profile.dist], `cargo build --release --workspace`
#   (target/release/) otherwise; BENCH_NO_BUILD=1 skips that build and takes the directory as it is.
bench_binaries() {
  if grep -q '^\[profile\.dist\]' "$root/Cargo.toml" 2>/dev/null; then
    cargo_profile=(--profile dist) bin_dir=$root/target/dist
  else
    cargo_profile=(--release) bin_dir=$root/target/release
  fi
  if [ -n "${BENCH_BIN_DIR:-}" ]; then
    [ -d "$BENCH_BIN_DIR" ] || { log "BENCH_BIN_DIR=$BENCH_BIN_DIR is not a directory"; return 1; }
    bin_dir=$(cd "$BENCH_BIN_DIR" && pwd)
    binaries_note="prebuilt binaries from $bin_dir (BENCH_BIN_DIR, not built by this run)"
    log "BENCH_BIN_DIR: using the binaries in $bin_dir (no build)"
  elif [ "${BENCH_NO_BUILD:-0}" = 1 ]; then
    binaries_note="${bin_dir#"$root"/} as it was (BENCH_NO_BUILD=1, not built by this run)"
    log "BENCH_NO_BUILD=1: using the binaries already in ${bin_dir#"$root"/}"
  else
    log "building (cargo build ${cargo_profile[*]} --workspace)"
    cargo build "${cargo_profile[@]}" --workspace
    binaries_note="\`cargo build ${cargo_profile[*]} --workspace\` (${bin_dir#"$root"/})"
  fi
}

# --- NGINX and HAProxy ---------------------------------------------------------------------------
# The top of an NGINX configuration run in the foreground with every file under DIR (the pid, the
# error log, the temporary directories, inside http {} with nginx_temp_paths).
nginx_head() { # DIR WORKERS
  if [ "$(id -u)" -eq 0 ]; then echo "user root;"; fi
  cat <<NGINX
worker_processes $2;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
NGINX
}
nginx_temp_paths() { # DIR
  local d
  for d in client_body proxy fastcgi uwsgi scgi; do echo "  ${d}_temp_path $1/$d;"; done
}
# Start NGINX on CONF in the foreground, its files under DIR, its output in LOG; its pid is the
# last of pids.
start_nginx() { # CONF DIR LOG
  mkdir -p "$2"
  nginx -e "$2/error.log" -c "$1" -p "$2" -g 'daemon off;' >"$3" 2>&1 &
  pids+=($!)
}

# What Rempart tells its upstream about the client (docs/configuration.md, Client identity), said
# in NGINX (inside http {} or a location) and in HAProxy (inside a frontend), so that the three do
# the same header work: X-Forwarded-For (the client's, then the peer), X-Forwarded-Proto,
# X-Forwarded-Host, X-Request-Id. NGINX also sends the client's Host, as the other two do.
nginx_forwarded_headers() {
  cat <<'NGINX'
  proxy_set_header Host $http_host;
  proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
  proxy_set_header X-Forwarded-Proto $scheme;
  proxy_set_header X-Forwarded-Host $http_host;
  proxy_set_header X-Request-Id $request_id;
NGINX
}
haproxy_forwarded_headers() {
  cat <<'HAPROXY'
  option forwardfor
  http-request set-header X-Forwarded-Proto https if { ssl_fc }
  http-request set-header X-Forwarded-Proto http if !{ ssl_fc }
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  unique-id-format %{+X}o\ %ci:%cp_%fi:%fp_%Ts_%rt:%pid
  unique-id-header X-Request-Id
HAPROXY
}

# The fixed-body origin: an NGINX of its own (WORKERS processes, default 1) on 127.0.0.1:PORT that
# answers every request, whatever its method and path, 200 with the 11 bytes {"ok":true}, and
# keeps connections for a million requests: the upstream costs every proxy the same, and little.
# Its configuration is DIR.conf, its files under DIR, its pid the last of pids.
start_fixed_origin() { # DIR PORT [WORKERS]
  local dir=$1 port=$2
  {
    nginx_head "$dir" "${3:-1}"
    cat <<NGINX
http {
  access_log off;
$(nginx_temp_paths "$dir")
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  server {
    listen 127.0.0.1:$port backlog=4096;
    default_type application/json;
    location / { return 200 '{"ok":true}'; }
  }
}
NGINX
  } >"$dir.conf"
  start_nginx "$dir.conf" "$dir" "$dir.log"
  wait_ready "fixed-body origin" "http://127.0.0.1:$port/healthz" "${pids[-1]}"
}

# --- reading the load generators ---------------------------------------------------------------
# wrk prints latencies as 812.00us, 1.23ms, 1.02s, 1.50m: to milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000; else if (u == "h") n *= 3600000
    printf "%.2f", n }'
}
# From wrk's output in FILE: wrk_rps (req/s, whole), wrk_p50 and wrk_p99 (ms, with --latency),
# wrk_requests and wrk_seconds (what it answered, over how long), wrk_non2xx, wrk_sockerr (connect,
# read, write and timeout errors added).
wrk_read() { # FILE
  wrk_rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$1")
  wrk_p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$1")")
  wrk_p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$1")")
  wrk_requests=$(awk '/ requests in / { print $1 }' "$1")
  wrk_seconds=$(awk '/ requests in / { sub(/,$/, "", $4); print $4 }' "$1")
  wrk_seconds=$(awk -v ms="$(to_ms "${wrk_seconds:-0s}")" 'BEGIN { printf "%.3f", ms / 1000 }')
  wrk_non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$1")
  wrk_non2xx=${wrk_non2xx:-0}
  wrk_sockerr=$(awk '/Socket errors:/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' "$1")
  wrk_sockerr=${wrk_sockerr:-0}
}

label() { case $1 in origin) echo "origin (direct)" ;; rempart) echo Rempart ;; nginx) echo NGINX ;; haproxy) echo HAProxy ;; *) echo "$1" ;; esac; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "n/a" || b == "n/a" || b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }
