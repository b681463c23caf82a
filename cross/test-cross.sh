#!/usr/bin/env bash
# shellcheck disable=SC2086  # run prefixes ("qemu-arm -L /usr/...") are split on purpose
# cross/test-cross.sh TARGET...: the cross suite behind `make test-cross` (cross/cross.mk builds first).
# For each target T (binaries in build/cross/T/, run prefix from the environment variable run_T):
#   1. the C test binaries build/cross/T/tests/test_* through tests/run.sh (MPRPC_TEST_WRAP = the qemu-user
#      prefix, --no-compile-checks): each binary's MPRPC-TEST-SUMMARY cases are added up, a crash is a failure;
#      a test named in $CROSS_TESTS whose binary is missing (did not build) is a failure too; each binary has
#      MPRPC_TEST_TIMEOUT seconds (default 180: the slowest takes ~12 s under qemu), so a hang is a failure;
#   2. wire vector: build/cross/T/wire_vector prints the encoded frames; they must equal
#      cross/wire_vector.hex byte for byte (same bytes on little/big-endian, 32/64-bit CPUs);
#   3. interop over 127.0.0.1: T's example provider answers the x86-64 example caller, and T's example caller
#      gets its answers from the x86-64 provider (for x86_64 itself: provider and caller both x86-64).
# Ends with one line per target: `T: N passed, N failed`; exit 1 if anything failed.
#   4. compile checks: armhf builds the implementation with -D_TIME_BITS=64 (counted); every target reports its
#      -Wconversion -Wsign-conversion warnings (information only, not counted).
# Env: CROSS_BUILD (default build/cross), CROSS_TESTS (test names expected per target), cc_T and CROSS_CFLAGS
#      (compiler and flags of target T, for the compile checks),
#      CROSS_JOBS (targets run at once, default 1; 2 cores run 2 targets in about half the time),
#      MPRPC_TEST_TIMEOUT (seconds per test binary, default 180).
set -u
cd "$(dirname "$0")/.."
build=${CROSS_BUILD:-build/cross}
ref=x86_64
tmp=$(mktemp -d /tmp/mprpc-test-cross.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# Starts T's provider on a free port (rpcserver_port = 0; the provider prints the port) and runs C's caller
# against it. Passes when the caller exits 0 with the three calls answered and the provider stops cleanly.
interop() {  # interop PROVIDER_TARGET CALLER_TARGET OUTDIR
  local pt=$1 ct=$2 d=$3 prun crun ppid port i ok=1
  local pv="run_$pt" cv="run_$ct"; prun=${!pv-}; crun=${!cv-}
  mkdir -p "$d"
  printf 'rpcserver_ip = 127.0.0.1\nrpcserver_port = 0\nio_threads = 2\nlog_level = warn\nlog_stderr = 1\n' \
    >"$d/provider.conf"
  timeout 120 $prun "$build/$pt/provider" -i "$d/provider.conf" >"$d/provider.out" 2>"$d/provider.err" &
  ppid=$!
  port=
  for i in $(seq 1 300); do  # up to 30 s for qemu to start the provider
    port=$(sed -n 's/^provider listening on [0-9.]*:\([0-9]*\)$/\1/p' "$d/provider.out")
    [ -n "$port" ] && break
    kill -0 "$ppid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$port" ]; then
    echo "interop provider $pt / caller $ct: provider did not start"; cat "$d/provider.err"
    kill "$ppid" 2>/dev/null; wait "$ppid" 2>/dev/null
    return 1
  fi
  printf 'rpcserver_ip = 127.0.0.1\nrpcserver_port = %s\nrpc_timeout_ms = 20000\nconnect_timeout_ms = 10000\n' \
    "$port" >"$d/caller.conf"
  if ! timeout 60 $crun "$build/$ct/caller" -i "$d/caller.conf" >"$d/caller.out" 2>&1; then ok=0; fi
  grep -q '^GetFriendLists: 3 friends: \[gao yang\] \[liu hong\] \[wang shuo\]$' "$d/caller.out" || ok=0
  grep -q '^Login (empty name): errcode=1 errmsg=name must not be empty success=false$' "$d/caller.out" || ok=0
  kill -TERM "$ppid" 2>/dev/null
  wait "$ppid" || ok=0
  grep -q '^provider stopped$' "$d/provider.out" || ok=0
  if [ $ok -eq 0 ]; then
    echo "interop provider $pt / caller $ct: FAILED"; sed 's/^/  caller: /' "$d/caller.out"
    sed 's/^/  provider: /' "$d/provider.out" "$d/provider.err"
    return 1
  fi
  echo "ok   interop provider $pt / caller $ct"
}

