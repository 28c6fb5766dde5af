#!/usr/bin/env bash
# What writing to the shared store costs a node (issue 23): `sipshard serve` under SIPp's
# uac, without and with `--cluster`, alternated ROUNDS times in one run, with the CPU per
# call of the server and of redis-server (utime+stime from /proc/PID/stat, kernel time
# included).
#
#   scripts/cluster_cost.sh [RATE] [CALLS] [ROUNDS]     (defaults: 2000 20000 3)
#   SHARDS=1 scripts/cluster_cost.sh ...                (the server's shards; default 2)
#   SIPSHARD_BIN=/tmp/old scripts/cluster_cost.sh ...   (another build, for an A/B)
#
# Needs sipp and redis-server; starts its own Redis on a free loopback port (nothing saved).
set -euo pipefail
RATE=${1:-2000}
CALLS=${2:-20000}
ROUNDS=${3:-3}
# shellcheck source=scripts/cluster_common.sh
. "$(dirname "$0")/cluster_common.sh"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

run() { # label, then extra server args
  local label=$1; shift
  local port pid c0 c1 r0 r1 failed
  port=$(free_port)
  "${SIPSHARD_BIN:-./target/release/sipshard}" serve --listen "127.0.0.1:$port" --shards "${SHARDS:-2}" --no-tcp "$@" \
    >"$WORK/server.log" 2>&1 &
  pid=$!
  wait_udp_port "$port"
  c0=$(ticks "$pid"); r0=$(ticks "$RPID")
  (cd "$WORK" && sipp -sn uac "127.0.0.1:$port" -i 127.0.0.1 -p 0 -m "$CALLS" -r "$RATE" \
    -l $((RATE * 2)) -nostdin -timeout 120 -timeout_error >"$WORK/sipp.out" 2>&1) || true
  sleep 1
  c1=$(ticks "$pid"); r1=$(ticks "$RPID")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  failed=$(grep -E '^ +Failed call' "$WORK/sipp.out" | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print $3}')
  awk -v l="$label" -v c=$((c1 - c0)) -v r=$((r1 - r0)) -v hz="$TICK" -v n="$CALLS" -v f="${failed:-?}" \
    'BEGIN { printf "%-16s server %6.1f us/call  redis %5.1f us/call  failed %s\n", l, c * 1e6 / hz / n, r * 1e6 / hz / n, f }'
}

for _ in $(seq "$ROUNDS"); do
  run "alone"
  run "--cluster" --cluster "redis://127.0.0.1:$RPORT/" --node-id bench
done
