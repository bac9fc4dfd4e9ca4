# Shared by conf/demo.sh and conf/cluster-demo.sh (sourced, not run): whether a loopback port is
# taken, stopping a process politely then for good, and waiting for an HTTP answer.

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

stop() { # SIGNAL PID: signal, wait up to 5s, then SIGKILL
  kill -0 "$2" 2>/dev/null || return 0
  kill "-$1" "$2" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$2" 2>/dev/null || { wait "$2" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  kill -KILL "$2" 2>/dev/null || true
  wait "$2" 2>/dev/null || true
}

wait_http() { # URL SECONDS
  local deadline=$((SECONDS + $2))
  until curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then return 1; fi
    sleep 0.2
  done
}
