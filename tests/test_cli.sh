#!/usr/bin/env bash
# mprpc-call against the example provider (build/provider) as real processes: a Login in text format,
# --raw piped through protoc --encode/--decode, --list against a real ZooKeeper (tests/zk/zk.sh, stopped
# by pid), --health, and the admin service kept out of ZooKeeper. Prints one line per case and the
# MPRPC-TEST-SUMMARY line tests/run.sh adds up.  Usage: tests/test_cli.sh (from anywhere)
set -u
cd "$(dirname "$0")/.."
call=build/mprpc-call
tmp=$(mktemp -d /tmp/mprpc-cli.XXXXXX)
passed=0 failed=0 pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  [ -f "$tmp/zk/pid" ] && tests/zk/zk.sh stop "$tmp/zk" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT

# case NAME: runs the function NAME; a failing `want` inside marks it failed.
fails=0
want() { if ! eval "$1"; then echo "  failed: $1" >&2; fails=$((fails + 1)); fi; }
case_() {
  fails=0; "$1"
  if [ $fails -eq 0 ]; then passed=$((passed + 1)); echo "ok   $1"; else failed=$((failed + 1)); echo "FAIL $1"; fi
}

# Starts build/provider with the extra config lines given; sets $port.
provider() {
  printf 'rpcserver_ip = 127.0.0.1\nrpcserver_port = 0\n%s\n' "$1" > "$tmp/p$2.conf"
  build/provider -i "$tmp/p$2.conf" > "$tmp/p$2.out" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do grep -q listening "$tmp/p$2.out" && break; sleep 0.05; done
  grep -q listening "$tmp/p$2.out" || cat "$tmp/p$2.out" >&2
  port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$tmp/p$2.out")
}

login_in_text_format_prints_the_reply_in_text_format() {
  out=$($call --proto proto/user.proto 127.0.0.1:$port UserServiceRpc Login <<<'name: "zhang san" pwd: "123456"')
  want '[ $? -eq 0 ]'
  want '[[ "$out" == *"success: true"* ]]'
  out=$($call -I proto --proto proto/user.proto 127.0.0.1:$port UserServiceRpc Login -d 'name: ""')
  want '[[ "$out" == *"errmsg: \"name must not be empty\""* ]]'
}

raw_composes_with_protoc_encode_and_decode() {
  out=$(echo 'userid: 7' | protoc -Iproto --encode=fixbug.GetFriendListsRequest proto/user.proto |
        $call --raw 127.0.0.1:$port FriendServiceRpc GetFriendLists |
        protoc -Iproto --decode=fixbug.GetFriendListsResponse proto/user.proto)
  want '[ $? -eq 0 ]'
  want '[[ "$out" == *"friends: \"gao yang\""* && "$out" == *"friends: \"wang shuo\""* ]]'
  # the bytes out are exactly what protoc makes of the text reply
  echo 'userid: 7' | protoc -Iproto --encode=fixbug.GetFriendListsRequest proto/user.proto |
    $call --raw 127.0.0.1:$port FriendServiceRpc GetFriendLists > "$tmp/raw.bin"
  printf '%s\n' "$out" | protoc -Iproto --encode=fixbug.GetFriendListsResponse proto/user.proto > "$tmp/re.bin"
  want 'cmp -s "$tmp/raw.bin" "$tmp/re.bin"'
}

health_of_the_example_provider_is_serving() {
  out=$($call --health 127.0.0.1:$port); want '[ $? -eq 0 ] && [ "$out" = SERVING ]'
  out=$($call --health --service FriendServiceRpc 127.0.0.1:$port); want '[ $? -eq 0 ]'
}

a_stopped_provider_is_exit_3_for_calls_and_probes() {
  provider "" stop; local p=${pids[-1]}
  kill -INT $p; wait $p
  $call --health --timeout 500 127.0.0.1:$port 2>/dev/null; want '[ $? -eq 3 ]'
  $call --raw -d '' --timeout 500 127.0.0.1:$port UserServiceRpc Login 2>/dev/null; want '[ $? -eq 3 ]'
}

# Every address form mprpc.h takes: the provider listens on it, mprpc-call dials it (its own parser).
calls_over_ipv6_and_a_unix_socket_reach_the_provider() {
  local a
  provider "rpcserver_address = [::1]:0" v6
  a=$(sed -n 's/.*listening on \(\[::1\]:[0-9]*\).*/\1/p' "$tmp/pv6.out")
  want '[ -n "$a" ]'
  out=$($call --proto proto/user.proto "$a" UserServiceRpc Login -d 'name: "over ipv6"')
  want '[ $? -eq 0 ] && [[ "$out" == *"success: true"* ]]'
  out=$($call --health "$a"); want '[ $? -eq 0 ] && [ "$out" = SERVING ]'
  provider "rpcserver_address = unix:$tmp/p.sock" unix
  want '[ -S "$tmp/p.sock" ]'
  out=$($call --proto proto/user.proto "unix:$tmp/p.sock" UserServiceRpc Login -d 'name: "over unix"')
  want '[ $? -eq 0 ] && [[ "$out" == *"success: true"* ]]'
  out=$($call --raw -d '' --timeout 500 "unix:@mprpc-cli-nobody-$$" UserServiceRpc Login 2>&1)
  want '[ $? -eq 3 ] && [[ "$out" == *"MPRPC_ERR_CONNECT"* ]]'
  # a malformed address is a usage error before anything is sent, in mprpc.h's words
  out=$($call --raw -d '' "[::1" UserServiceRpc Login 2>&1); want '[ $? -eq 2 ] && [[ "$out" == *"ADDRESS: "* ]]'
}

