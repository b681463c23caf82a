#!/usr/bin/env bash
# make demo: starts the example provider on a free loopback port, runs the
# caller against it, stops the provider. Exit 0 only if every call worked.
#   scripts/demo.sh [bigfile]    (bigfile: build/bigfile_provider and build/bigfile_caller)
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${1:+$1_}
dir=build/demo${1:+-$1}
mkdir -p "$dir"
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 18000)
for role in provider caller; do
  sed "s/^rpcserver_port *=.*/rpcserver_port = $port/; s|^log_dir *=.*|log_dir = $dir|" examples/$role.conf > "$dir/$role.conf"
done
build/${prefix}provider -i "$dir/provider.conf" > "$dir/provider.out" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do grep -q listening "$dir/provider.out" && break; sleep 0.1; done
cat "$dir/provider.out"
echo "--- caller -i $dir/caller.conf"
status=0
build/${prefix}caller -i "$dir/caller.conf" || status=$?
kill -INT $pid; wait $pid || status=$?
trap - EXIT
echo "--- provider log ($dir/$(date +%F)-log.txt):"
tail -n 5 "$dir/$(date +%F)-log.txt" || true
if [ $status -eq 0 ]; then echo "demo: OK"; else echo "demo: FAILED ($status)"; fi
exit $status
