#!/usr/bin/env bash
# Server CPU per call under SIPp's uac: sipshard (auto-answer) and SIPp's own uas doing
# the same job, one after the other in one run, on loopback.
#
#   scripts/cpu_per_call.sh [RATE] [SECONDS] [SHARDS]     (defaults: 2000 30 2)
#   SERVER_ARGS=--no-tcp scripts/cpu_per_call.sh ...        (more `sipshard serve` flags)
#   TRANSPORT=t1 scripts/cpu_per_call.sh ...                (SIPp's -t: u1 UDP, t1 one TCP
#                                                             connection, tn one per call)
#
# CPU is utime+stime of the server process from /proc/PID/stat (kernel time included),
# read before and after the load.
set -euo pipefail
RATE=${1:-2000}
SECS=${2:-30}
SHARDS=${3:-2}
TRANSPORT=${TRANSPORT:-u1}
CALLS=$((RATE * SECS))
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin sipshard
TICK=$(getconf CLK_TCK)
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

measure() { # name pid port
  local name=$1 pid=$2 port=$3
  local before after
  before=$(cpu_ticks "$pid")
  (cd "$WORK" && sipp -sn uac "127.0.0.1:$port" -i 127.0.0.1 -p 0 -t "$TRANSPORT" -max_socket 1000 -m "$CALLS" -r "$RATE" \
      -l $((RATE * 2)) -nostdin -timeout $((SECS + 60)) -timeout_error >"$WORK/$name.out" 2>&1) || true
  sleep 1
  after=$(cpu_ticks "$pid")
  local ok failed
  ok=$(grep -E '^ +Successful call' "$WORK/$name.out" | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print $3}')
  failed=$(grep -E '^ +Failed call' "$WORK/$name.out" | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print $3}')
  awk -v n="$name" -v t=$((after - before)) -v hz="$TICK" -v ok="${ok:-0}" -v f="${failed:-0}" -v calls="$CALLS" 'BEGIN {
    s = t / hz;
    printf "%-28s calls %d ok %d failed %d  server CPU %.2f s  = %.2f s per 1000 calls = %.1f us/call\n",
      n, calls, ok, f, s, (ok > 0 ? s * 1000 / ok : 0), (ok > 0 ? s * 1e6 / ok : 0) }'
}

PORT_A=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
RUST_LOG=warn ./target/release/sipshard serve --listen "127.0.0.1:$PORT_A" --shards "$SHARDS" --coalesce-us "${COALESCE_US:-0}" ${SERVER_ARGS:-} >"$WORK/sipshard.out" 2>&1 &
SIPSHARD=$!
sleep 0.5
measure "sipshard (shards=$SHARDS, $TRANSPORT)" "$SIPSHARD" "$PORT_A"
kill -TERM "$SIPSHARD"; wait "$SIPSHARD" || true

PORT_B=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$WORK" && exec sipp -sn uas -i 127.0.0.1 -p "$PORT_B" -t "$TRANSPORT" -max_socket 1000 -nostdin -bg >/dev/null 2>&1) || true
sleep 0.5
UAS=$(pgrep -n -f "sipp -sn uas -i 127.0.0.1 -p $PORT_B")
measure "sipp uas ($TRANSPORT)" "$UAS" "$PORT_B"
kill "$UAS" 2>/dev/null || true
