#!/usr/bin/env bash
# Manages real ZooKeeper servers (Debian package `zookeeper`) for mprpc's tests and demos.
#
#   zk.sh start DIR [TICK_MS]        standalone server on a free loopback port; prints 127.0.0.1:PORT
#   zk.sh restart DIR                stop, then start again on the same port and data dir
#   zk.sh ensemble DIR N [TICK_MS]   N-node ensemble on loopback; prints 127.0.0.1:p1,127.0.0.1:p2,...
#   zk.sh leader DIR                 prints the 1-based index of the ensemble's leader
#   zk.sh kill DIR I [SIGNAL]        kills ensemble node I (default SIGKILL) and waits until it is gone
#   zk.sh revive DIR I               starts ensemble node I again (same ports, same data)
#   zk.sh stop DIR                   stops whatever zk.sh started under DIR (TERM, then KILL), waits
#   zk.sh hosts DIR                  prints the host list again (standalone or ensemble)
#
# DIR is owned by the caller (a throw-away directory). Layout:
#   standalone: DIR/zoo.cfg DIR/data/ DIR/server.log DIR/pid DIR/port DIR/tick
#   ensemble:   DIR/n DIR/tick DIR/nodeI/{zoo.cfg,data/myid,server.log,pid,port,peer,election}
# Needs only bash, coreutils and the JVM: readiness uses ZooKeeper's 4-letter words over bash's /dev/tcp
# (no nc on a fresh Debian 12). Ports are picked at random below the kernel's ephemeral range, checked
# against /proc/net/tcp*, and a start is retried on another port when the bind fails or the port turns
# out to belong to another process (several zk.sh may start at once).
# Environment: ZK_START_TIMEOUT (s, default 30), ZK_STOP_TIMEOUT (s before SIGKILL, default 10),
#              ZK_JAVA (default java), ZK_JVM_OPTS (default "-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1"),
#              ZK_FIRST_PORT (standalone: try this port first, unchecked; only to exercise the retry path).
set -uo pipefail

ZK_CP=/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar
START_TIMEOUT=${ZK_START_TIMEOUT:-30}
STOP_TIMEOUT=${ZK_STOP_TIMEOUT:-10}
JAVA=${ZK_JAVA:-java}
JVM_OPTS=${ZK_JVM_OPTS:--Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1}
PORT_ATTEMPTS=8

die() { echo "zk.sh: $*" >&2; exit 1; }
usage() { sed -n '2,12p' "$0" >&2; exit 2; }

need_server() {
  [ -r /usr/share/java/zookeeper.jar ] || die "ZooKeeper server not installed (run scripts/deps.sh zk)"
  command -v "$JAVA" >/dev/null 2>&1 || die "no java (run scripts/deps.sh zk)"
}

now_ms() { local t; t=$(date +%s%N); echo $((t / 1000000)); }

# ---- ports ---------------------------------------------------------------------------------------
# Is anything (any state, any address) using local port $1? Reads /proc/net/tcp and tcp6.
port_in_use() {
  local hex; hex=$(printf ':%04X' "$1")
  awk -v p="$hex" 'NR > 1 { split($2, a, ":"); if (":" a[2] == p) { found = 1; exit } } END { exit !found }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# Prints a random port in [20000, lo-1] (below the ephemeral range, so outgoing connections never take it)
# that nothing uses now and that is not in the caller's exclusion list ($@).
pick_port() {
  local lo=32768 p i x ok
  [ -r /proc/sys/net/ipv4/ip_local_port_range ] && read -r lo _ </proc/sys/net/ipv4/ip_local_port_range
  [ "$lo" -gt 21000 ] || lo=60000
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % (lo - 20000)))
    ok=1
    for x in "$@"; do [ "$x" = "$p" ] && ok=0; done
    [ $ok = 1 ] && ! port_in_use "$p" && { echo "$p"; return 0; }
  done
  return 1
}

