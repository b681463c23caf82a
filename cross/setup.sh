#!/usr/bin/env bash
# shellcheck disable=SC1091
# cross/setup.sh: sets up the cross-build and qemu-user toolchain for `make cross` / `make test-cross`
# (issue 7). Idempotent: it installs only what is missing; a second run changes nothing and says so.
#
# What it does, in order (all from Debian's own archive, nothing else):
#   1. Host packages (apt-get install --no-install-recommends, only the missing ones):
#        gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf gcc-s390x-linux-gnu   cross compilers
#        libc6-dev-arm64-cross libc6-dev-armhf-cross libc6-dev-s390x-cross   their glibc (only *recommended* by
#                                                                            the gcc packages, so named here)
#        qemu-user        user-mode emulators, run explicitly as `qemu-aarch64 -L /usr/aarch64-linux-gnu ./bin`:
#                         no binfmt registration, so neither qemu-user-static nor binfmt-support is needed
#        musl-tools       musl-gcc (static musl builds on x86-64)
#        nanopb libnanopb-dev   host generator + host runtime (same as scripts/deps.sh core)
#        dpkg-dev         dpkg-source, needed by `apt-get source`
#   2. Foreign dpkg architectures arm64, armhf, s390x (dpkg --add-architecture; apt-get update), then
#      libnanopb-dev:arm64 libnanopb-dev:armhf libnanopb-dev:s390x (Multi-Arch: same, no dependencies, so they
#      co-install with libnanopb-dev:amd64; their libprotobuf-nanopb.a lands in /usr/lib/<triplet>/).
#   3. A deb-src entry for the running Debian suite on the mirror the machine already uses
#      (/etc/apt/sources.list.d/mprpc-deb-src.sources, or .list for one-line-style machines), apt-get update.
#   4. Without root: `apt-get source nanopb=<version of the installed libnanopb-dev>` into build/cross/src/, and
#      pb_common.c pb_encode.c pb_decode.c compiled with musl-gcc -DPB_ENABLE_MALLOC (as debian/rules does) into
#      build/cross/musl/lib/libprotobuf-nanopb.a, headers copied to build/cross/musl/include/.
#
# Usage: cross/setup.sh              all of the above (root, or sudo)
#        cross/setup.sh --musl-lib   step 4 only (no root; needs steps 1-3 done once on the machine)
# Env:   CROSS_BUILD_DIR (default <repo>/build/cross)
set -euo pipefail

top="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${CROSS_BUILD_DIR:-$top/build/cross}"
log=/tmp/mprpc-cross-setup.log
say() { echo "cross-setup: $*"; }
die() { echo "cross-setup: ERROR: $*" >&2; exit 1; }

foreign_archs="arm64 armhf s390x"
host_pkgs="gcc make nanopb libnanopb-dev dpkg-dev musl-tools qemu-user \
  gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf gcc-s390x-linux-gnu \
  libc6-dev-arm64-cross libc6-dev-armhf-cross libc6-dev-s390x-cross"
changed=0

# (no `cmd | grep -q` here: grep -q exits early, the writer gets SIGPIPE and pipefail turns a hit into a miss)
# A bare name means the native (or arch-all) package: libnanopb-dev:arm64 installed must not count as libnanopb-dev.
installed() {
  case "$1" in
    *:*) [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ] ;;
    *) dpkg-query -W -f='${Architecture} ${Status}\n' "$1" 2>/dev/null |
         awk -v n="$(dpkg --print-architecture)" '($1==n || $1=="all") && $0 ~ / install ok installed$/ {ok=1} END {exit !ok}' ;;
  esac
}

SUDO=
need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "not root and no sudo; run as root: $0"
    SUDO=sudo
  fi
}

apt_update() {
  say "apt-get update"
  # A mirror may serve one stale index (seen here: bookworm-security armhf "File has unexpected size"); apt then
  # ignores that index. Warn and go on: the installs that follow fail with a clear message if it mattered.
  if ! $SUDO apt-get update -q >"$log.update" 2>&1; then
    cat "$log.update" >>"$log"
    say "warning: apt-get update reported errors (continuing; the installs below decide):"
    grep -E '^(E|W):' "$log.update" | sed 's/^/    /' >&2 || true
  else
    cat "$log.update" >>"$log"
  fi
  rm -f "$log.update"
}

