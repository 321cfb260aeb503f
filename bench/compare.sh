#!/usr/bin/env bash
# Side by side, in one run and interleaved: a single tokio process (the ceiling), this
# project's cluster (2 workers, Shared and RoundRobin), and the seed's Node system (cluster +
# connect + graceful, 2 workers). wrk shares the 2 cores with the servers; its settings are
# the same for every system.
#
#   bash bench/compare.sh [SECONDS] [ROUNDS]
#
# Installs what it needs: wrk (Debian), the Node packages (npm), a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-5}
ROUNDS=${2:-2}
PORT=19337
REST_PORT=19985

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
command -v node >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null; }
(cd bench/node && npm install --no-audit --no-fund --silent >/dev/null)
cargo build --release -q -p examples

rss_tree() { # RSS in KiB of a process and its children: "master workers..."
  local pid=$1 out
  out="$(grep VmRSS /proc/"$pid"/status | awk '{print $2}')"
  for child in $(pgrep -P "$pid"); do
    out="$out $(grep VmRSS /proc/"$child"/status 2>/dev/null | awk '{print $2}')"
  done
  echo "$out"
}

wait_port() {
  for _ in $(seq 200); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/" && return 0
    sleep 0.05
  done
  echo "nothing answers on $PORT" >&2
  return 1
}

start() { # system -> pid of the top process
  case $1 in
    single) PORT=$PORT REST_PORT=$REST_PORT ./target/release/connect_with_cluster_worker >/dev/null 2>&1 & ;;
    shared) PORT=$PORT REST_PORT=$REST_PORT ./target/release/connect_with_cluster >/dev/null 2>&1 & ;;
    round-robin) SCHEDULING=round-robin PORT=$PORT REST_PORT=$REST_PORT ./target/release/connect_with_cluster >/dev/null 2>&1 & ;;
    node) PORT=$PORT REST_PORT=$REST_PORT node bench/node/dispatch.js >/dev/null 2>&1 & ;;
  esac
  echo $!
}

load() { # extra wrk args -> "req/s p50 p99"
  wrk -t1 -c32 -d"${SECONDS_PER_RUN}s" --latency "$@" "http://127.0.0.1:$PORT/" 2>/dev/null | awk '
    /Requests\/sec/ {rps=$2}
    /^ +50%/ {p50=$2} /^ +99%/ {p99=$2}
    END {print rps, p50, p99}'
}

declare -A RPS_KA RPS_CLOSE P50 P99 IDLE LOADED
SYSTEMS="single shared round-robin node"
for round in $(seq "$ROUNDS"); do
  for system in $SYSTEMS; do
    pid=$(start "$system")
    wait_port
    sleep 0.5
    idle=$(rss_tree "$pid")
    read -r ka p50 p99 < <(load)
    read -r close _ _ < <(load -H "Connection: close")
    loaded=$(rss_tree "$pid")
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    pkill -f "bench/node/worker.js" 2>/dev/null || true
    RPS_KA[$system]="${RPS_KA[$system]:-} $ka"
    RPS_CLOSE[$system]="${RPS_CLOSE[$system]:-} $close"
    P50[$system]=$p50; P99[$system]=$p99; IDLE[$system]=$idle; LOADED[$system]=$loaded
    echo "round $round $system: keep-alive $ka req/s, close $close req/s, p50 $p50, p99 $p99, idle RSS KiB [$idle], loaded [$loaded]" >&2
  done
done

mean() { echo "$@" | awk '{s=0; for (i=1;i<=NF;i++) s+=$i; printf "%.0f", s/NF}'; }
echo
echo "$(date -u +%F) on $(nproc) cores, $(uname -r); wrk -t1 -c32 -d${SECONDS_PER_RUN}s, $ROUNDS interleaved rounds"
echo
echo "| system | keep-alive req/s | × single | × Node | close req/s | × single | × Node | p50 | p99 | idle RSS KiB (master workers) | loaded RSS KiB |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
single_ka=$(mean ${RPS_KA[single]}); node_ka=$(mean ${RPS_KA[node]})
single_close=$(mean ${RPS_CLOSE[single]}); node_close=$(mean ${RPS_CLOSE[node]})
for system in $SYSTEMS; do
  ka=$(mean ${RPS_KA[$system]}); close=$(mean ${RPS_CLOSE[$system]})
  awk -v s="$system" -v ka="$ka" -v sk="$single_ka" -v nk="$node_ka" -v c="$close" -v sc="$single_close" -v nc="$node_close" \
      -v p50="${P50[$system]}" -v p99="${P99[$system]}" -v idle="${IDLE[$system]}" -v loaded="${LOADED[$system]}" \
      'BEGIN {printf "| %s | %d | %.2f | %.2f | %d | %.2f | %.2f | %s | %s | %s | %s |\n", s, ka, ka/sk, ka/nk, c, c/sc, c/nc, p50, p99, idle, loaded}'
done
