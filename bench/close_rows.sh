#!/usr/bin/env bash
# `Connection: close` only, interleaved rounds, ratios to the single process within each
# round: the quick loop for issue 13 item 2 (compare.sh does the full table).
#
#   bash bench/close_rows.sh [SECONDS] [ROUNDS]
#
# SYSTEMS (default "single shared round-robin") picks what runs, in that order, each round;
# `SYSTEM@DIR` runs SYSTEM from the binaries in DIR (another build, for A/B in one run).
# PORT/REST_PORT default to 24337/24385, away from compare.sh's, so both can run at once.
# Prints one line per run (req/s; CPU per connection of the top process, the master or the
# single process, and of its children, the workers, from /proc/PID/task/*/schedstat; the
# machine's idle share during it; the load average) and per round the ratios to `single`.
# Stops only the processes it started, by pid.
# NICE=-10 (root) runs the servers and wrk at that niceness, so that other work on the
# machine (builds) takes less of the cores during the runs: under load, three processes
# (master and two workers) get a larger share of the CPU than one, which flatters the
# cluster against the single process.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-5}
ROUNDS=${2:-3}
PORT=${PORT:-24337}
REST_PORT=${REST_PORT:-24385}
SYSTEMS=${SYSTEMS:-"single shared round-robin"}
WRK=(wrk -t1 -c32 "-d${SECONDS_PER_RUN}s" -H "Connection: close")
unset RUST_BACKTRACE
source bench/systems.sh
if [ -n "${NICE:-}" ]; then renice -n "$NICE" -p $$ >/dev/null; fi
cargo build --release -q -p examples

tree_cpu_ns() { # pid -> "own children": on-CPU ns (schedstat) of the process and of its children
  local own=0 kids=0 child
  own=$(cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s+=$1} END {printf "%d", s}')
  for child in $(pgrep -P "$1"); do
    kids=$((kids + $(cat /proc/"$child"/task/*/schedstat 2>/dev/null | awk '{s+=$1} END {printf "%d", s}')))
  done
  echo "$own $kids"
}

cpu_times() { awk '/^cpu / {print $2+$3+$4+$6+$7+$8, $5}' /proc/stat; } # busy idle (ticks)

if curl -s -o /dev/null "http://127.0.0.1:$PORT/"; then
  echo "something already answers on 127.0.0.1:$PORT: stop it first" >&2
  exit 1
fi

echo "date $(date -u '+%F %H:%M:%S UTC'), $(nproc) × $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), ${WRK[*]}"
declare -A SUM
for round in $(seq "$ROUNDS"); do
  declare -A RPS=()
  for system in $SYSTEMS; do
    name=${system%@*}; bin=./target/release
    [ "$name" != "$system" ] && bin=${system#*@}
    BIN=$bin start "$name"; pid=$!
    wait_port
    sleep 0.3
    read -r busy0 idle0 < <(cpu_times)
    read -r own0 kids0 < <(tree_cpu_ns "$pid")
    read -r requests rps < <("${WRK[@]}" "http://127.0.0.1:$PORT/" 2>/dev/null |
      awk '/requests in/ {n=$1} /Requests\/sec/ {r=$2} END {print n, r}')
    read -r own1 kids1 < <(tree_cpu_ns "$pid")
    read -r busy1 idle1 < <(cpu_times)
    load=$(cut -d' ' -f1 /proc/loadavg)
    stop "$pid"
    idle=$(awk -v b=$((busy1 - busy0)) -v i=$((idle1 - idle0)) 'BEGIN {printf "%.0f", 100 * i / (b + i)}')
    RPS[$system]=$rps
    SUM[$system]=$(awk -v a="${SUM[$system]:-0}" -v b="$rps" 'BEGIN {printf "%.2f", a + b}')
    cost=$(awk -v o=$((own1 - own0)) -v k=$((kids1 - kids0)) -v n="$requests" \
      'BEGIN {printf "top process %.1f µs, workers %.1f µs per connection", o / n / 1000, k / n / 1000}')
    echo "round $round $system: $rps req/s; $cost (machine idle ${idle}%, load $load)"
  done
  if [ -n "${RPS[single]:-}" ]; then
    line="round $round ratios to single:"
    for system in $SYSTEMS; do
      line="$line $system $(awk -v a="${RPS[$system]}" -v s="${RPS[single]}" 'BEGIN {printf "%.2f", a / s}')"
    done
    echo "$line"
  fi
done
if [ -n "${SUM[single]:-}" ]; then
  line="mean of $ROUNDS rounds, ratio to single:"
  for system in $SYSTEMS; do
    line="$line $system $(awk -v a="${SUM[$system]}" -v s="${SUM[single]}" -v n="$ROUNDS" 'BEGIN {printf "%.0f (%.2f)", a / n, a / s}')"
  done
  echo "$line"
fi
