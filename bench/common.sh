# Shared by bench/run.sh and bench/shield.sh (sourced, not run): processes stopped on exit,
# free loopback ports, readiness. The sourcing script defines log() first.

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
free_port() { # sets PORT to a free loopback port not handed out before
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 30000))
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