apt_install() {   # apt_install PKG... : installs those not yet installed
  local missing=() p
  for p in "$@"; do installed "$p" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
    apt_update
    if ! $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
      tail -20 "$log" >&2
      die "apt-get could not install: ${missing[*]} (log: $log)"
    fi
  fi
  changed=1
}

# The mirror and suite this machine already uses, for the deb-src entry.
mirror_uri() {
  local f uri=""
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # first deb822 stanza of Types: deb on a Debian archive (not -security, not a third-party repo)
    uri="$(awk 'BEGIN{RS="";FS="\n"}
      { t="";u=""; for(i=1;i<=NF;i++){ if($i~/^Types:/) t=$i; if($i~/^URIs:/) u=$i }
        if (t ~ /(^|[ \t])deb([ \t]|$)/ && u ~ /\/debian\/?([ \t]|$)/) { sub(/^URIs:[ \t]*/,"",u); split(u,a,/[ \t]+/); print a[1]; exit } }' "$f")"
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    uri="$(awk '$1=="deb" { for(i=2;i<=NF;i++) if ($i !~ /^\[/ && $i ~ /\/debian\/?$/) { print $i; exit } }' "$f")"
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
}

have_deb_src() {  # is there any deb-src line for the suite's main component?
  grep -rqsE '^(deb-src[[:space:]]|Types:.*deb-src)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null
}

