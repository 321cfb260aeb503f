#!/usr/bin/env bash
# Side by side, in one run: a single tokio process (the ceiling), this project's cluster
# (2 workers, Shared and RoundRobin scheduling, and the pm master), and the seed's Node system
# (cluster + connect + graceful, 2 workers).
#
#   bash bench/compare.sh [SECONDS] [ROUNDS]
#
# 1. Throughput, interleaved rounds: wrk keep-alive then `Connection: close`, p50/p99, RSS of
#    master and workers idle and after load.
# 2. Faults under load (bench/src/bin/fault_bench.rs): one worker panic, one worker SIGKILL,
#    one reload where the system has one, one hot upgrade of the master (SIGUSR2) where it has
#    one; failed requests (refused connections included), time until the replacement answers,
#    longest gap in answers, when the old worker exits (upgrade: the old master).
#
# Prints the tables and writes them into docs/BENCHMARKS.md between the `compare.sh` markers,
# with the date, the machine and this command. wrk and fault_bench share the 2 cores with
# the servers; their settings are the same for every system.
#
# Installs what it needs: wrk (Debian), Node.js and the Node packages (npm), a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-5}
ROUNDS=${2:-2}
COMMAND="bash bench/compare.sh $SECONDS_PER_RUN $ROUNDS"
PORT=19337
REST_PORT=19985
WRK="wrk -t1 -c32 -d${SECONDS_PER_RUN}s --latency"
# What production sees: no backtrace symbolisation in the panic hook.
unset RUST_BACKTRACE

need_apt() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "${@:2}" >/dev/null; }; }
need_apt wrk wrk
need_apt curl curl
need_apt ss iproute2
need_apt node nodejs npm
(cd bench/node && npm install --no-audit --no-fund --silent >/dev/null)
cargo build --release -q -p examples -p cluster-bench -p cluster-cli

rss_tree() { # RSS in KiB of a process and its children: "master workers..."
  local pid=$1 out
  out="$(awk '/VmRSS/ {print $2}' /proc/"$pid"/status)"
  for child in $(pgrep -P "$pid"); do
    out="$out $(awk '/VmRSS/ {print $2}' /proc/"$child"/status 2>/dev/null)"
  done
  echo "$out"
}

# wait_port, start, stop
source bench/systems.sh

panic_path() { # system -> the app's route that fails asynchronously
  case $1 in pm) echo /asyncerror ;; *) echo /asycerror ;; esac
}

load() { # extra wrk args -> "req/s p50 p99"
  $WRK "$@" "http://127.0.0.1:$PORT/" 2>/dev/null | awk '
    /Requests\/sec/ {rps=$2}
    /^ +50%/ {p50=$2} /^ +99%/ {p99=$2}
    END {print rps, p50, p99}'
}

live_split() { # keep-alive connections held per process on the port, largest first: "16 / 16"
  ss -Htnp state established "( sport = :$PORT )" | grep -o 'pid=[0-9]*' | sort | uniq -c \
    | awk '{print $1}' | sort -rn | paste -sd/ | sed 's|/| / |g'
}

field() { # key line -> value
  echo "$2" | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k {print $2}'
}

# A server left on the port would take the load instead of the system under test.
if curl -s -o /dev/null "http://127.0.0.1:$PORT/"; then
  echo "something already answers on 127.0.0.1:$PORT: stop it first" >&2
  exit 1
fi

# 1. Throughput.
KA_OUT=$(mktemp)
trap 'rm -f "$KA_OUT"' EXIT
declare -A RPS_KA RPS_CLOSE P50 P99 IDLE LOADED LIVE
SYSTEMS="single shared round-robin cluster-run node"
for round in $(seq "$ROUNDS"); do
  for system in $SYSTEMS; do
    start "$system"; pid=$!
    wait_port
    sleep 0.5
    idle=$(rss_tree "$pid")
    # Who holds wrk's 32 connections, halfway through the keep-alive run.
    load >"$KA_OUT" & wrk_pid=$!
    sleep "$(awk -v s="$SECONDS_PER_RUN" 'BEGIN {print s / 2}')"
    live=$(live_split)
    wait "$wrk_pid"
    read -r ka p50 p99 <"$KA_OUT"
    read -r close _ _ < <(load -H "Connection: close")
    loaded=$(rss_tree "$pid")
    stop "$pid"
    RPS_KA[$system]="${RPS_KA[$system]:-} $ka"
    RPS_CLOSE[$system]="${RPS_CLOSE[$system]:-} $close"
    P50[$system]=$p50; P99[$system]=$p99; IDLE[$system]=$idle; LOADED[$system]=$loaded
    LIVE[$system]="${LIVE[$system]:-}${LIVE[$system]:+, }$live"
    echo "round $round $system: keep-alive $ka req/s ($live connections), close $close req/s, p50 $p50, p99 $p99, idle RSS KiB [$idle], loaded [$loaded]" >&2
  done
