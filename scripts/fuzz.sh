#!/usr/bin/env bash
# Runs each libFuzzer target for FUZZ_SECONDS with FUZZ_JOBS worker
# processes, starting from the committed seed corpus, and reports the
# executions. New inputs go to build/fuzz/work/<target> (not committed);
# a crash leaves build/fuzz/artifacts/<target>-crash-* and fails the run.
#   scripts/fuzz.sh FUZZ_BUILD_DIR TARGET...
set -u
cd "$(dirname "$0")/.."
dir=${1:?usage: scripts/fuzz.sh FUZZ_BUILD_DIR TARGET...}; shift
secs=${FUZZ_SECONDS:-180}
jobs=${FUZZ_JOBS:-2}
status=0
mkdir -p "$dir/artifacts"
for t in "$@"; do
  work="$dir/work/$t"
  mkdir -p "$work"
  log="$dir/$t.log"
  echo "fuzz $t: ${secs}s, $jobs job(s)"
  # -fork keeps going with one worker per core; -ignore_crashes=0 stops at the first finding
  "$dir/fuzz_$t" -fork="$jobs" -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$dir/artifacts/$t-" \
      "$work" "tests/fuzz/corpus/$t" >"$log" 2>&1
  rc=$?
  execs=$(grep -o 'exec/s: [0-9]*\|#[0-9]*:' "$log" | tail -n 2 | tr '\n' ' ')
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
  total=$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$last")
  if [ $rc -ne 0 ] || ls "$dir/artifacts/$t-"* >/dev/null 2>&1; then
    echo "FAIL fuzz $t (exit $rc): see $log and $dir/artifacts/"
    grep -m 5 -E 'ERROR|SUMMARY|runtime error' "$log" | sed 's/^/     /'
    status=1
  else
    echo "ok   fuzz $t: ${total:-?} executions, corpus $(ls "$work" | wc -l) inputs"
  fi
  echo "     last status: $last"
done
exit $status
