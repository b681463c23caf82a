#!/usr/bin/env bash
# make demo-tls: makes a CA, a server and a client certificate with the openssl command
# (scripts/tls-certs.sh), then runs the example provider and caller (built with MPRPC_TLS)
# over mutual TLS on a free loopback port. Exit 0 only if every call worked.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=build/demo-tls
mkdir -p "$dir"
scripts/tls-certs.sh "$dir/certs"
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 18443)
cat > "$dir/provider.conf" <<CONF
rpcserver_address = 127.0.0.1:$port
log_dir = $dir
tls_enable = 1
tls_cert_file = $dir/certs/server.crt
tls_key_file = $dir/certs/server.key
# callers must show a certificate signed by this CA (mutual TLS)
tls_ca_file = $dir/certs/ca.crt
CONF
cat > "$dir/caller.conf" <<CONF
rpcserver_list = localhost:$port
tls_enable = 1
# the provider's certificate must chain to this CA and name "localhost"
tls_ca_file = $dir/certs/ca.crt
tls_cert_file = $dir/certs/client.crt
tls_key_file = $dir/certs/client.key
CONF
build/tls/provider -i "$dir/provider.conf" > "$dir/provider.out" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do grep -q listening "$dir/provider.out" && break; sleep 0.1; done
cat "$dir/provider.out"
echo "--- caller -i $dir/caller.conf"
status=0
build/tls/caller -i "$dir/caller.conf" || status=$?
echo "--- openssl s_client, no client certificate (the provider must refuse it):"
echo | timeout 10 openssl s_client -connect "127.0.0.1:$port" -CAfile "$dir/certs/ca.crt" -brief 2>&1 | grep -E 'alert|error' | head -n 2 || true
kill -INT $pid; wait $pid || status=$?
trap - EXIT
echo "--- provider log ($dir/$(date +%F)-log.txt):"
grep -E 'Login|TLS' "$dir/$(date +%F)-log.txt" | tail -n 5 || true
if [ $status -eq 0 ]; then echo "demo-tls: OK"; else echo "demo-tls: FAILED ($status)"; fi
exit $status
