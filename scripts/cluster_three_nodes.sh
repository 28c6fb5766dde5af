#!/usr/bin/env bash
# Three clustered nodes behind the Kamailio front (issue 23), on one machine, side by side
# with one node alone in the same run: SIPp's uac places CALLS calls at RATE through the
# front (deploy/kamailio/front.cfg, as the README runs it), and the CPU per call of every
# process is read from /proc/PID/stat (utime+stime, kernel included): the front (all its
# processes), each node, Redis.
#
#   scripts/cluster_three_nodes.sh [RATE] [CALLS]     (defaults: 1000 15000)
#   KEEP=/tmp/run scripts/cluster_three_nodes.sh ...  (keeps each SIPp screen as /tmp/run.<label>)
#
# The node alone and the node with Redis get SIPp's built-in uac; through the front SIPp
# runs tests/data/sipp/proxied_call.xml, whose ACK and BYE follow the Record-Route.
#
# Every node rings ANSWER_DELAY_MS (default 20) before it answers, as phones do: a 180 and
# a 200 sent back to back can pass each other between two Kamailio children, and SIPp
# aborts a call on a 180 after its 200 (ANSWER_DELAY_MS=0 shows it: about 1 % of calls).
#
# Needs sipp, kamailio and redis-server. Everything listens on free loopback ports.
set -euo pipefail
RATE=${1:-1000}
CALLS=${2:-15000}
# shellcheck source=scripts/cluster_common.sh
. "$(dirname "$0")/cluster_common.sh"
KAMAILIO=$(command -v kamailio || echo /usr/sbin/kamailio)
cleanup() { kill $(jobs -p) 2>/dev/null || true; pkill -f "$WORK/front.cfg" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
# CPU ticks of the front: all processes whose command names its config.
front_ticks() { local t=0; for p in $(pgrep -f "$WORK/front.cfg"); do t=$((t + $(ticks "$p"))); done; echo $t; }
per_call() { awk -v t="$1" -v hz="$TICK" -v n="$CALLS" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }'; }


start_node() { # port, extra args...
  local port=$1; shift
  ./target/release/sipshard serve --listen "127.0.0.1:$port" --shards 1 --no-tcp \
    --answer-delay-ms "${ANSWER_DELAY_MS:-20}" "$@" \
    >"$WORK/node-$port.log" 2>&1 &
  echo $!
  wait_udp_port "$port"
}

run() { # label scenario target-port node-pids...
  local label=$1 scenario=$2 target=$3; shift 3
  local pids=("$@") before=() r0 f0 r1 f1 failed
  for p in "${pids[@]}"; do before+=("$(ticks "$p")"); done
  r0=$(ticks "$RPID"); f0=$(front_ticks)
  cp "tests/data/sipp/proxied_call.xml" "$WORK/proxied_call.xml"
  # shellcheck disable=SC2086
  (cd "$WORK" && sipp $scenario "127.0.0.1:$target" -i 127.0.0.1 -p 0 -m "$CALLS" -r "$RATE" \
    -l $((RATE * 2)) -nostdin -timeout 120 -timeout_error >"$WORK/sipp.out" 2>&1) || true
  [ -n "${KEEP:-}" ] && cp "$WORK/sipp.out" "$KEEP.$(echo "$label" | tr ' ' '_')"
  sleep 1
  r1=$(ticks "$RPID"); f1=$(front_ticks)
  failed=$(grep -E '^ +Failed call' "$WORK/sipp.out" | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print $3}')
  local line="$label: failed ${failed:-?}; us/call:"
  local i=0 total=0
  for p in "${pids[@]}"; do
    local t=$(( $(ticks "$p") - before[i] ))
    total=$((total + t))
    line="$line node$((i + 1)) $(per_call $t)"
    i=$((i + 1))
  done
  line="$line (nodes $(per_call $total)) redis $(per_call $((r1 - r0))) front $(per_call $((f1 - f0)))"
  echo "$line"
}

# One node alone, SIPp straight at it (proxied_call.xml works without a proxy too).
P=$(free_port); N=$(start_node "$P")
run "one node alone" "-sn uac" "$P" "$N"
kill "$N"; wait "$N" 2>/dev/null || true

# One node writing to Redis.
P=$(free_port); N=$(start_node "$P" --cluster "redis://127.0.0.1:$RPORT/" --node-id solo)
run "one node + redis" "-sn uac" "$P" "$N"
kill "$N"; wait "$N" 2>/dev/null || true

# Three nodes behind the front.
PIDS=(); : >"$WORK/dispatcher.list"
for id in 1 2 3; do
  P=$(free_port)
  PIDS+=("$(start_node "$P" --cluster "redis://127.0.0.1:$RPORT/" --node-id "node-$id")")
  echo "1 sip:127.0.0.1:$P 0 0" >>"$WORK/dispatcher.list"
done
cp deploy/kamailio/front.cfg "$WORK/front.cfg"
FPORT=$(free_port)
"$KAMAILIO" -DD -E -x tlsf -m 256 -M 8 -f "$WORK/front.cfg" -w "$WORK" \
  -A "LISTEN=udp:127.0.0.1:$FPORT" -A "DISPATCHER_LIST=\"$WORK/dispatcher.list\"" \
  >"$WORK/front.log" 2>&1 &
wait_udp_port "$FPORT"
run "three nodes + redis behind the front" "-sf proxied_call.xml" "$FPORT" "${PIDS[@]}"
