#!/usr/bin/env bash
# The real Pyroscope agents that tests/integration/ingest/agents.rs drives (Python, Node and
# Rust), the OpenID Provider the single sign-on tests run (npm oidc-provider, pinned by
# tests/oidc/package-lock.json), installed outside the source tree under target/test-deps/, the `openssl` CLI that tests/integration/
# keyring_cli.rs uses to read our private keys, and PostgreSQL's server binaries. Idempotent: what is already there is kept.
#
#   bash scripts/install-test-deps.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# Versions the tests were written against (the paths and content types they assert).
PYROSCOPE_IO=1.4.0
PYROSCOPE_NODEJS=0.6.4
# The official OpenTelemetry message classes (profiles/v1development) that build the OTLP
# requests of tests/integration/scopes/pushes.rs.
OPENTELEMETRY_PROTO=1.39.1

deps=target/test-deps
mkdir -p "$deps"

# PostgreSQL's server binaries: scripts/test-postgres.sh runs a throwaway server with them
# for the store suite's PostgreSQL backend.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
fi

# OpenSSL: reads the PKCS#8 keys pyrogate writes (keyring_cli.rs).
if ! command -v openssl >/dev/null 2>&1; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y openssl
fi

# Python: pyroscope-io (HTTP Basic, key as password) in a project-local virtualenv.
venv="$deps/venv"
if ! "$venv/bin/python" -c 'import pyroscope' >/dev/null 2>&1; then
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "pyroscope-io==$PYROSCOPE_IO"
fi
# `python -m pip`: the venv's own interpreter, even in a copied venv whose pip script names
# another path.
if ! "$venv/bin/python" -c 'import opentelemetry.proto.collector.profiles.v1development' >/dev/null 2>&1; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "opentelemetry-proto==$OPENTELEMETRY_PROTO"
fi

# Node: @pyroscope/nodejs (Bearer authToken).
if [ ! -f "$deps/node/node_modules/@pyroscope/nodejs/package.json" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm
  fi
  mkdir -p "$deps/node"
  npm install --no-audit --no-fund --prefix "$deps/node" "@pyroscope/nodejs@$PYROSCOPE_NODEJS"
fi

# The OpenID Provider of tests/integration/authority/sso.rs and tests/browser/sso.test.mjs:
# oidc-provider (OpenID Certified), pinned by the committed lock file; reinstalled only when
# the lock file changes.
oidc="$deps/oidc"
if ! cmp -s tests/oidc/package-lock.json "$oidc/package-lock.json" || [ ! -d "$oidc/node_modules/oidc-provider" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm
  fi
  mkdir -p "$oidc"
  cp tests/oidc/package.json tests/oidc/package-lock.json "$oidc/"
  (cd "$oidc" && npm ci --no-audit --no-fund)
fi

# Rust: the official `pyroscope` crate (pprof-rs backend, reqwest + rustls with ring), built
# from tests/agents/rust with its own lockfile and target dir, outside pyrogate's dependency
# tree.
rust_agent="$deps/rust-agent/release/pyrogate-rust-agent"
if [ ! -x "$rust_agent" ] || [ tests/agents/rust/src/main.rs -nt "$rust_agent" ] \
   || [ tests/agents/rust/Cargo.lock -nt "$rust_agent" ]; then
  cargo build --release --locked --quiet --manifest-path tests/agents/rust/Cargo.toml \
    --target-dir "$deps/rust-agent"
fi