# build/tls/mprpc-call (MPRPC_TLS) against the example provider built with MPRPC_TLS, mutual TLS.
tls_options_call_a_mutual_tls_provider() {
  local tcall=build/tls/mprpc-call c="$tmp/certs"
  want '[ -x $tcall ] && [ -x build/tls/provider ]' || return
  scripts/tls-certs.sh "$c" >/dev/null
  printf 'rpcserver_ip = 127.0.0.1\nrpcserver_port = 0\ntls_enable = 1\ntls_cert_file = %s\ntls_key_file = %s\ntls_ca_file = %s\n' \
    "$c/server.crt" "$c/server.key" "$c/ca.crt" > "$tmp/ptls.conf"
  build/tls/provider -i "$tmp/ptls.conf" > "$tmp/ptls.out" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do grep -q listening "$tmp/ptls.out" && break; sleep 0.05; done
  local a=$(sed -n 's/.*listening on \(127.0.0.1:[0-9]*\).*/\1/p' "$tmp/ptls.out")
  out=$($tcall --tls-ca "$c/ca.crt" --tls-cert "$c/client.crt" --tls-key "$c/client.key" \
        --proto proto/user.proto "$a" UserServiceRpc Login -d 'name: "over tls"')
  want '[ $? -eq 0 ] && [[ "$out" == *"success: true"* ]]'
  # without a client certificate the provider refuses the handshake; a wrong name fails the check
  $tcall --tls-ca "$c/ca.crt" --timeout 2000 --raw -d '' "$a" UserServiceRpc Login 2>"$tmp/err"
  want '[ $? -ne 0 ]'
  $tcall --tls-ca "$c/ca.crt" --tls-cert "$c/client.crt" --tls-key "$c/client.key" --tls-server-name nobody.example \
        --timeout 2000 --raw -d '' "$a" UserServiceRpc Login 2>"$tmp/err"
  want '[ $? -ne 0 ] && grep -q MPRPC_ERR_TLS "$tmp/err"'
}

list_shows_services_methods_and_providers_but_not_the_admin_service() {
  out=$($call --list --zookeeper "$zk" --timeout 5000)
  want '[ $? -eq 0 ]'
  want '[[ "$out" == *"UserServiceRpc"*"127.0.0.1:$zport  Login Register"* ]]'
  want '[[ "$out" == *"FriendServiceRpc"*"127.0.0.1:$zport  GetFriendLists"* ]]'
  want '[[ "$out" != *"mprpc.admin"* ]]'
  # a call through ZooKeeper discovery
  out=$($call --zookeeper "$zk" --proto proto/user.proto UserServiceRpc Login -d 'name: "li si"')
  want '[ $? -eq 0 ] && [[ "$out" == *"success: true"* ]]'
}

list_of_an_unreachable_zookeeper_times_out_with_exit_4() {
  $call --list --zookeeper 127.0.0.1:1 --timeout 500 2>"$tmp/err"; want '[ $? -eq 4 ]'
  want 'grep -q "MPRPC_ERR_TIMEOUT" "$tmp/err"'
}

provider "" main
case_ login_in_text_format_prints_the_reply_in_text_format
case_ raw_composes_with_protoc_encode_and_decode
case_ health_of_the_example_provider_is_serving
case_ a_stopped_provider_is_exit_3_for_calls_and_probes
case_ list_of_an_unreachable_zookeeper_times_out_with_exit_4
case_ calls_over_ipv6_and_a_unix_socket_reach_the_provider
case_ tls_options_call_a_mutual_tls_provider
if zk=$(tests/zk/zk.sh start "$tmp/zk" 2>"$tmp/zk.err"); then
  provider "zookeeper_hosts = $zk" zk; zport=$port
  case_ list_shows_services_methods_and_providers_but_not_the_admin_service
else
  failed=$((failed + 1)); echo "FAIL list_shows_services_methods_and_providers_but_not_the_admin_service (no ZooKeeper)"
  cat "$tmp/zk.err"
fi
echo "MPRPC-TEST-SUMMARY test_cli passed=$passed failed=$failed"
[ $failed -eq 0 ]
