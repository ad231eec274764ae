#!/usr/bin/env bash
# `pyrogate bench ingest` over plain HTTP and with TLS on both hops (client → node → upstream),
# one after the other on this machine. Makes a throwaway CA and a localhost certificate with
# openssl (installed from Debian if missing); nothing is kept.
#
#   bash scripts/bench-tls.sh [extra bench ingest flags, e.g. --rounds 6 --seconds 1]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v openssl >/dev/null 2>&1; then
  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y openssl
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj "/CN=pyrogate bench CA" -keyout "$dir/ca-key.pem" -out "$dir/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/CN=localhost" -keyout "$dir/key.pem" -out "$dir/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$dir/ext"
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" \
  -CAcreateserial -days 1 -extfile "$dir/ext" -out "$dir/cert.pem" 2>/dev/null
cargo build --release --quiet
./target/release/pyrogate bench ingest "$@"
./target/release/pyrogate bench ingest --tls-dir "$dir" "$@"
