#!/usr/bin/env bash
# The web UI in a real browser: headless Debian Chromium driven by playwright-core, against the
# real `pyrogate server` binary. Installs what it needs on a fresh machine of this kind.
#
#   bash scripts/browser-tests.sh                       # run tests/browser/*.test.mjs
#   UPDATE_SCREENSHOTS=1 bash scripts/browser-tests.sh  # also refresh docs/images/*.png
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver
fi

# playwright-core only (no browser download), pinned by the committed lock file, installed
# outside the source tree. Reinstalled only when the lock file changes.
deps=target/test-deps/browser
mkdir -p "$deps"
if ! cmp -s tests/browser/package-lock.json "$deps/package-lock.json" || [ ! -d "$deps/node_modules/playwright-core" ]; then
  cp tests/browser/package.json tests/browser/package-lock.json "$deps/"
  (cd "$deps" && npm ci --no-audit --no-fund)
fi

cargo build --locked --bin pyrogate

PYROGATE_BROWSER_DEPS="$PWD/$deps" node --test tests/browser/*.test.mjs
