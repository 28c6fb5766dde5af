#!/usr/bin/env bash
# Instructions per operation of the two in-memory benchmarks, counted by callgrind: a figure
# that does not move with this machine's ±25 % noise, for A/B comparisons of code changes.
#
#   scripts/instructions.sh     (needs valgrind)
#   KEEP_PROFILE=/tmp/shard.callgrind scripts/instructions.sh   (keeps the shard profile)
#
# shard/call_flow: instructions inside `Pair::call` divided by the calls made (six datagrams
# each). txn/server_noninvite_roundtrip: instructions inside the benchmark's `roundtrip`
# (one iteration's calls into the transaction layer; not inlined, so that LTO cannot hide
# them in criterion's loop); the request parse in the benchmark's setup is left out, as
# criterion leaves it out of the time.
# Instructions are not time (cache misses and branch mispredictions are not counted), but on
# one machine fewer instructions for the same work has meant less time.
set -euo pipefail
cd "$(dirname "$0")/.."
# The benchmark executables, as cargo names them (tests/ has a `shard` too).
bench_binary() {
    cargo bench --no-run --bench "$1" --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "bench" in m["target"]["kind"]:
        print(m["executable"])'
}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# Sums calls and inclusive instructions of calls into functions matching a regex, made from
# functions that do not match it (so that nothing is counted twice).
cat >"$WORK/calls.py" <<'PY'
import re, sys
path, pattern = sys.argv[1], re.compile(sys.argv[2])
names, caller, callee, pending, calls, cost = {}, "", "", 0, 0, 0
def name(token):
    m = re.match(r"\((\d+)\)(?: (.*))?", token)
    if not m:
        return token
    if m.group(2) is not None:
        names[m.group(1)] = m.group(2)
    return names.get(m.group(1), "?")
for line in open(path):
    line = line.rstrip("\n")
    if line.startswith("fn="):
        caller = name(line[3:])
    elif line.startswith("cfn="):
        callee = name(line[4:])
    elif line.startswith("calls="):
        pending = int(line[6:].split()[0])
    elif pending:
        fields = line.split()
        if pattern.search(callee) and not pattern.search(caller) and len(fields) > 1:
            calls += pending
            cost += int(fields[1])
        pending = 0
print(calls, cost)
PY
measure() { # BINARY BENCH_ID OUT
    valgrind --tool=callgrind --callgrind-out-file="$3" "$1" --bench "$2" --profile-time 2 \
        >/dev/null 2>&1
}

measure "$(bench_binary shard)" shard/call_flow "$WORK/shard.out"
read -r DATAGRAMS _ < <(python3 "$WORK/calls.py" "$WORK/shard.out" 'Shard::handle_datagram$')
read -r _ CALL_COST < <(python3 "$WORK/calls.py" "$WORK/shard.out" 'shard::Pair::call$')
echo "shard/call_flow: $((CALL_COST * 6 / DATAGRAMS)) instructions per call ($((DATAGRAMS / 6)) calls)"
# KEEP_PROFILE=path keeps the shard profile for callgrind_annotate.
if [ -n "${KEEP_PROFILE:-}" ]; then cp "$WORK/shard.out" "$KEEP_PROFILE"; fi

measure "$(bench_binary txn)" txn/server_noninvite_roundtrip "$WORK/txn.out"
read -r ITERATIONS LAYER_COST < <(python3 "$WORK/calls.py" "$WORK/txn.out" 'txn::roundtrip$')
echo "txn/server_noninvite_roundtrip: $((LAYER_COST / ITERATIONS)) instructions per iteration ($ITERATIONS iterations)"
