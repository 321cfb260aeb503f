#!/usr/bin/env bash
# `cluster run` against the Rust master, the short way: the example worker
# (connect_with_cluster_worker) alone, under its own master (connect_with_cluster, Shared,
# 2 workers), and unmodified under `cluster run -w 2` (sockets passed as fd 3 and 4).
# Interleaved rounds of wrk keep-alive and `Connection: close`; prints req/s per round and
# the means. bench/compare.sh has the same row among all the systems.
#
#   bash bench/cluster_run.sh [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-5}
ROUNDS=${2:-3}
PORT=19437
REST_PORT=19485
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q -p examples -p cluster-cli

# wait_port, start, stop
source bench/systems.sh
rps() { wrk -t1 -c32 -d"${SECONDS_PER_RUN}s" "$@" "http://127.0.0.1:$PORT/" | awk '/Requests\/sec/ {printf "%.0f", $2}'; }

declare -A KA CLOSE
for round in $(seq "$ROUNDS"); do
  for system in single shared cluster-run; do
    start "$system"; pid=$!
    wait_port; sleep 0.5
    ka=$(rps); close=$(rps -H "Connection: close")
    stop "$pid"
    KA[$system]="${KA[$system]:-} $ka"; CLOSE[$system]="${CLOSE[$system]:-} $close"
    echo "round $round $system: keep-alive $ka req/s, close $close req/s"
  done
done
mean() { echo "$@" | awk '{s=0; for (i=1;i<=NF;i++) s+=$i; printf "%.0f", s/NF}'; }
echo
echo "| system | keep-alive req/s (rounds) | mean | close req/s (rounds) | mean |"
echo "|---|---|---|---|---|"
for system in single shared cluster-run; do
  echo "| $system |${KA[$system]} | $(mean ${KA[$system]}) |${CLOSE[$system]} | $(mean ${CLOSE[$system]}) |"
done
