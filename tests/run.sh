#!/usr/bin/env bash
# Runs the test binaries in BUILD_DIR plus the checks that are not C test
# binaries (compile matrix, protobuf cross-check, embedded code, demo), and
# ends with one line "N passed, N failed". Exit status 1 on any failure.
#   tests/run.sh BUILD_DIR [--no-compile-checks]
# MPRPC_TEST_WRAP, if set, prefixes every test binary (e.g. valgrind).
# MPRPC_TEST_TIMEOUT: each test binary's time limit in seconds (default 600 times MPRPC_TEST_SLOW); one
# still running then is killed with its children and counted as a failure, so a hang never stalls the run.
set -u
cd "$(dirname "$0")/.."
dir=${1:?usage: tests/run.sh BUILD_DIR [--no-compile-checks]}
extra=1
[ "${2:-}" = "--no-compile-checks" ] && extra=0
passed=0
failed=0
log=$(mktemp -d /tmp/mprpc-tests.XXXXXX)

# A named check: passes when the command exits 0.
check() {
  local name=$1; shift
  if "$@" >"$log/$name.out" 2>&1; then
    passed=$((passed + 1)); echo "ok   $name"
  else
    failed=$((failed + 1)); echo "FAIL $name"; tail -n 20 "$log/$name.out" | sed 's/^/     /'
  fi
}

# A named check that passes only when the command fails with output matching a
# pattern: a compile error for the reason the test expects, not any error.
compile_fails() {
  local name=$1 pattern=$2; shift 2
  if "$@" >"$log/$name.out" 2>&1; then
    failed=$((failed + 1)); echo "FAIL $name (it compiled, but it must not)"
  elif grep -E -q "$pattern" "$log/$name.out"; then
    passed=$((passed + 1)); echo "ok   $name"
  else
    failed=$((failed + 1)); echo "FAIL $name (failed for another reason than /$pattern/)"
    tail -n 20 "$log/$name.out" | sed 's/^/     /'
  fi
}

limit=${MPRPC_TEST_TIMEOUT:-$((600 * ${MPRPC_TEST_SLOW:-1}))}

# Each C test binary (and tests/test_cli.sh) reports its cases; a crash without a summary is one failure.
tally() {
  local name=$1 rc=$2 summary p f
  sed 's/^/  /' "$log/$name.out" | grep -v '^  MPRPC-TEST-SUMMARY' || true
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then  # timeout's TERM, or its KILL 10 s later (or the OOM killer)
    failed=$((failed + 1)); echo "FAIL $name killed (exit $rc): still running after MPRPC_TEST_TIMEOUT=$limit s"
    return
  fi
  summary=$(grep '^MPRPC-TEST-SUMMARY' "$log/$name.out" | tail -n 1)
  if [ -n "$summary" ]; then
    p=$(sed -n 's/.*passed=\([0-9]*\).*/\1/p' <<<"$summary")
    f=$(sed -n 's/.*failed=\([0-9]*\).*/\1/p' <<<"$summary")
    passed=$((passed + p)); failed=$((failed + f))
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
      failed=$((failed + 1)); echo "FAIL $name exited $rc (sanitizer or valgrind report above)"
    fi
  else
    failed=$((failed + 1)); echo "FAIL $name crashed (exit $rc)"
  fi
}
for bin in "$dir"/test_*; do
  [ -x "$bin" ] || continue
  name=$(basename "$bin")
  timeout -k 10 "$limit" ${MPRPC_TEST_WRAP:-} "$bin" >"$log/$name.out" 2>&1
  tally "$name" $?
done
# mprpc-call against the example provider and ZooKeeper, as processes (build/provider, build/mprpc-call)
if [ $extra -eq 1 ]; then
  timeout -k 10 "$limit" tests/test_cli.sh >"$log/test_cli.out" 2>&1
  tally test_cli $?
fi

# The warning flags and the nanopb generator are the Makefile's (exported by
# make; asked of make when this script is run by hand).
warn_flags=${MPRPC_WARN_FLAGS:-$(make -s --no-print-directory print-WARN_FLAGS)}
nanopb=${MPRPC_NANOPB:-$(make -s --no-print-directory print-NANOPB)}
mprpcgen=${MPRPC_MPRPCGEN:-$(make -s --no-print-directory print-MPRPCGEN)}