# Does process $1 own the listening socket on 127.0.0.1:$2?
port_owned_by() {
  local pid=$1 hex inode fd
  hex=$(printf '%04X' "$2")
  # 127.0.0.1 as seen by an IPv4 socket, or by a dual-stack IPv6 socket (::ffff:127.0.0.1)
  inode=$(awk -v p="$hex" '$4 == "0A" && ($2 == "0100007F:" p || $2 == "0000000000000000FFFF00000100007F:" p) {
      print $10; exit }' /proc/net/tcp /proc/net/tcp6 2>/dev/null)
  [ -n "$inode" ] || return 1
  for fd in /proc/"$pid"/fd/*; do
    [ "$(readlink "$fd" 2>/dev/null)" = "socket:[$inode]" ] && return 0
  done
  return 1
}

# ---- 4-letter words ------------------------------------------------------------------------------
# Prints the server's answer to the 4-letter word $2 on 127.0.0.1:$1 (empty on failure), bounded to 3 s.
fourlw() {
  # shellcheck disable=SC2016  # $1/$2 expand in the inner bash, on purpose
  timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1; printf %s "$2" >&3; cat <&3' _ "$1" "$2" \
    2>/dev/null
}

# ---- processes -----------------------------------------------------------------------------------
# Alive and not a zombie?
alive() {
  local st
  [ -r "/proc/$1/stat" ] || return 1
  st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
  [ -n "$st" ] && [ "$st" != Z ]
}

# Is pid $1 the ZooKeeper we started with config $2 (guards against pid reuse)?
is_our_server() {
  alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2"
}

# Starts java for config $1, logging to $2; prints the pid.
launch() {
  local cfg=$1 log=$2
  # shellcheck disable=SC2086
  nohup "$JAVA" $JVM_OPTS -Djava.net.preferIPv4Stack=true -Dzookeeper.admin.enableServer=false \
    -cp "$ZK_CP" "$3" "$cfg" >"$log" 2>&1 </dev/null &
  echo $!
}

# Stops pid file $1 of the server with config $2: TERM, then KILL after STOP_TIMEOUT; waits until gone.
stop_pidfile() {
  local pidf=$1 cfg=$2 pid i sig=${3:-TERM}
  [ -f "$pidf" ] || return 0
  pid=$(cat "$pidf" 2>/dev/null)
  if [ -n "$pid" ] && is_our_server "$pid" "$cfg"; then
    kill -s "$sig" "$pid" 2>/dev/null
    for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then
      echo "zk.sh: pid $pid did not stop after ${STOP_TIMEOUT}s of SIG$sig, sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null
      for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.1; done
      alive "$pid" && { echo "zk.sh: pid $pid survived SIGKILL" >&2; return 1; }
    fi
  fi
  rm -f "$pidf"
  return 0
}

log_tail() { echo "---- last lines of $1 ----" >&2; tail -n "${2:-25}" "$1" >&2 2>/dev/null; echo "----" >&2; }

bind_failed() { grep -qE 'Address already in use|BindException' "$1" 2>/dev/null; }

# ---- standalone ----------------------------------------------------------------------------------
write_standalone_cfg() {
  local dir=$1 port=$2 tick=$3
  cat >"$dir/zoo.cfg" <<EOF
# written by tests/zk/zk.sh
tickTime=$tick
dataDir=$dir/data
clientPort=$port
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=*
maxClientCnxns=0
preAllocSize=4096
snapshot.trust.empty=true
forceSync=no
EOF
}

# Starts the standalone server under $1 on port $2 with tick $3. Returns 0 ready, 1 failure, 3 bind failure.
start_standalone_once() {
  local dir=$1 port=$2 tick=$3 pid deadline
  write_standalone_cfg "$dir" "$port" "$tick"
  pid=$(launch "$dir/zoo.cfg" "$dir/server.log" org.apache.zookeeper.server.ZooKeeperServerMain)
  echo "$pid" >"$dir/pid"
  deadline=$(($(now_ms) + START_TIMEOUT * 1000))
  while [ "$(now_ms)" -lt "$deadline" ]; do
    if ! alive "$pid"; then
      rm -f "$dir/pid"
      bind_failed "$dir/server.log" && return 3
      return 1
    fi
    if port_owned_by "$pid" "$port" && [ "$(fourlw "$port" ruok)" = imok ]; then
      return 0
    fi
    sleep 0.1
  done
  stop_pidfile "$dir/pid" "$dir/zoo.cfg" KILL
  bind_failed "$dir/server.log" && return 3
  echo "zk.sh: server under $dir not ready within ${START_TIMEOUT}s" >&2
  return 1
}

cmd_start() {
  local dir=$1 tick=${2:-2000} fixed_port=${3:-} port rc attempt t0
  need_server
  mkdir -p "$dir" || die "cannot create $dir"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/pid" ] && is_our_server "$(cat "$dir/pid")" "$dir/zoo.cfg"; then
    die "a server is already running under $dir (pid $(cat "$dir/pid")); stop it first"
  fi
  mkdir -p "$dir/data"
  t0=$(now_ms)
  for ((attempt = 1; attempt <= PORT_ATTEMPTS; attempt++)); do
    if [ -n "$fixed_port" ]; then port=$fixed_port
    elif [ $attempt = 1 ] && [ -n "${ZK_FIRST_PORT:-}" ]; then port=$ZK_FIRST_PORT   # to test the retry
    else port=$(pick_port) || die "no free port found"; fi
    start_standalone_once "$dir" "$port" "$tick"
    rc=$?
    if [ $rc = 0 ]; then
      echo "$port" >"$dir/port"
      echo "$tick" >"$dir/tick"
      echo "zk.sh: standalone server pid $(cat "$dir/pid") ready on 127.0.0.1:$port in $(($(now_ms) - t0)) ms" >&2
      echo "127.0.0.1:$port"
      return 0
    fi
    if [ $rc = 3 ]; then
      echo "zk.sh: port $port taken (attempt $attempt), retrying" >&2
      [ -n "$fixed_port" ] && sleep 0.5   # restart: the port is ours, wait for it to be released
      continue
    fi
    break
  done
  echo "zk.sh: failed to start ZooKeeper under $dir" >&2
  log_tail "$dir/server.log"
  exit 1
}

cmd_restart() {
  local dir=$1 port tick
  [ -f "$dir/port" ] || die "no standalone server was started under $dir"
  dir=$(cd "$dir" && pwd)
  port=$(cat "$dir/port"); tick=$(cat "$dir/tick" 2>/dev/null || echo 2000)
  stop_pidfile "$dir/pid" "$dir/zoo.cfg" || die "could not stop the server under $dir"
  cmd_start "$dir" "$tick" "$port"
}

# ---- ensemble ------------------------------------------------------------------------------------
write_node_cfg() {
  local dir=$1 i=$2 n=$3 tick=$4 j nd
  nd=$dir/node$i
  {
    echo "# written by tests/zk/zk.sh (ensemble node $i of $n)"
    echo "tickTime=$tick"
    echo "initLimit=10"
    echo "syncLimit=5"
    echo "dataDir=$nd/data"
    echo "clientPort=$(cat "$nd/port")"
    echo "clientPortAddress=127.0.0.1"
    echo "admin.enableServer=false"
    echo "4lw.commands.whitelist=*"
    echo "maxClientCnxns=0"
    echo "preAllocSize=4096"
    echo "snapshot.trust.empty=true"
    echo "forceSync=no"
    echo "cnxTimeout=2000"
    for ((j = 1; j <= n; j++)); do
      echo "server.$j=127.0.0.1:$(cat "$dir/node$j/peer"):$(cat "$dir/node$j/election")"
    done
  } >"$nd/zoo.cfg"
}

launch_node() {
  local dir=$1 i=$2 nd=$1/node$2
  launch "$nd/zoo.cfg" "$nd/server.log" org.apache.zookeeper.server.quorum.QuorumPeerMain >"$nd/pid"
}

# srvr mode of node $2 ("leader", "follower", "standalone" or empty).
node_mode() {
  fourlw "$(cat "$1/node$2/port")" srvr | sed -n 's/^Mode: //p'
}

# Waits until every live node (or those listed) serves and exactly one is leader. 0 ok, 1 fail, 3 bind.
wait_ensemble() {
  local dir=$1 n i m leaders ok deadline pid
  n=$(cat "$dir/n")
  deadline=$(($(now_ms) + START_TIMEOUT * 1000))
  while [ "$(now_ms)" -lt "$deadline" ]; do
    ok=1 leaders=0
    for ((i = 1; i <= n; i++)); do
      [ -f "$dir/node$i/pid" ] || continue   # killed on purpose
      pid=$(cat "$dir/node$i/pid")
      if ! alive "$pid"; then
        bind_failed "$dir/node$i/server.log" && return 3
        echo "zk.sh: ensemble node $i (pid $pid) died" >&2
        return 1
      fi
      port_owned_by "$pid" "$(cat "$dir/node$i/port")" || { ok=0; continue; }
      m=$(node_mode "$dir" "$i")
      case $m in leader) leaders=$((leaders + 1)) ;; follower) ;; *) ok=0 ;; esac
    done
    [ $ok = 1 ] && [ $leaders = 1 ] && return 0
    sleep 0.1
  done
  echo "zk.sh: ensemble under $dir not serving with one leader within ${START_TIMEOUT}s" >&2
  return 1
}

print_hosts() {
  local dir=$1 n i out=""
  if [ -f "$dir/n" ]; then
    n=$(cat "$dir/n")
    for ((i = 1; i <= n; i++)); do out+="${out:+,}127.0.0.1:$(cat "$dir/node$i/port")"; done
    echo "$out"
  elif [ -f "$dir/port" ]; then
    echo "127.0.0.1:$(cat "$dir/port")"
  else
    die "nothing was started under $dir"
  fi
}

stop_all() {
  local dir=$1 i n rc=0
  if [ -f "$dir/n" ]; then
    n=$(cat "$dir/n")
    for ((i = 1; i <= n; i++)); do
      stop_pidfile "$dir/node$i/pid" "$dir/node$i/zoo.cfg" || rc=1
    done
  fi
  if [ -f "$dir/pid" ]; then stop_pidfile "$dir/pid" "$dir/zoo.cfg" || rc=1; fi
  return $rc
}

cmd_ensemble() {
  local dir=$1 n=$2 tick=${3:-2000} i attempt used t0 rc p
  need_server
  if ! [[ "$n" =~ ^[1-9]$ ]]; then die "ensemble size must be 1..9"; fi
  mkdir -p "$dir" || die "cannot create $dir"
  dir=$(cd "$dir" && pwd)
  t0=$(now_ms)
  for ((attempt = 1; attempt <= 4; attempt++)); do
    stop_all "$dir"
    echo "$n" >"$dir/n"; echo "$tick" >"$dir/tick"
    used=()
    for ((i = 1; i <= n; i++)); do
      mkdir -p "$dir/node$i/data"
      echo "$i" >"$dir/node$i/data/myid"
      for f in port peer election; do
        p=$(pick_port "${used[@]}") || die "no free port found"
        used+=("$p"); echo "$p" >"$dir/node$i/$f"
      done
    done
    for ((i = 1; i <= n; i++)); do write_node_cfg "$dir" "$i" "$n" "$tick"; done
    for ((i = 1; i <= n; i++)); do launch_node "$dir" "$i"; done
    wait_ensemble "$dir"
    rc=$?
    if [ $rc = 0 ]; then
      echo "zk.sh: $n-node ensemble ready in $(($(now_ms) - t0)) ms, leader node $(cmd_leader "$dir")" >&2
      print_hosts "$dir"
      return 0
    fi
    [ $rc = 3 ] && { echo "zk.sh: a port was taken (attempt $attempt), retrying" >&2; continue; }
    break
  done
  for ((i = 1; i <= n; i++)); do log_tail "$dir/node$i/server.log" 10; done
  stop_all "$dir"
  die "failed to start the ensemble under $dir"
}

cmd_leader() {
  local dir=$1 n i
  [ -f "$dir/n" ] || die "no ensemble under $dir"
  n=$(cat "$dir/n")
  for ((i = 1; i <= n; i++)); do
    [ -f "$dir/node$i/pid" ] || continue
    [ "$(node_mode "$dir" "$i")" = leader ] && { echo "$i"; return 0; }
  done
  echo "zk.sh: no leader under $dir right now" >&2
  return 1
}

cmd_kill() {
  local dir=$1 i=$2 sig=${3:-KILL}
  [ -f "$dir/n" ] || die "no ensemble under $dir"
  [ -f "$dir/node$i/pid" ] || die "node $i under $dir is not running"
  stop_pidfile "$dir/node$i/pid" "$dir/node$i/zoo.cfg" "$sig"
}

cmd_revive() {
  local dir=$1 i=$2 pid deadline
  [ -f "$dir/n" ] || die "no ensemble under $dir"
  dir=$(cd "$dir" && pwd)
  [ -f "$dir/node$i/pid" ] && is_our_server "$(cat "$dir/node$i/pid")" "$dir/node$i/zoo.cfg" &&
    die "node $i is running"
  launch_node "$dir" "$i"
  pid=$(cat "$dir/node$i/pid")
  deadline=$(($(now_ms) + START_TIMEOUT * 1000))
  while [ "$(now_ms)" -lt "$deadline" ]; do
    alive "$pid" || { log_tail "$dir/node$i/server.log"; die "node $i died"; }
    case $(node_mode "$dir" "$i") in leader | follower) return 0 ;; esac
    sleep 0.1
  done
  die "node $i did not join within ${START_TIMEOUT}s"
}

# ---- main ----------------------------------------------------------------------------------------
[ $# -ge 2 ] || usage
cmd=$1; shift
case $cmd in
  start) [ $# -le 2 ] || usage; cmd_start "$@" ;;
  restart) [ $# = 1 ] || usage; cmd_restart "$1" ;;
  ensemble) if [ $# -lt 2 ] || [ $# -gt 3 ]; then usage; fi; cmd_ensemble "$@" ;;
  leader) cmd_leader "$1" ;;
  kill) [ $# -ge 2 ] || usage; cmd_kill "$@" ;;
  revive) [ $# = 2 ] || usage; cmd_revive "$@" ;;
  stop) [ -d "$1" ] || exit 0; stop_all "$1" ;;
  hosts) print_hosts "$1" ;;
  *) usage ;;
esac
