#!/usr/bin/env bash
# make demo-zk: a local ZooKeeper (tests/zk/zk.sh), two example providers that
# register in it (rpcserver_port = 0: each publishes the port it really got),
# and the example caller run several times, finding the providers through
# ZooKeeper. Shows where the calls landed, then stops everything.
# Exit 0 only if every caller run succeeded and both providers served calls.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=build/demo-zk
runs=${DEMO_ZK_RUNS:-4}
rm -rf "$dir"
mkdir -p "$dir/p1" "$dir/p2"
zkdir=$(mktemp -d /tmp/mprpc-demo-zk.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  tests/zk/zk.sh stop "$zkdir" >/dev/null 2>&1 || true
  rm -rf "$zkdir"
}
trap cleanup EXIT

echo "--- starting ZooKeeper"
hosts=$(tests/zk/zk.sh start "$zkdir" 500)
zkport=${hosts##*:}
echo "ZooKeeper on $hosts"

# The example configs, pointed at ZooKeeper; providers on port 0.
for i in 1 2; do
  sed -e "s/^rpcserver_port *=.*/rpcserver_port = 0/" -e "s|^log_dir *=.*|log_dir = $dir/p$i|" \
      examples/provider.conf > "$dir/provider$i.conf"
  printf 'zookeeper_ip = 127.0.0.1\nzookeeper_port = %s\n' "$zkport" >> "$dir/provider$i.conf"
done
grep -v '^rpcserver_port' examples/caller.conf > "$dir/caller.conf"
printf 'zookeeper_ip = 127.0.0.1\nzookeeper_port = %s\n' "$zkport" >> "$dir/caller.conf"

for i in 1 2; do
  build/provider -i "$dir/provider$i.conf" > "$dir/provider$i.out" 2>&1 &
  pids+=($!)
done
for i in 1 2; do
  for _ in $(seq 1 100); do grep -q listening "$dir/provider$i.out" && break; sleep 0.1; done
  echo "provider $i: $(head -n 1 "$dir/provider$i.out")"
done

status=0
for r in $(seq 1 "$runs"); do
  echo "--- caller run $r: caller -i $dir/caller.conf"
  build/caller -i "$dir/caller.conf" || status=$?
done

for p in "${pids[@]}"; do kill -INT "$p"; done
for p in "${pids[@]}"; do wait "$p" || status=$?; done
pids=()

day=$(date +%F)
served=()
for i in 1 2; do
  log="$dir/p$i/$day-log.txt"
  n=$(grep -cE 'Login|Register|GetFriendLists' "$log" || true)
  served+=("$n")
  echo "--- provider $i log ($log): $n calls served"
  grep -E 'registry: (registered|connected|ZooKeeper session)|Login|Register|GetFriendLists' "$log" \
    | sed 's/^[0-9-]* [0-9:.]* [0-9]* //' | head -n 8
done
echo "--- calls per provider: provider 1 served ${served[0]}, provider 2 served ${served[1]}"
if [ "${served[0]}" -eq 0 ] || [ "${served[1]}" -eq 0 ]; then
  echo "demo-zk: the calls did not reach both providers"
  status=1
fi
if [ $status -eq 0 ]; then echo "demo-zk: OK"; else echo "demo-zk: FAILED ($status)"; fi
exit $status