add_deb_src() {
  local codename uri
  codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
  [ -n "$codename" ] || die "cannot read VERSION_CODENAME from /etc/os-release"
  uri="$(mirror_uri)"
  [ -n "$uri" ] || die "found no Debian 'deb' mirror in /etc/apt/sources.list*; add a deb-src line for $codename yourself"
  if ls /etc/apt/sources.list.d/*.sources >/dev/null 2>&1; then
    say "adding deb-src $uri $codename main (/etc/apt/sources.list.d/mprpc-deb-src.sources)"
    printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$uri" "$codename" | $SUDO tee /etc/apt/sources.list.d/mprpc-deb-src.sources >/dev/null
  else
    say "adding deb-src $uri $codename main (/etc/apt/sources.list.d/mprpc-deb-src.list)"
    echo "deb-src $uri $codename main" | $SUDO tee /etc/apt/sources.list.d/mprpc-deb-src.list >/dev/null
  fi
}

build_musl_lib() {
  local ver srcdir lib="$build/musl/lib/libprotobuf-nanopb.a" inc="$build/musl/include" obj="$build/musl/obj"
  command -v musl-gcc >/dev/null || die "musl-gcc missing: run $0 as root first"
  ver="$(dpkg-query -W -f='${source:Version}' libnanopb-dev:amd64 2>/dev/null)" || die "libnanopb-dev not installed"
  srcdir="$build/src/nanopb-${ver%%-*}"
  local stamp="$ver -DPB_ENABLE_MALLOC"   # version + recipe: a change to either rebuilds
  if [ -f "$lib" ] && [ -f "$build/musl/.version" ] && [ "$(cat "$build/musl/.version")" = "$stamp" ]; then
    say "musl nanopb runtime $ver already built: $lib"
    return 0
  fi
  if [ ! -f "$srcdir/pb_decode.c" ]; then
    mkdir -p "$build/src"
    say "apt-get source nanopb=$ver (into $build/src)"
    ( cd "$build/src" && apt-get source -q "nanopb=$ver" >>"$log" 2>&1 ) || {
      tail -20 "$log" >&2
      die "apt-get source nanopb=$ver failed (needs a deb-src entry and dpkg-dev: run $0 as root; log: $log)"; }
    [ -f "$srcdir/pb_decode.c" ] || die "unexpected source layout: $srcdir/pb_decode.c not found"
  fi
  say "building $lib with musl-gcc"
  rm -rf "$obj" "$inc"; mkdir -p "$obj" "$inc" "$(dirname "$lib")"
  local f
  for f in pb_common pb_encode pb_decode; do
    # Same PB_* options as Debian's libprotobuf-nanopb.a: debian/rules appends -DPB_ENABLE_MALLOC (its .a files
    # reference realloc/free); no PB_FIELD_32BIT, no PB_WITHOUT_64BIT, no PB_NO_ERRMSG.
    musl-gcc -std=c11 -O2 -DPB_ENABLE_MALLOC -Wall -Wextra -Werror -I"$srcdir" -c "$srcdir/$f.c" -o "$obj/$f.o"
  done
  rm -f "$lib"; ar rcs "$lib" "$obj"/pb_common.o "$obj"/pb_encode.o "$obj"/pb_decode.o
  cp "$srcdir"/pb.h "$srcdir"/pb_common.h "$srcdir"/pb_encode.h "$srcdir"/pb_decode.h "$inc/"
  echo "$stamp" >"$build/musl/.version"
  changed=1
}

if [ "${1:-}" = "--musl-lib" ]; then
  build_musl_lib
  exit 0
fi
[ $# -eq 0 ] || die "usage: $0 [--musl-lib]"

: >"$log"
t0=$(date +%s)
need_root
[ -r /etc/os-release ] && . /etc/os-release
[ "${ID:-}" = debian ] || say "warning: not Debian (ID=${ID:-?}); package names are Debian 12's"
[ "$(dpkg --print-architecture)" = amd64 ] || die "host must be amd64 (is $(dpkg --print-architecture))"

# 1. host packages
# shellcheck disable=SC2086  # a list, split on purpose
apt_install $host_pkgs

# 2. foreign architectures + multiarch nanopb runtime
need_update=0
have_archs=" $(dpkg --print-foreign-architectures | tr '\n' ' ') "
for a in $foreign_archs; do
  if [[ "$have_archs" != *" $a "* ]]; then
    say "dpkg --add-architecture $a"
    $SUDO dpkg --add-architecture "$a"; need_update=1; changed=1
  fi
done
# 3. deb-src entry
if ! have_deb_src; then add_deb_src; need_update=1; changed=1; fi
[ $need_update -eq 1 ] && apt_update

# libnanopb-dev is Multi-Arch: same: every architecture must be the same version as the host's.
hostver="$(dpkg-query -W -f='${Version}' libnanopb-dev:amd64)"
ma=()
for a in $foreign_archs; do installed "libnanopb-dev:$a" || ma+=("libnanopb-dev:$a=$hostver"); done
if [ ${#ma[@]} -gt 0 ]; then
  say "installing: ${ma[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! $SUDO apt-get install -y -q --no-install-recommends "${ma[@]}" >>"$log" 2>&1; then
    apt_update
    $SUDO apt-get install -y -q --no-install-recommends "${ma[@]}" >>"$log" 2>&1 || {
      tail -20 "$log" >&2
      die "could not install ${ma[*]} (Multi-Arch: same needs the same version $hostver for every architecture; log: $log)"; }
  fi
  changed=1
fi

# check every piece is where cross/cross.mk expects it
for t in aarch64-linux-gnu arm-linux-gnueabihf s390x-linux-gnu; do
  command -v "$t-gcc" >/dev/null || die "$t-gcc missing after install"
  [ -f "/usr/lib/$t/libprotobuf-nanopb.a" ] || die "/usr/lib/$t/libprotobuf-nanopb.a missing after install"
  [ -d "/usr/$t/lib" ] || die "/usr/$t/lib (qemu -L sysroot) missing after install"
done
for q in qemu-aarch64 qemu-arm qemu-s390x; do command -v "$q" >/dev/null || die "$q missing after install"; done

# 4. musl runtime from Debian's source package
build_musl_lib

if [ $changed -eq 0 ]; then
  say "everything already installed; nothing changed"
else
  say "done in $(( $(date +%s) - t0 )) s"
fi
