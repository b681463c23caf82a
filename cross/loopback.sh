#!/usr/bin/env bash
# shellcheck disable=SC2086  # run prefixes ("qemu-arm -L /usr/...") are split on purpose
# cross/loopback.sh TARGET...: runs build/cross/<T>/loopback_check (see loopback_check.c) for the targets
# given: `local` checks on each target, then every server/client pair over 127.0.0.1 (two processes, each under
# its own qemu-user when needed). The run prefix of target T comes from the environment variable run_T (set by
# cross/cross.mk from CROSS_RUN_T). qemu runs with QEMU_LOG=unimp, so a syscall qemu-user does not implement is
# reported ("Unsupported syscall"), even where the program copes with the failure.
# Ends with one line per target: `T: N passed, N failed` (a pair counts on both its targets' lines).
set -u
build=${CROSS_BUILD:-build/cross}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
declare -A pass fail
for t in "$@"; do pass[$t]=0; fail[$t]=0; done
unimp=""
export QEMU_LOG=unimp

# rseq (aarch64 293, arm 398, s390x 383): glibc >= 2.35 tries to register it at every program start; qemu-user 7.2
# answers ENOSYS and glibc goes on without it. Known and harmless, so it is labelled, not hidden.
declare -A rseq_nr=([aarch64]=293 [armhf]=398 [s390x]=383)
note_unimp() {  # note_unimp TARGET LOGFILE
  local l n
  while IFS= read -r l; do
    n=${l##* }
    if [ "${rseq_nr[$1]-}" = "$n" ]; then l+=" (rseq, probed by glibc at start-up; harmless)"; fi
    unimp+="$1: $l"$'\n'
  done < <(grep -iE 'unsupported|unimplemented' "$2" | sort -u)
}

for t in "$@"; do
  run_var="run_$t"; run=${!run_var-}
  if timeout 60 $run "$build/$t/loopback_check" local >"$tmp/local.out" 2>"$tmp/local.err"; then
    pass[$t]=$((pass[$t] + 1))
  else
    fail[$t]=$((fail[$t] + 1)); echo "loopback $t local: FAILED"; cat "$tmp/local.err"
  fi
  note_unimp "$t" "$tmp/local.err"
done

for s in "$@"; do
  for c in "$@"; do
    rs_var="run_$s"; rs=${!rs_var-}; rc_var="run_$c"; rcl=${!rc_var-}
    pf="$tmp/port.$s.$c"
    timeout 60 $rs "$build/$s/loopback_check" server "$pf" >"$tmp/s.out" 2>"$tmp/s.err" &
    spid=$!
    timeout 60 $rcl "$build/$c/loopback_check" client "$pf" >"$tmp/c.out" 2>"$tmp/c.err"
    crc=$?
    wait "$spid"; src=$?
    note_unimp "$s" "$tmp/s.err"; note_unimp "$c" "$tmp/c.err"
    if [ $src -eq 0 ] && [ $crc -eq 0 ]; then
      pass[$s]=$((pass[$s] + 1)); [ "$s" = "$c" ] || pass[$c]=$((pass[$c] + 1))
    else
      fail[$s]=$((fail[$s] + 1)); [ "$s" = "$c" ] || fail[$c]=$((fail[$c] + 1))
      echo "loopback server $s / client $c: FAILED (server exit $src, client exit $crc)"
      cat "$tmp/s.err" "$tmp/c.err"
    fi
  done
done

if [ -n "$unimp" ]; then
  echo "qemu-user reported unsupported syscalls:"; printf '%s' "$unimp" | sort -u | sed 's/^/  /'
else
  echo "qemu-user reported no unsupported syscall"
fi
rc=0
for t in "$@"; do
  echo "$t: ${pass[$t]} passed, ${fail[$t]} failed"
  [ "${fail[$t]}" -eq 0 ] || rc=1
done
exit $rc
