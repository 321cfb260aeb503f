# Sourced by the bench scripts (compare.sh, close_rows.sh): how each system is started, so
# every script measures the same thing. Needs PORT and REST_PORT set, a release build in
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
