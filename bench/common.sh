# Shared by bench/run.sh, bench/shield.sh and bench/connections.sh (sourced, not run): processes
# stopped on exit, free loopback ports, readiness, and what /proc says about a process (resident
# memory, CPU time) and the machine (idle CPU). The sourcing script defines log() first.

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

# Wait until URL answers 200, while PID lives; at most 30 s.
wait_ready() { # NAME URL PID
  local deadline=$((SECONDS + 30))
  until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$2" 2>/dev/null)" = 200 ]; do
    if ! kill -0 "$3" 2>/dev/null; then log "$1 exited during start-up (see its log in bench/out/)"; return 1; fi
    if [ "$SECONDS" -ge "$deadline" ]; then log "$1 not answering 200 on $2 after 30s"; return 1; fi
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
# clock ticks (getconf CLK_TCK a second). The command name in /proc/PID/stat is skipped whole
# (it may hold spaces): after it, utime and stime are the 12th and 13th fields.
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