one_target() {  # one_target T: prints its report, last line "T: N passed, N failed"
  local t=$1 runv="run_$1" ccv="cc_$1" run cc p=0 f=0 n line d="$tmp/$1"
  run=${!runv-}; cc=${!ccv-}
  mkdir -p "$d"
  echo "== $t${run:+ ($run)}"
  for n in ${CROSS_TESTS:-}; do
    [ -x "$build/$t/tests/$n" ] || { f=$((f + 1)); echo "FAIL $n: $build/$t/tests/$n was not built"; }
  done
  if [ -d "$build/$t/tests" ]; then
    MPRPC_TEST_WRAP="$run" MPRPC_TEST_TIMEOUT=${MPRPC_TEST_TIMEOUT:-180} \
      tests/run.sh "$build/$t/tests" --no-compile-checks >"$d/run.out" 2>&1
    cat "$d/run.out"
    line=$(tail -n 1 "$d/run.out")
    if [[ $line =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
      p=$((p + BASH_REMATCH[1])); f=$((f + BASH_REMATCH[2]))
    else
      f=$((f + 1)); echo "FAIL tests/run.sh gave no summary"
    fi
  fi
  if [ -x "$build/$t/wire_vector" ] && timeout 60 $run "$build/$t/wire_vector" >"$d/wire.out" 2>"$d/wire.err" &&
     cmp -s "$d/wire.out" cross/wire_vector.hex; then
    p=$((p + 1)); echo "ok   wire-vector (same bytes as cross/wire_vector.hex)"
  else
    f=$((f + 1)); echo "FAIL wire-vector"; cat "$d/wire.err" 2>/dev/null
    diff "$d/wire.out" cross/wire_vector.hex 2>/dev/null | sed 's/^/  /'
  fi
  # 32-bit: the implementation also builds warning-free with a 64-bit time_t and off_t (glibc >= 2.34
  # -D_TIME_BITS=64, the Y2038-safe ABI); -Wconversion -Wsign-conversion findings are listed, not counted.
  if [ "$t" = armhf ]; then
    if $cc $CROSS_CFLAGS -D_TIME_BITS=64 -D_FILE_OFFSET_BITS=64 -I. -c tests/compile_impl.c -o "$d/t64.o" \
         2>"$d/t64.err"; then
      p=$((p + 1)); echo "ok   compile-time64 (-D_TIME_BITS=64 -D_FILE_OFFSET_BITS=64)"
    else
      f=$((f + 1)); echo "FAIL compile-time64"; cat "$d/t64.err"
    fi
  fi
  if [ -n "$cc" ]; then
    $cc ${CROSS_CFLAGS/-Werror/} -Wconversion -Wsign-conversion -I. -c tests/compile_impl.c -o "$d/conv.o" \
      2>"$d/conv.err"
    echo "info -Wconversion -Wsign-conversion: $(grep -c 'warning:' "$d/conv.err") warnings in mprpc.h's implementation"
    grep 'warning:' "$d/conv.err" | sed 's/^/     /'
  fi
  if interop "$t" "$ref" "$d/i1"; then p=$((p + 1)); else f=$((f + 1)); fi
  if [ "$t" != "$ref" ]; then
    if interop "$ref" "$t" "$d/i2"; then p=$((p + 1)); else f=$((f + 1)); fi
  fi
  echo "$t: $p passed, $f failed"
}

jobs=${CROSS_JOBS:-1}
start=$(date +%s)
running=0
for t in "$@"; do
  one_target "$t" >"$tmp/$t.report" 2>&1 &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
done
wait
rc=0
for t in "$@"; do cat "$tmp/$t.report"; done
echo "== test-cross: $(( $(date +%s) - start )) s (CROSS_JOBS=$jobs)"
for t in "$@"; do
  last=$(tail -n 1 "$tmp/$t.report")
  [[ $last == "$t: "*" passed, "*" failed" ]] || last="$t: 0 passed, 1 failed"
  echo "$last"
  [[ $last == *", 0 failed" ]] || rc=1
done
exit $rc
