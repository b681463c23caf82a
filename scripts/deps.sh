#!/usr/bin/env bash
# Installs the Debian packages a make target needs, and only those that are missing.
# Usage: scripts/deps.sh GROUP...   (groups: core zk test bench cross fuzz tls)
# Idempotent: a second run installs nothing and says so.
set -euo pipefail

pkgs_core="gcc make nanopb libnanopb-dev protobuf-compiler"
pkgs_zk="libzookeeper-mt-dev zookeeper default-jre-headless"
pkgs_test="g++ clang libclang-rt-14-dev python3-protobuf protobuf-compiler valgrind libssl-dev openssl"
pkgs_bench="g++ libgrpc++-dev libprotobuf-dev protobuf-compiler-grpc protobuf-compiler gnuplot-nox"
pkgs_cross="musl-tools gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf gcc-s390x-linux-gnu qemu-user"
pkgs_fuzz="clang libclang-rt-14-dev"
pkgs_tls="libssl-dev openssl"

want=()
for group in "$@"; do
  var="pkgs_${group}"
  if [ -z "${!var+x}" ]; then
    echo "deps.sh: unknown group '$group' (known: core zk test bench cross fuzz tls)" >&2
    exit 2
  fi
  for p in ${!var}; do want+=("$p"); done
done

# The native or architecture-independent instance counts; with foreign architectures enabled (the cross
# group), dpkg-query lists one instance per architecture, and those do not.
native=$(dpkg --print-architecture)
installed() {
  dpkg-query -W -f='${Architecture} ${Status}\n' "$1" 2>/dev/null | grep -qE "^($native|all) install ok installed$"
}

missing=()
for p in "${want[@]}"; do
  if ! installed "$p"; then
    missing+=("$p")
  fi
done
# de-duplicate
if [ ${#missing[@]} -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "deps.sh: all packages for '$*' are installed"
  exit 0
fi

echo "deps.sh: installing missing packages: ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "deps.sh: not root and no sudo: install these packages yourself: ${missing[*]}" >&2
    exit 1
  fi
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/mprpc-deps.log 2>&1; then
  $SUDO apt-get update -q >>/tmp/mprpc-deps.log 2>&1 || true
  if ! $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/mprpc-deps.log 2>&1; then
    echo "deps.sh: apt-get could not install: ${missing[*]} (log: /tmp/mprpc-deps.log)" >&2
    tail -20 /tmp/mprpc-deps.log >&2
    exit 1
  fi
fi
echo "deps.sh: installed ${missing[*]}"