done

# 2. Faults under load.
FAULT_ROWS=""
for round in $(seq "$ROUNDS"); do
  for system in shared round-robin pm node; do
    faults="panic kill upgrade"
    [ "$system" = pm ] && faults="panic kill reload upgrade"
    [ "$system" = node ] && faults="panic kill"
    for fault in $faults; do
      start "$system"; pid=$!
      wait_port
      sleep 0.3
      line=$(./target/release/fault_bench "$PORT" "$pid" "$fault" "$(panic_path "$system")")
      stop "$pid"
      echo "round $round $system $fault: $line" >&2
      FAULT_ROWS="$FAULT_ROWS
| $system | $fault | $(field answered "$line") | $(field failed "$line") | $(field held "$line") | $(field hung "$line") | $(field other "$line") | $(field panic "$line" | sed 's/@/ after /') | $(field replacement "$line") | $(field gap "$line") | $(field old_exit "$line") |"
    done
  done
done

mean() { echo "$@" | awk '{s=0; for (i=1;i<=NF;i++) s+=$i; printf "%.0f", s/NF}'; }
report() {
  local cpu
  cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
  echo "Date: $(date -u '+%F %H:%M UTC'). Machine: $(nproc) × $cpu, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r); node $(node --version); $(wrk --version 2>&1 | head -1 | awk '{print $1, $2}')."
  echo "Command: \`$COMMAND\` (release build; \`RUST_BACKTRACE\` unset). The load generators share the 2 cores with the servers."
  echo
  echo "Throughput: \`$WRK\`, keep-alive then \`-H \"Connection: close\"\`, mean of $ROUNDS interleaved rounds (p50/p99 and RSS from the last round). Live connections: wrk's 32 keep-alive connections per process holding them (\`ss\`, halfway through each round's keep-alive run)."
  echo
  echo "| system | keep-alive req/s | × single | × Node | live connections (each round) | close req/s | × single | × Node | p50 | p99 | idle RSS KiB (master workers) | loaded RSS KiB |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  local single_ka node_ka single_close node_close ka close
  single_ka=$(mean ${RPS_KA[single]}); node_ka=$(mean ${RPS_KA[node]})
  single_close=$(mean ${RPS_CLOSE[single]}); node_close=$(mean ${RPS_CLOSE[node]})
  for system in $SYSTEMS; do
    ka=$(mean ${RPS_KA[$system]}); close=$(mean ${RPS_CLOSE[$system]})
    awk -v s="$system" -v ka="$ka" -v sk="$single_ka" -v nk="$node_ka" -v c="$close" -v sc="$single_close" -v nc="$node_close" \
        -v p50="${P50[$system]}" -v p99="${P99[$system]}" -v idle="${IDLE[$system]}" -v loaded="${LOADED[$system]}" -v live="${LIVE[$system]}" \
        'BEGIN {printf "| %s | %d | %.2f | %.2f | %s | %d | %.2f | %.2f | %s | %s | %s | %s |\n", s, ka, ka/sk, ka/nk, live, c, c/sc, c/nc, p50, p99, idle, loaded}'
  done
  echo
  echo "Faults: \`fault_bench PORT MASTER_PID FAULT\` — 8 keep-alive clients and a new-connection prober every 5 ms for the whole run, the fault 1 s in; times in ms after the fault, \`-\` = did not happen within 15 s; \`failed\` includes refused connections; \`upgrade\` is SIGUSR2 to the master (its old-worker column: when the old master exited). Each round in its own row."
  echo
  echo "| system | fault | answered | failed | killed worker's keep-alive connections | hung > 3 s | non-200 | the panicking request | replacement answers | longest gap | old worker exited |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  echo "${FAULT_ROWS#$'\n'}"
}

REPORT=$(report)
echo
echo "$REPORT"

# Into docs/BENCHMARKS.md, between the markers (kept when absent: appended).
DOC=docs/BENCHMARKS.md
BEGIN='<!-- compare.sh begin: generated, do not edit by hand -->'
END='<!-- compare.sh end -->'
if ! grep -qF "$BEGIN" "$DOC"; then
  printf '\n%s\n%s\n' "$BEGIN" "$END" >>"$DOC"
fi
REPORT="$REPORT" awk -v b="$BEGIN" -v e="$END" '
  $0 == b {print; print ENVIRON["REPORT"]; skip=1; next}
  $0 == e {skip=0}
  !skip {print}' "$DOC" >"$DOC.new"
mv "$DOC.new" "$DOC"
echo "written to $DOC" >&2