if [ $extra -eq 1 ]; then
  W="$warn_flags -I. -Ibuild/gen"
  impl=tests/compile_impl.c
  check compile-gcc-c11        gcc   -std=c11 $W -c $impl -o "$log/a.o"
  check compile-gcc-c99        gcc   -std=c99 $W -c $impl -o "$log/a.o"
  check compile-clang-c11      clang -std=c11 $W -c $impl -o "$log/a.o"
  check compile-gxx-cpp        g++   -x c++ -std=c++11 $W -c $impl -o "$log/a.o"
  check compile-clangxx-cpp    clang++ -x c++ -std=c++17 $W -c $impl -o "$log/a.o"
  check compile-static         gcc   -std=c11 $W -DMPRPC_STATIC -c $impl -o "$log/a.o"
  check compile-header-only    gcc   -std=c11 $W -x c -c mprpc.h -o "$log/h.o"
  # TLS (OpenSSL 3): C and C++, and the example provider linked with libssl
  check compile-tls-gcc-c11    gcc   -std=c11 $W -DMPRPC_TLS -c $impl -o "$log/a.o"
  check compile-tls-clang-c11  clang -std=c11 $W -DMPRPC_TLS -c $impl -o "$log/a.o"
  check compile-tls-gxx-cpp    g++   -x c++ -std=c++11 $W -DMPRPC_TLS -c $impl -o "$log/a.o"
  check compile-tls-static-nozk gcc  -std=c11 $W -DMPRPC_TLS -DMPRPC_STATIC -DMPRPC_NO_ZOOKEEPER -c $impl -o "$log/a.o"
  check build-tls-provider     gcc   -std=c11 $W -DMPRPC_TLS examples/provider.c build/gen/user.pb.c \
                                     -lprotobuf-nanopb -lzookeeper_mt -lssl -lcrypto -lpthread -o "$log/provider-tls"
  # without ZooKeeper: builds and links with no zookeeper headers or library
  check build-no-zookeeper     gcc   -std=c11 $W -DMPRPC_NO_ZOOKEEPER examples/provider.c build/gen/user.pb.c \
                                     -lprotobuf-nanopb -lpthread -o "$log/provider-nozk"
  # the stub generator: its output compiles as C11 and C++ with -Werror; a wrong
  # message type in a stub call or a handler table does not (tests/compile_stubs.c)
  S="$W -I$log/stubs"
  stubs=tests/compile_stubs.c
  check stub-generator-writes-headers  $mprpcgen -q -I proto -D "$log/stubs" proto/user.proto proto/testsvc.proto
  check stubs-compile-gcc-c11          gcc     -std=c11 $S -c $stubs -o "$log/s.o"
  check stubs-compile-clang-c11        clang   -std=c11 $S -c $stubs -o "$log/s.o"
  check stubs-compile-gxx-cpp          g++     -x c++ -std=c++11 $S -c $stubs -o "$log/s.o"
  check stubs-compile-clangxx-cpp      clang++ -x c++ -std=c++17 $S -c $stubs -o "$log/s.o"
  incompatible='incompatible pointer type|incompatible function pointer|incompatible type|cannot convert|invalid conversion|cannot initialize'
  compile_fails stub-call-with-wrong-request-type-fails-c      "$incompatible" gcc -std=c11 $S -DWRONG_CALL -c $stubs -o "$log/s.o"
  compile_fails stub-call-with-wrong-request-type-fails-cpp    "$incompatible" g++ -x c++ -std=c++11 $S -DWRONG_CALL -c $stubs -o "$log/s.o"
  compile_fails handler-table-with-wrong-handler-type-fails-c  "$incompatible" clang -std=c11 $S -DWRONG_HANDLER -c $stubs -o "$log/s.o"
  compile_fails handler-table-with-wrong-handler-type-fails-cpp "$incompatible" clang++ -x c++ -std=c++17 $S -DWRONG_HANDLER -c $stubs -o "$log/s.o"
  check build-mprpc-call-no-zookeeper gcc -std=c11 $W -DMPRPC_NO_ZOOKEEPER tools/mprpc-call.c -lprotobuf-nanopb \
                                     -lpthread -o "$log/mprpc-call-nozk"
  check embedded-nanopb-code   sh -c "$nanopb -q -I proto -D '$log' proto/mprpc.proto && /usr/bin/python3 tests/check_embedded.py '$log/mprpc.pb.h'"
  check embedded-admin-code    sh -c "$nanopb -q -I proto -D '$log' proto/admin.proto && /usr/bin/python3 tests/check_embedded.py '$log/admin.pb.h' admin"
  check api-doc-covers-every-public-function-and-macro /usr/bin/python3 tests/check_api_doc.py mprpc.h docs/API.md
  check protobuf-crosscheck    sh -c "gcc -std=c11 $W tests/wire_tool.c build/gen/testsvc.pb.c -lprotobuf-nanopb -lzookeeper_mt -lpthread -o '$log/wire_tool' && /usr/bin/python3 tests/crosscheck.py '$log/wire_tool'"
  check demo-provider-caller   scripts/demo.sh
  check bigfile-example-300000-bytes-and-chunks-both-ways  scripts/demo.sh bigfile
  # every .PHONY target has its line in `make help`
  check make-help-lists-every-target make -s --no-print-directory help
fi

rm -rf "$log"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
