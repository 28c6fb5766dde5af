# Shared by scripts/cluster_cost.sh and scripts/cluster_three_nodes.sh (sourced, not run):
# the release build, a scratch directory, free loopback ports, readiness waits, CPU ticks
# of a process, and a Redis of their own (RPORT, RPID) that keeps nothing on disk.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --quiet --bin sipshard
TICK=$(getconf CLK_TCK)
WORK=$(mktemp -d)

# A loopback port free for UDP and TCP a moment ago.
free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits (10 s at most) until something listens on UDP port $1 of 127.0.0.1.
wait_udp_port() {
  local hex
  hex=$(printf '0100007F:%04X' "$1")
  for _ in $(seq 200); do
    grep -q " $hex " /proc/net/udp && return 0
    sleep 0.05
  done
  echo "nothing listens on udp 127.0.0.1:$1" >&2
  return 1
}

# utime+stime of process $1, in clock ticks (kernel time included).
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
RPID=$!
for _ in $(seq 200); do
  [ "$(redis-cli -p "$RPORT" ping 2>/dev/null)" = PONG ] && break
  sleep 0.05
done
