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

# The OpenID Provider of tests/browser/sso.test.mjs (npm oidc-provider, pinned by
# tests/oidc/package-lock.json), where scripts/install-test-deps.sh puts it.
oidc=target/test-deps/oidc
if ! cmp -s tests/oidc/package-lock.json "$oidc/package-lock.json" || [ ! -d "$oidc/node_modules/oidc-provider" ]; then
  mkdir -p "$oidc"
  cp tests/oidc/package.json tests/oidc/package-lock.json "$oidc/"
  (cd "$oidc" && npm ci --no-audit --no-fund)
fi

cargo build --locked --bin pyrogate

PYROGATE_BROWSER_DEPS="$PWD/$deps" PYROGATE_OIDC_DEPS="$PWD/$oidc" node --test tests/browser/*.test.mjs
