#!/usr/bin/env bash
# Makes a small PKI with the openssl command for TLS demos and tests:
#   scripts/tls-certs.sh DIR
# DIR/ca.crt          the CA both sides trust (ca.key signs)
# DIR/server.crt/.key the provider: CN=localhost, SAN DNS:localhost, IP:127.0.0.1, IP:::1
# DIR/client.crt/.key a caller: CN=alice, SAN DNS:alice.example (for mutual TLS)
# DIR/expired.crt     the server key's certificate, expired yesterday
# DIR/other-ca.crt    a CA nobody else trusts, and DIR/other.crt/.key a server certificate it signed
# EC P-256 keys, valid for 30 days. Existing files are replaced.
set -euo pipefail
dir=${1:?usage: scripts/tls-certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
q() { "$@" >/dev/null 2>&1 || { echo "tls-certs.sh: failed: $*" >&2; "$@"; exit 1; }; }

key() { q openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key"; }
ca() { key "$1"; q openssl req -x509 -new -key "$1.key" -out "$1.crt" -days 30 -subj "/CN=$2"; }
# sign NAME CA DAYS SUBJECT SAN [KEYNAME]
sign() {
  local name=$1 ca=$2 days=$3 subj=$4 san=$5 k=${6:-$1}
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\n' "$san" >"$name.ext"
  q openssl req -new -key "$k.key" -out "$name.csr" -subj "$subj"
  q openssl x509 -req -in "$name.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial -days "$days" \
      -extfile "$name.ext" -out "$name.crt"
  rm -f "$name.csr" "$name.ext"
}

ca ca "mprpc test CA"
key server
sign server ca 30 /CN=localhost "DNS:localhost,IP:127.0.0.1,IP:::1"
key client
sign client ca 30 /CN=alice/O=mprpc "DNS:alice.example"
sign expired ca -1 /CN=localhost "DNS:localhost,IP:127.0.0.1,IP:::1" server
ca other-ca "another CA"
key other
sign other other-ca 30 /CN=localhost "DNS:localhost,IP:127.0.0.1,IP:::1"
chmod 600 ./*.key
echo "tls-certs.sh: CA, server, client, expired and other-CA certificates in $dir"
