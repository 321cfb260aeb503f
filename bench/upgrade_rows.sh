#!/usr/bin/env bash
# The `upgrade` rows of bench/compare.sh's fault table alone, 3 rounds of each system, without
# rewriting docs/BENCHMARKS.md: SIGUSR2 to the master under load (`fault_bench ... upgrade`).
# Needs the release build compare.sh makes (`cargo build --release -p examples -p cluster-bench`).
#
#   bash bench/upgrade_rows.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PORT=19437; REST_PORT=19985
for round in 1 2 3; do
  for system in shared round-robin pm; do
    case $system in
      shared) PORT=$PORT REST_PORT=$REST_PORT ./target/release/connect_with_cluster >/dev/null 2>&1 & ;;
      round-robin) SCHEDULING=round-robin PORT=$PORT REST_PORT=$REST_PORT ./target/release/connect_with_cluster >/dev/null 2>&1 & ;;
      pm) PORT=$PORT ./target/release/pm_graceful_exit >/dev/null 2>&1 & ;;
    esac
    pid=$!
    for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.05; done
    sleep 0.3
    line=$(./target/release/fault_bench "$PORT" "$pid" upgrade)
    echo "round $round $system upgrade: $line"
    # The new master is not this shell's child: stop whatever holds the port now (the new
    # master, and in Shared mode its workers, which drain on SIGTERM).
    kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    for p in $(ss -ltnpH "sport = :$PORT" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
      kill -TERM "$p" 2>/dev/null
    done
    for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" || break; sleep 0.05; done
    sleep 0.5
  done
done
