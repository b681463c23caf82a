#!/usr/bin/env bash
# bench/idle.sh - 10,000 idle connections against the mprpc provider
# (make bench-idle).  Starts build/bench/mprpc_echo_server (io_threads 2,
# idle timeout off so the connections stay open; it raises its own fd limit),
# runs build/bench/idle_conns against it and stops it.
#   bench/idle.sh [idle_conns options, e.g. -n 10000 -k 1000]
set -euo pipefail
cd "$(dirname "$0")/.."
B=build/bench
out=$(mktemp /tmp/mprpc-idle.XXXXXX)
"$B/mprpc_echo_server" -p 0 -i 0 >"$out" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -f "$out"' EXIT
port=
for _ in $(seq 1 250); do
  port=$(awk '$1 == "PORT" { print $2; exit }' "$out")
  [ -n "$port" ] && break
  sleep 0.02
done
[ -n "$port" ] || { echo "idle.sh: provider did not start" >&2; exit 1; }
echo "idle.sh: provider pid $pid port $port, fd limit $(awk '/Max open files/ { print $4 }' /proc/$pid/limits)"
"$B/idle_conns" -p "$port" --server-pid "$pid" "$@"
