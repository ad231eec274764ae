// Single sign-on in a real browser: headless Chromium against the real `pyrogate server` binary
// and a real OpenID Provider (npm oidc-provider, tests/oidc/provider.mjs, OpenID Certified),
// both on loopback. "Sign in with …" → the provider's login form → back in Settings as an Admin
// mapped from a group; a user mapped to ReadOnly sees no API-keys page. Run by
// scripts/browser-tests.sh (oidc-provider is installed by scripts/install-test-deps.sh).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = process.env.PYROGATE_BIN ?? path.join(ROOT, 'target/debug/pyrogate');
const OIDC_DEPS = process.env.PYROGATE_OIDC_DEPS ?? path.join(ROOT, 'target/test-deps/oidc');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const CLIENT_SECRET = 'browser-test-client-secret-0123456789';

function loadPlaywright() {
  const deps = process.env.PYROGATE_BROWSER_DEPS ?? path.join(ROOT, 'target/test-deps/browser');
  try {
    return createRequire(path.join(deps, 'package.json'))('playwright-core');
  } catch {
    return createRequire(import.meta.url)('playwright-core');
  }
}
const { chromium } = loadPlaywright();

let browser;
let idp;
let server;

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function eventually(what, check, { timeout = 20_000, every = 50 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, every));
  }
}

/** The OpenID Provider, with one client whose redirect URL is pyrogate's callback on `port`. */
async function startProvider(port) {
  const clients = [{ client_id: 'pyrogate', client_secret: CLIENT_SECRET, redirect_uris: [`http://127.0.0.1:${port}/auth/oidc/callback`] }];
  const proc = spawn('node', [path.join(ROOT, 'tests/oidc/provider.mjs')], {
    stdio: ['pipe', 'pipe', 'ignore'],
    env: { ...process.env, PYROGATE_OIDC_DEPS: OIDC_DEPS, OIDC_CLIENTS: JSON.stringify(clients) },
  });
  const lines = readline.createInterface({ input: proc.stdout });
  const first = await new Promise((resolve, reject) => {
    lines.once('line', resolve);
    proc.once('exit', (code) => reject(new Error(`the OpenID Provider exited (${code}); run scripts/install-test-deps.sh`)));
  });
  // Keep reading: the provider logs to stdout.
  lines.on('line', () => {});
  return { issuer: JSON.parse(first).issuer, stop: () => proc.kill('SIGTERM') };
}

async function startServer(port, issuer) {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pyrogate-sso-'));
  const url = `http://127.0.0.1:${port}`;
  const args = [
    'server',
    '--api-bind-addr', `127.0.0.1:${port}`,
    '--storage-path', path.join(dir, 'data'),
    '--keys-dir', path.join(dir, 'keys'),
    '--auth.internal.admin.password', 'correct-horse-battery-staple',
    '--auth.oidc.enabled',
    '--auth.oidc.name', 'Test IdP',
    '--auth.oidc.issuer-url', issuer,
    '--auth.oidc.client-id', 'pyrogate',
    '--auth.oidc.redirect-url', `${url}/auth/oidc/callback`,
    '--auth.oidc.scopes', 'openid profile email groups',
    '--auth.oidc.role-mapping.admin', 'pyro-admins',
    '--auth.oidc.role-mapping.read-only', 'developers',
  ];
  // The client secret from the environment, as a deployment would pass it.
  const proc = spawn(BIN, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: 'warn', PYROSCOPE_AUTH_OIDC_CLIENT_SECRET: CLIENT_SECRET },
  });
  let output = '';
  proc.stdout.on('data', (d) => (output += d));
  proc.stderr.on('data', (d) => (output += d));
  let exited = null;
  const exit = new Promise((resolve) => proc.on('exit', (code, signal) => resolve((exited = { code, signal }))));
  await eventually('the server to answer /healthz', async () => {
    if (exited) throw new Error(`pyrogate exited (${JSON.stringify(exited)}): ${output}`);
    const res = await fetch(`${url}/healthz`).catch(() => null);
    return res?.status === 200;
  });
  return {
    url,
    output: () => output,
    async stop() {
      if (!exited) {
        proc.kill('SIGTERM');
        await exit;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

before(async () => {
  const port = await freePort();
  idp = await startProvider(port);
  server = await startServer(port, idp.issuer);
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
});

after(async () => {
  await browser?.close();
  await server?.stop();
  idp?.stop();
});

/** "Sign in with Test IdP" → the provider's form as `login` → back at pyrogate. */
async function signIn(t, login, next) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-US' });
  t.after(() => context.close());
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  await page.goto(`${server.url}/login${next ? `?next=${encodeURIComponent(next)}` : ''}`);
  const button = page.getByTestId('sso-login');
  await button.waitFor();
  assert.equal((await button.textContent()).trim(), 'Sign in with Test IdP');
  await button.click();
  await page.waitForURL((u) => u.origin === idp.issuer);
  await page.locator('input[name="login"]').fill(login);
  await page.locator('input[name="password"]').fill('any password');
  await page.locator('button[type="submit"]').click();
  try {
    await page.waitForURL((u) => u.origin === server.url && u.pathname !== '/login', { timeout: 15_000 });
  } catch (err) {
    throw new Error(`not back at pyrogate: at ${page.url()}: ${(await page.content()).slice(0, 2000)}\n${server.output()}`, { cause: err });
  }
  return { page, problems };
}

test('an admin-group member signs in with the provider and lands in Settings as an Admin', async (t) => {
  const { page, problems } = await signIn(t, 'admin-alice', '/settings/users');
  assert.equal(new URL(page.url()).pathname, '/settings/users');
  await page.getByRole('heading', { name: 'Users' }).waitFor();
  const row = page.getByTestId('user-row').filter({ hasText: 'admin-alice' });
  await row.waitFor();
  assert.match(await row.getByTestId('user-sign-in').textContent(), /SSO · 127\.0\.0\.1:\d+/);
  assert.match(await row.getByTestId('user-groups').textContent(), /pyro-admins/);
  assert.equal(await row.getByTestId('user-role').inputValue(), 'Admin');
  const local = page.getByTestId('user-row').filter({ hasText: /^admin/ }).filter({ hasNotText: 'admin-alice' });
  assert.match(await local.getByTestId('user-sign-in').textContent(), /Password/);
  await page.goto(`${server.url}/settings/api-keys`);
  await page.getByRole('heading', { name: 'API keys' }).waitFor();
  assert.equal(await page.getByTestId('needs-admin').count(), 0);
  assert.deepEqual(problems, []);
});

test('a developer is mapped to ReadOnly and sees no API-keys page', async (t) => {
  const { page, problems } = await signIn(t, 'dev-bob');
  assert.equal(new URL(page.url()).pathname, '/profile');
  await page.goto(`${server.url}/settings/api-keys`);
  const callout = page.getByTestId('needs-admin');
  await callout.waitFor();
  assert.match(await callout.textContent(), /dev-bob with the ReadOnly role/);
  assert.equal(await page.getByTestId('api-keys-table').count(), 0);
  assert.deepEqual(problems, []);
});

test('a refused sign-in is an error page and no session', async (t) => {
  const context = await browser.newContext();
  t.after(() => context.close());
  const page = await context.newPage();
  const res = await page.goto(`${server.url}/auth/oidc/login?next=${encodeURIComponent('//evil.example')}`);
  assert.equal(res.status(), 400);
  assert.match(await page.getByTestId('sso-error').textContent(), /not a page of this site/);
  assert.equal(new URL(page.url()).origin, server.url);
  const me = await context.request.get(`${server.url}/api/user`);
  assert.equal(me.status(), 401);
});
