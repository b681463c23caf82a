#!/usr/bin/env bash
# `make scale`: a 3-node ZooKeeper ensemble on loopback (tests/zk/zk.sh), then build/scale drives mprpc.h's
# registry with SCALE_REGS registrations over SCALE_SERVICES services (in SCALE_PROCS processes) and
# SCALE_CALLERS caller sessions; the results go to OUTDIR (default build/scale-out), the plot to
# docs/scale.png, and the run ends with one TARGET line per target (met / missed with the figure).
# Usage: scale/scale.sh BUILD_DIR     Environment: SCALE_REGS (1000), SCALE_SERVICES (100),
#        SCALE_CALLERS (1000), SCALE_PROCS (10), SCALE_OUT (BUILD_DIR/scale-out), SCALE_PLOT (docs/scale.png),
#        SCALE_DOC (docs/SCALE.md; empty: leave it alone)
set -uo pipefail
build=${1:-build}
regs=${SCALE_REGS:-1000}
services=${SCALE_SERVICES:-100}
callers=${SCALE_CALLERS:-1000}
procs=${SCALE_PROCS:-10}
out=${SCALE_OUT:-$build/scale-out}
plot=${SCALE_PLOT:-docs/scale.png}
mkdir -p "$out"
out=$(cd "$out" && pwd)
ens=$(mktemp -d /tmp/mprpc-scale-zk.XXXXXX)
cleanup() { tests/zk/zk.sh stop "$ens" >/dev/null 2>&1; rm -rf "$ens"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# Each caller session and registration is a ZooKeeper client handle with two threads of its own, whose
# stacks follow RLIMIT_STACK: 256 KiB of address space each instead of 8 MiB (they touch a few KiB).
ulimit -s 256
ulimit -n "$(ulimit -Hn)" 2>/dev/null
echo "scale: limits: $(ulimit -n) fds, $(ulimit -u) processes/threads, threads-max $(cat /proc/sys/kernel/threads-max)," \
     "stack $(ulimit -s) KiB per ZooKeeper client thread"

# A bigger heap than the tests' ensemble: thousands of sessions and watches.
export ZK_JVM_OPTS=${ZK_JVM_OPTS:--Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1}
hosts=$(tests/zk/zk.sh ensemble "$ens" 3 1000) || { echo "scale: cannot start the ensemble" >&2; exit 1; }
echo "scale: ensemble $hosts (tickTime 1000 ms)"
t0=$(date +%s)
"$build/scale" "$hosts" "$ens" "$out" "$regs" "$services" "$callers" "$procs" | tee "$out/run.log"
rc=${PIPESTATUS[0]}
for i in 1 2 3; do
  echo "node$i: $(ps -o rss= -p "$(cat "$ens/node$i/pid" 2>/dev/null)" 2>/dev/null | tr -d ' ') KiB RSS"
done >"$out/ensemble_rss.txt"
[ $rc = 0 ] || { echo "scale: the driver failed (exit $rc)" >&2; exit $rc; }

if command -v gnuplot >/dev/null; then
  gnuplot <<GP || echo "scale: gnuplot failed" >&2
set terminal pngcairo size 1200,480 font ",10" noenhanced
set output "$plot"
set multiplot layout 1,2 title "mprpc.h registry at scale: $regs registrations, $callers callers, 3-node ZooKeeper on one 2-core machine"
set title "caller caches dropping a provider (CDF over callers)"
set xlabel "ms after the stop"
set ylabel "fraction of callers"
set key bottom right
set grid
plot "$out/drop_clean.txt" using 1:2 with lines lw 2 title "clean stop", \
     "$out/drop_kill.txt" using 1:2 with lines lw 2 title "SIGKILL (session timeout 4000 ms)", \
     "$out/reg_latency.txt" using 1:2 with lines lw 2 title "registration latency (open + publish)"
set title "requests received by the ensemble (mntr zk_packets_received, per second)"
set xlabel "s since the run started"
set ylabel "packets / s"
set key top left
plot "$out/rate.txt" using 1:2 with lines lw 1 title "all phases", \
     "< grep -E ' (leader)\$' $out/rate.txt" using 1:2 with points pt 7 ps 0.6 title "after the leader loss", \
     "< grep -E ' (expiry)\$' $out/rate.txt" using 1:2 with points pt 7 ps 0.6 title "after every caller's session expired"
unset multiplot
GP
  echo "scale: plot written to $plot"
fi
doc=${SCALE_DOC-docs/SCALE.md}
if [ -n "$doc" ] && [ -f "$doc" ]; then   # the latest run's figures, between the markers
  /usr/bin/python3 - "$doc" "$out/results.txt" "$(date -u +%Y-%m-%d)" <<'PY'
import sys
doc, res, day = sys.argv[1:4]
text = open(doc).read()
a, b = text.index("<!-- scale:begin -->"), text.index("<!-- scale:end -->")
block = "<!-- scale:begin -->\nLatest `make scale` (%s):\n\n```\n%s```\n" % (day, open(res).read())
open(doc, "w").write(text[:a] + block + text[b:])
PY
  echo "scale: $doc updated"
fi
echo "scale: results in $out/results.txt; $(($(date +%s) - t0)) s"
cat "$out/targets.txt"
