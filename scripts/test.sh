#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test.
# Installs what the tests need on a fresh machine of this kind.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-nextest >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
# The ingest-node build must not pull in authority-only code.
cargo check --no-default-features --locked
bash scripts/install-test-deps.sh
# One PostgreSQL for the whole run (the store suite's second backend); each test makes its
# own database on it. Stopped and removed however the run ends.
eval "$(bash scripts/test-postgres.sh start)"
trap 'bash scripts/test-postgres.sh stop "$PYROGATE_TEST_POSTGRES_DIR"' EXIT
cargo nextest run --all-targets --locked --no-fail-fast
cargo test --doc --locked
bash scripts/browser-tests.sh
