# Sourced by the bench scripts (compare.sh, close_rows.sh, cluster_run.sh): how each system
# is started and stopped, so every script measures the same thing. Needs PORT and REST_PORT set, a release build in
# ./target/release (or in BIN, to run another build's binaries), and the caller's working
# directory at the repository root.

wait_port() { # returns once something answers HTTP on $PORT (10 s at most)
  for _ in $(seq 200); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/" && return 0
    sleep 0.05
  done
  echo "nothing answers on $PORT" >&2
  return 1
}

start() { # system; $! is then the top process
  case $1 in
    single) PORT=$PORT REST_PORT=$REST_PORT ${BIN:-./target/release}/connect_with_cluster_worker >/dev/null 2>&1 & ;;
    shared) PORT=$PORT REST_PORT=$REST_PORT ${BIN:-./target/release}/connect_with_cluster >/dev/null 2>&1 & ;;
    round-robin) SCHEDULING=round-robin PORT=$PORT REST_PORT=$REST_PORT ${BIN:-./target/release}/connect_with_cluster >/dev/null 2>&1 & ;;
    pm) PORT=$PORT ${BIN:-./target/release}/pm_graceful_exit >/dev/null 2>&1 & ;;
    # The same worker, unmodified, under the `cluster` command (sockets passed as fd 3, 4).
    cluster-run) PORT=$PORT REST_PORT=$REST_PORT ${BIN:-./target/release}/cluster run -w 2 \
        -l "127.0.0.1:$PORT" -l "127.0.0.1:$REST_PORT" --ready-after 200 \
        -- ${BIN:-./target/release}/connect_with_cluster_worker >/dev/null 2>&1 & ;;
    node) PORT=$PORT REST_PORT=$REST_PORT node bench/node/dispatch.js >/dev/null 2>&1 & ;;
  esac
}

stop() { # pid; returns once nothing answers on $PORT any more
  # Only what the script started, by pid (a user's own cluster may run the same binaries):
  # the top process, then its children still alive 5 s later.
  local pid=$1 children child holder
  children=$(pgrep -P "$pid" || true)
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for child in $children; do
    for _ in $(seq 100); do kill -0 "$child" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$child" 2>/dev/null || true
  done
  # After a hot upgrade the new master is not the script's child: it holds our port (checked
  # free at the start), so stop whatever listens there (it and, in Shared mode, its workers).
  for holder in $(command -v ss >/dev/null && ss -ltnpH "sport = :$PORT" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
    kill -TERM "$holder" 2>/dev/null || true
  done
  for _ in $(seq 200); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/" || return 0
    sleep 0.05
  done
  echo "something still answers on $PORT" >&2
  return 1
}
