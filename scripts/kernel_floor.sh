#!/usr/bin/env bash
# The kernel floor: CPU per call of `kernel-floor` (a callee that only copies headers into
# a 180, a 200 and a BYE's 200; no SIP stack) under SIPp's uac, on loopback. Whatever a
# real callee spends per call on this machine, it cannot go below this.
#
#   scripts/kernel_floor.sh [RATE] [SECONDS]      (defaults: 2000 20)
set -euo pipefail
RATE=${1:-2000}
SECS=${2:-20}
CALLS=$((RATE * SECS))
cd "$(dirname "$0")/.."
(cd loadtest && cargo build --release --quiet --bin kernel-floor)
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
./target/release/kernel-floor "127.0.0.1:$PORT" $((SECS + 8)) >"$WORK/floor.out" &
FLOOR=$!
sleep 0.3
(cd "$WORK" && sipp -sn uac "127.0.0.1:$PORT" -i 127.0.0.1 -p 0 -m "$CALLS" -r "$RATE" \
    -l $((RATE * 2)) -nostdin -timeout $((SECS + 60)) -timeout_error >"$WORK/sipp.out" 2>&1) || true
wait "$FLOOR"
tail -1 "$WORK/floor.out"
awk -v calls="$CALLS" '/answered/ { cpu = $(NF-4) + $(NF-1); ok = $3;
  printf "kernel floor: %.1f us CPU per call (%d calls answered)\n", cpu * 1e6 / ok, ok }' "$WORK/floor.out"
