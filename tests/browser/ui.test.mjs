// The web UI in a real browser: headless Debian Chromium, driven by playwright-core, against the
// real `pyrogate server` binary (target/debug/pyrogate) on a free loopback port with a fresh temp
// dir per test. Run by scripts/browser-tests.sh; `UPDATE_SCREENSHOTS=1` writes the screenshots
// into docs/images/ instead of a temp dir.

import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = process.env.PYROGATE_BIN ?? path.join(ROOT, 'target/debug/pyrogate');
const ADMIN_PASSWORD = 'correct-horse-battery-staple';
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
// Without the background-networking flags Chromium keeps dialing out, and this machine's
// network refuses it. Playwright's launch() gives every browser a fresh temporary profile.
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
const JWT = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

/** playwright-core from scripts/browser-tests.sh's install dir, or from a plain `npm install` here. */
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
let shots;

before(async () => {
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  shots = process.env.UPDATE_SCREENSHOTS === '1' ? path.join(ROOT, 'docs/images') : await mkdtemp(path.join(os.tmpdir(), 'pyrogate-ui-shots-'));
  await mkdir(shots, { recursive: true });
  console.log(`screenshots: ${shots}`);
});

after(async () => {
  await browser?.close();
});

// ---------------------------------------------------------------------------------------------
// The server

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

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` until it returns a truthy value or the deadline passes. */
async function eventually(what, check, { timeout = 10_000, every = 50 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
      last = value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await sleep(every);
  }
}

/** Starts `pyrogate server` with ingestion auth on; resolves once /healthz answers. */
async function startServer() {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pyrogate-ui-'));
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const args = [
      'server',
      '--api-bind-addr', `127.0.0.1:${port}`,
      '--storage-path', path.join(dir, 'data'),
      '--keys-dir', path.join(dir, 'keys'),
      '--auth.internal.admin.password', ADMIN_PASSWORD,
      '--auth.ingestion.enabled',
    ];
    const proc = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: 'warn' } });
    let output = '';
    proc.stdout.on('data', (d) => (output += d));
    proc.stderr.on('data', (d) => (output += d));
    let exited = null;
    const exit = new Promise((resolve) => proc.on('exit', (code, signal) => resolve((exited = { code, signal }))));
    const url = `http://127.0.0.1:${port}`;
    try {
      await eventually('the server to answer /healthz', async () => {
        if (exited) throw new Error(`pyrogate exited (${JSON.stringify(exited)}): ${output}`);
        const res = await fetch(`${url}/healthz`).catch(() => null);
        return res?.status === 200;
      }, { timeout: 20_000 });
    } catch (err) {
      proc.kill('SIGKILL');
      await exit;
      // The free port may have been taken in between; try another one.
      if (exited && attempt < 3 && /address|bind/i.test(output)) continue;
      throw err;
    }
    return {
      url,
      dir,
      output: () => output,
      async stop() {
        if (!exited) {
          proc.kill('SIGTERM');
          const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
          await exit;
          clearTimeout(timer);
        }
        await rm(dir, { recursive: true, force: true });
      },
    };
  }
}

/** A JSON API client with its own session (what automation does). */
async function apiSession(url, username = 'admin', password = ADMIN_PASSWORD) {
  const login = await fetch(`${url}/api/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username, password }),
  });
  assert.equal(login.status, 204, `login as ${username}`);
  const cookie = login.headers.get('set-cookie').split(';')[0];
  return async (method, p, body) => {
    const res = await fetch(`${url}${p}`, {
      method,
      headers: { cookie, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  };
}

/** POST /ingest with a key, as an agent does. */
async function push(url, key, app = 'ui-test.cpu') {
  const res = await fetch(`${url}/ingest?name=${encodeURIComponent(app)}&format=pprof`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/octet-stream' },
    body: new Uint8Array(256).fill(7),
  });
  await res.arrayBuffer();
  return res.status;
}

function run(file, args) {
  return new Promise((resolve) => {
    execFile(file, args, (error, stdout, stderr) => resolve({ code: error ? error.code ?? 1 : 0, stdout, stderr }));
  });
}

// ---------------------------------------------------------------------------------------------
// The browser

/**
 * A test's browser context and page on a fresh server. Fails the test on uncaught page errors
 * and on anything the Content-Security-Policy refused.
 */
async function open(t) {
  const server = await startServer();
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-US' });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error' && /Content[- ]Security[- ]Policy|Refused to/i.test(msg.text())) problems.push(`console: ${msg.text()}`);
  });
  t.after(async () => {
    await context.close();
    await server.stop();
  });
  return {
    server,
    context,
    page,
    url: server.url,
    checkNoProblems: () => assert.deepEqual(problems, [], 'no page errors or CSP violations'),
  };
}

async function logIn(page, url, username = 'admin', password = ADMIN_PASSWORD) {
  if (!page.url().includes('/login')) await page.goto(`${url}/login`);
  await page.getByLabel('User name').fill(username);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.waitForURL((u) => u.pathname !== '/login');
}

async function shot(page, name) {
  await page.evaluate(() => document.fonts.ready);
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
}

const text = async (locator) => (await locator.textContent())?.trim() ?? '';

async function waitForText(locator, expected, what = 'text') {
  return eventually(`${what} to contain ${JSON.stringify(expected)}`, async () => {
    const t = await locator.textContent().catch(() => null);
    return t && (expected instanceof RegExp ? expected.test(t) : t.includes(expected)) ? t : false;
  });
}

// ---------------------------------------------------------------------------------------------
// Tests

test('an admin adds an Agent key in Settings, copies it, pushes with it and deletes it', { timeout: 90_000 }, async (t) => {
  const { page, context, url, server, checkNoProblems } = await open(t);
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: url });

  // `/` sends a visitor without a session to the login page.
  await page.goto(`${url}/`);
  assert.equal(new URL(page.url()).pathname, '/login');
  await logIn(page, url);

  await page.getByRole('link', { name: 'Profile' }).click();
  await page.getByRole('heading', { name: 'Profile', level: 1 }).waitFor();
  await page.getByRole('navigation').getByRole('link', { name: 'Settings' }).click();
  await page.getByRole('navigation').getByRole('link', { name: 'API keys' }).click();
  await page.getByRole('heading', { name: 'API keys', level: 1 }).waitFor();
  assert.equal(new URL(page.url()).pathname, '/settings/api-keys');
  await page.getByTestId('empty-state').waitFor();

  const name = `ui-test-${Date.now()}`;
  await page.getByRole('button', { name: 'Add Key' }).click();
  await page.getByLabel('Name', { exact: true }).fill(name);
  await page.getByLabel('Role').selectOption('Agent');
  const ttl = page.getByLabel('Valid for (seconds)');
  await ttl.fill('345600');
  assert.equal(await text(page.getByTestId('ttl-echo')), '= 4 days');
  await ttl.fill('0');
  assert.equal(await text(page.getByTestId('ttl-echo')), 'never expires');
  await page.getByRole('button', { name: 'Add API Key' }).click();

  const shown = page.getByTestId('new-api-key');
  await shown.waitFor();
  const key = await shown.inputValue();
  assert.match(key, JWT);
  assert.equal(await shown.getAttribute('readonly'), '');
  const created = page.getByTestId('key-created');
  assert.match(await text(created), /cannot be shown again/);
  const snippet = await text(page.getByTestId('usage-snippet'));
  for (const usage of ['Authorization: Bearer', 'PYROSCOPE_AUTH_TOKEN=', 'basic_auth_password']) assert.ok(snippet.includes(usage), usage);

  await page.bringToFront();
  await page.getByRole('button', { name: 'Copy' }).click();
  await page.getByText('Key has been copied').waitFor();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), key, 'the clipboard holds the key');

  // The new key is listed (never the key itself) and is a valid Agent key per the server's JWKS.
  const row = page.getByTestId('api-key-row').filter({ hasText: name });
  await row.waitFor();
  const rowText = await text(row);
  assert.match(rowText, /Agent/);
  assert.match(rowText, /never/);
  assert.ok(!rowText.includes(key.slice(0, 20)), 'the list never shows the key');

  const jwks = path.join(server.dir, 'jwks.json');
  await writeFile(jwks, await (await fetch(`${url}/.well-known/jwks.json`)).text());
  const verified = await run(BIN, ['token', 'verify', '--jwks', jwks, key]);
  assert.equal(verified.code, 0, verified.stderr);
  const claims = JSON.parse(verified.stdout);
  assert.equal(claims.sub, name);
  assert.equal(claims.role, 'Agent');
  assert.equal(claims.exp, undefined, 'valid for 0 seconds = never expires');

  assert.equal(await push(url, key), 200, 'the new key pushes');

  // Limit it without a new key: the row shows the limit, and past its burst the key gets 429.
  assert.match(await text(row), /none/);
  await row.getByRole('button', { name: /Limit/ }).click();
  const limitDialog = page.getByRole('dialog');
  await limitDialog.waitFor();
  await limitDialog.getByLabel('Pushes/s').fill('1');
  await limitDialog.getByLabel('Burst', { exact: true }).fill('2');
  await limitDialog.getByRole('button', { name: 'Save limit' }).click();
  await limitDialog.waitFor({ state: 'detached' });
  await waitForText(row.getByTestId('api-key-limit'), '1 pushes/s (burst 2)');
  await eventually('the limited key to get 429', async () => (await push(url, key)) === 429, { timeout: 5000 });

  // Delete: the confirmation names the key; then the key is refused.
  await row.getByRole('button', { name: /Delete/ }).click();
  const dialog = page.getByRole('dialog');
  await dialog.waitFor();
  assert.ok((await text(dialog)).includes(name), 'the confirmation names the key');
  await dialog.getByRole('button', { name: 'Delete key' }).click();
  await dialog.waitFor({ state: 'detached' });
  await row.waitFor({ state: 'detached' });
  await waitForText(page.getByTestId('status'), `Deleted API key “${name}”`);
  await page.getByTestId('empty-state').waitFor();
  assert.equal(await page.getByTestId('new-api-key').count(), 0, 'the panel of a deleted key closes');
  await eventually('the deleted key to be refused', async () => (await push(url, key)) === 401, { timeout: 5000 });
  checkNoProblems();
});

test('a ReadOnly user sees only Profile and cannot reach the API keys page', { timeout: 60_000 }, async (t) => {
  const { page, url, checkNoProblems } = await open(t);
  const admin = await apiSession(url);
  const created = await admin('POST', '/api/users', { name: 'reader', email: 'reader@example.com', password: 'reader-password', role: 'ReadOnly' });
  assert.equal(created.status, 201);
  await admin('POST', '/api/keys', { name: 'existing-key', role: 'Agent', ttlSeconds: 0 });

  await logIn(page, url, 'reader', 'reader-password');
  assert.equal(new URL(page.url()).pathname, '/profile', 'non-admins land on their profile');
  const nav = page.getByRole('navigation');
  assert.equal(await nav.getByRole('link', { name: 'API keys' }).count(), 0, 'no API keys link');
  assert.equal(await nav.getByRole('link', { name: 'Settings' }).count(), 0, 'no Settings link');
  assert.equal(await nav.getByRole('link', { name: 'Profile' }).count(), 1);

  await page.goto(`${url}/settings/api-keys`);
  const denied = page.getByTestId('needs-admin');
  await denied.waitFor();
  assert.match(await text(denied), /You need the Admin role/);
  await shot(page, 'needs-admin');
  assert.equal(await page.getByTestId('api-key-row').count(), 0, 'no key rows');
  assert.equal(await page.getByRole('navigation').getByRole('link', { name: 'API keys' }).count(), 0);
  // The API agrees: the page's own session can't list keys.
  const status = await page.evaluate(() => fetch('/api/keys', { credentials: 'same-origin' }).then((r) => r.status));
  assert.equal(status, 403);
  checkNoProblems();
});

test('a wrong password shows the API’s error on the login page', { timeout: 60_000 }, async (t) => {
  const { page, url, checkNoProblems } = await open(t);
  const response = await page.goto(`${url}/login`);
  const headers = response.headers();
  assert.match(headers['content-security-policy'], /default-src 'none'; script-src 'self'/);
  assert.equal(headers['x-frame-options'], 'DENY');
  await page.getByLabel('User name').fill('admin');
  await page.getByLabel('Password').fill('not-the-password');
  await page.getByRole('button', { name: 'Log in' }).click();
  const error = page.getByTestId('login-error');
  await error.waitFor();
  assert.equal(await error.getAttribute('role'), 'alert');
  assert.match(await text(error), /invalid username or password/i);
  assert.equal(new URL(page.url()).pathname, '/login');

  await page.getByLabel('Password').fill(ADMIN_PASSWORD);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.waitForURL(`${url}/settings/api-keys`);
  checkNoProblems();
});

test('login sends the user back where they were going, and only to this site', { timeout: 60_000 }, async (t) => {
  const { page, url, checkNoProblems } = await open(t);
  await page.goto(`${url}/settings/users`);
  await page.waitForURL((u) => u.pathname === '/login');
  assert.equal(new URL(page.url()).searchParams.get('next'), '/settings/users');
  await logIn(page, url);
  assert.equal(new URL(page.url()).pathname, '/settings/users');
  await page.getByRole('heading', { name: 'Users', level: 1 }).waitFor();

  await page.getByRole('button', { name: 'Log out' }).click();
  await page.waitForURL((u) => u.pathname === '/login');
  await page.goto(`${url}/login?next=//evil.example/x`);
  await logIn(page, url);
  assert.equal(page.url(), `${url}/settings/api-keys`, 'an off-site next is ignored');
  checkNoProblems();
});

test('an empty or duplicate key name shows the API’s message next to the Name field', { timeout: 60_000 }, async (t) => {
  const { page, url, checkNoProblems } = await open(t);
  await logIn(page, url);
  await page.getByRole('button', { name: 'Add Key' }).click();
  await page.getByRole('button', { name: 'Add API Key' }).click();
  const nameField = page.locator('.field').filter({ has: page.getByLabel('Name', { exact: true }) });
  const error = nameField.getByTestId('field-error');
  await waitForText(error, "api key name can't be empty", 'the name error');
  assert.equal(await error.getAttribute('role'), 'alert');
  assert.equal(await page.getByLabel('Name', { exact: true }).getAttribute('aria-invalid'), 'true');

  await page.getByLabel('Name', { exact: true }).fill('checkout-service');
  await page.getByRole('button', { name: 'Add API Key' }).click();
  await page.getByTestId('new-api-key').waitFor();
  await page.getByRole('button', { name: 'Done' }).click();

  await page.getByRole('button', { name: 'Add Key' }).click();
  await page.getByLabel('Name', { exact: true }).fill('checkout-service');
  await page.getByRole('button', { name: 'Add API Key' }).click();
  await waitForText(nameField.getByTestId('field-error'), 'api key with this name already exists', 'the duplicate error');
  assert.equal(await page.getByTestId('new-api-key').count(), 0);
  assert.equal(await page.getByTestId('api-key-row').count(), 1);
  checkNoProblems();
});

test('a key limited to applications and networks: a bad value shows next to its field, good ones show in the keys table', { timeout: 60_000 }, async (t) => {
  const { page, url, checkNoProblems } = await open(t);
  await logIn(page, url);
  await page.getByRole('button', { name: 'Add Key' }).click();
  await page.getByLabel('Name', { exact: true }).fill('checkout-agent');
  await page.getByLabel('Role').selectOption('Agent');
  await page.getByLabel('Applications (optional)').fill('checkout, bad app');
  await page.getByLabel('Source networks (optional)').fill('10.0.0.0/8, ::1');
  await page.getByRole('button', { name: 'Add API Key' }).click();
  const appsField = page.locator('.field').filter({ has: page.getByLabel('Applications (optional)') });
  await waitForText(appsField.getByTestId('field-error'), 'apps: ', 'the apps error');
  assert.equal(await page.getByTestId('new-api-key').count(), 0);

  await page.getByLabel('Applications (optional)').fill('checkout, checkout-*');
  await page.getByRole('button', { name: 'Add API Key' }).click();
  await page.getByTestId('new-api-key').waitFor();
  await page.getByRole('button', { name: 'Done' }).click();
  const row = page.getByTestId('api-key-row');
  await waitForText(row.getByTestId('api-key-apps'), 'apps checkout, checkout-*', 'the apps in the keys table');
  await waitForText(row.getByTestId('api-key-cidrs'), 'from 10.0.0.0/8, ::1', 'the networks in the keys table');
  checkNoProblems();
});

test('an admin adds a user, changes their role, disables and enables them, and resets their password', { timeout: 60_000 }, async (t) => {
  const { page, url, checkNoProblems } = await open(t);
  await logIn(page, url);
  await page.getByRole('link', { name: 'Users' }).click();
  await page.getByRole('heading', { name: 'Users', level: 1 }).waitFor();

  await page.getByRole('button', { name: 'Add user' }).click();
  await page.getByLabel('User name').fill('alice');
  await page.getByLabel('Email (optional)').fill('alice@example.com');
  await page.getByLabel('Password', { exact: true }).fill('short');
  await page.getByRole('button', { name: 'Create user' }).click();
  const pwField = page.locator('.field').filter({ has: page.getByLabel('Password', { exact: true }) });
  await waitForText(pwField.getByTestId('field-error'), 'at least 8 characters');
  await page.getByLabel('Password', { exact: true }).fill('alice-password-1');
  await page.getByRole('button', { name: 'Create user' }).click();

  const row = page.getByTestId('user-row').filter({ hasText: 'alice' });
  await row.waitFor();
  assert.match(await text(row), /Active/);
  await row.getByLabel('Role of alice').selectOption('Agent');
  await waitForText(page.getByTestId('status'), 'alice now has the Agent role');

  await row.getByRole('button', { name: 'Disable alice' }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Disable user' }).click();
  await waitForText(row, 'Disabled');
  let login = await fetch(`${url}/api/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice', password: 'alice-password-1' }) });
  assert.equal(login.status, 401, 'a disabled user cannot log in');
  await row.getByRole('button', { name: 'Enable alice' }).click();
  await waitForText(row, 'Active');

  await row.getByRole('button', { name: 'Reset password of alice' }).click();
  const dialog = page.getByRole('dialog');
  await dialog.getByLabel('New password').fill('alice-password-2');
  await dialog.getByRole('button', { name: 'Set password' }).click();
  await dialog.waitFor({ state: 'detached' });
  login = await fetch(`${url}/api/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice', password: 'alice-password-2' }) });
  assert.equal(login.status, 204, 'the reset password works');

  // The last admin can't demote themself: the API's 409 is shown and the select reverts.
  const me = page.getByTestId('user-row').filter({ hasText: 'admin' });
  await me.getByLabel('Role of admin').selectOption('ReadOnly');
  await waitForText(page.getByTestId('page-error'), 'last enabled admin');
  assert.equal(await me.getByLabel('Role of admin').inputValue(), 'Admin');
  checkNoProblems();
});

test('rotating adds an active signing key; retiring the old one warns, then its API keys stop working', { timeout: 60_000 }, async (t) => {
  const { page, url, checkNoProblems } = await open(t);
  const admin = await apiSession(url);
  const old = (await admin('POST', '/api/keys', { name: 'signed-by-old', role: 'Agent', ttlSeconds: 0 })).body.key;
  assert.equal(await push(url, old), 200);

  await logIn(page, url);
  await page.getByRole('link', { name: 'Signing keys' }).click();
  const rows = page.getByTestId('signing-key-row');
  await rows.first().waitFor();
  assert.equal(await rows.count(), 1);
  assert.match(await text(rows.first()), /Active/);

  await page.getByRole('button', { name: 'Rotate signing key' }).click();
  await eventually('two signing keys', async () => (await rows.count()) === 2);
  const published = rows.filter({ hasText: 'Published' });
  assert.equal(await published.count(), 1);
  assert.equal(await rows.filter({ hasText: 'Active' }).count(), 1);
  assert.equal(await push(url, old), 200, 'rotation alone keeps old keys working');

  await published.getByRole('button', { name: /Retire/ }).click();
  const dialog = page.getByRole('dialog');
  await dialog.waitFor();
  assert.match(await text(dialog), /Every API key signed by it stops working/);
  await dialog.getByRole('button', { name: 'Retire key' }).click();
  await dialog.waitFor({ state: 'detached' });
  await eventually('the retired status', async () => (await rows.filter({ hasText: 'Retired' }).count()) === 1);
  await eventually('the old key to be refused', async () => (await push(url, old)) === 401);
  checkNoProblems();
});

test('a user changes their own password on the Profile page', { timeout: 60_000 }, async (t) => {
  const { page, url, checkNoProblems } = await open(t);
  await logIn(page, url);
  await page.getByRole('link', { name: 'Profile' }).click();
  const details = page.getByTestId('profile-details');
  await details.waitFor();
  assert.match(await text(details), /admin/);
  assert.match(await text(details), /Admin/);

  await page.getByLabel('Current password').fill('wrong-password');
  await page.getByLabel('New password', { exact: true }).fill('a-new-password');
  await page.getByLabel('Confirm new password').fill('a-new-password');
  await page.getByRole('button', { name: 'Change password' }).click();
  const current = page.locator('.field').filter({ has: page.getByLabel('Current password') });
  await waitForText(current.getByTestId('field-error'), 'the current password is wrong');

  await page.getByLabel('Current password').fill(ADMIN_PASSWORD);
  await page.getByRole('button', { name: 'Change password' }).click();
  await waitForText(page.getByTestId('status'), 'Password changed');
  await apiSession(url, 'admin', 'a-new-password');
  checkNoProblems();
});

test('the Ingestion page lists pushes per application and the keys that sent them', { timeout: 60_000 }, async (t) => {
  const { page, url, checkNoProblems } = await open(t);
  const admin = await apiSession(url);
  const key = (await admin('POST', '/api/keys', { name: 'checkout-agent', role: 'Agent', ttlSeconds: 0 })).body.key;
  await logIn(page, url);
  await page.getByRole('link', { name: 'Ingestion' }).click();
  await page.getByTestId('empty-state').waitFor();
  for (let i = 0; i < 3; i++) assert.equal(await push(url, key, 'checkout.cpu'), 200);
  await page.getByRole('button', { name: 'Refresh' }).click();
  const row = page.getByTestId('ingestion-row');
  await row.waitFor();
  const cells = await row.locator('td').allTextContents();
  assert.equal(cells[0], 'checkout.cpu');
  assert.equal(cells[1], '3', 'pushes');
  assert.equal(cells[2], '768 bytes');
  assert.equal(cells[4], 'checkout-agent');
  checkNoProblems();
});

test('every page, with realistic data, as screenshots for docs/ui.md', { timeout: 90_000 }, async (t) => {
  const { page, context, url, checkNoProblems } = await open(t);
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: url });
  const admin = await apiSession(url);
  await admin('POST', '/api/users', { name: 'dana', email: 'dana@example.com', fullName: 'Dana Ops', password: 'dana-password', role: 'Admin' });
  await admin('POST', '/api/users', { name: 'grafana-viewer', email: 'viewer@example.com', password: 'viewer-password', role: 'ReadOnly' });
  const pusher = await admin('POST', '/api/users', { name: 'old-contractor', password: 'contractor-password', role: 'Agent' });
  await admin('PUT', `/api/users/${pusher.body.id}/disable`);
  const keys = {};
  for (const [name, role, ttlSeconds] of [
    ['checkout-service', 'Agent', 0],
    ['grafana-datasource', 'ReadOnly', 365 * 86400],
    ['ci-provisioning', 'Admin', 30 * 86400],
    ['search-indexer', 'Agent', 3 * 86400 + 60],
  ]) {
    keys[name] = (await admin('POST', '/api/keys', { name, role, ttlSeconds })).body.key;
  }
  for (let i = 0; i < 12; i++) await push(url, keys['checkout-service'], 'checkout.cpu');
  for (let i = 0; i < 5; i++) await push(url, keys['search-indexer'], 'search.alloc_objects');
  await admin('POST', '/api/signing-keys/rotate');

  await page.goto(`${url}/login`);
  await page.getByLabel('User name').waitFor();
  await shot(page, 'login');
  await logIn(page, url);

  await page.getByTestId('api-key-row').first().waitFor();
  await shot(page, 'api-keys');

  await page.getByRole('button', { name: 'Add Key' }).click();
  await page.getByLabel('Name', { exact: true }).fill('payments-service');
  await page.getByLabel('Role').selectOption('Agent');
  await page.getByLabel('Valid for (seconds)').fill('2592000');
  await shot(page, 'add-key');

  await page.getByRole('button', { name: 'Add API Key' }).click();
  await page.getByTestId('new-api-key').waitFor();
  await page.getByRole('button', { name: 'Copy' }).click();
  await page.getByText('Key has been copied').waitFor();
  await shot(page, 'key-created');

  await page.getByRole('link', { name: 'Users' }).click();
  await page.getByTestId('user-row').first().waitFor();
  await shot(page, 'users');

  await page.getByRole('link', { name: 'Signing keys' }).click();
  await page.getByTestId('signing-key-row').nth(1).waitFor();
  await shot(page, 'signing-keys');

  await page.getByRole('link', { name: 'Ingestion' }).click();
  await page.getByTestId('ingestion-row').first().waitFor();
  await shot(page, 'ingestion');

  await page.getByRole('link', { name: 'Profile' }).click();
  await page.getByTestId('profile-details').waitFor();
  await shot(page, 'profile');
  checkNoProblems();
});

/** The `jti` of a key: the claim nodes report its use under. */
const jtiOf = (key) => JSON.parse(Buffer.from(key.split('.')[1], 'base64url').toString()).jti;

/** A node's report, as `pyrogate ingest` posts it with its Node key. */
async function report(url, nodeKey, body) {
  const res = await fetch(`${url}/api/nodes/report`, {
    method: 'POST',
    headers: { authorization: `Bearer ${nodeKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      version: '0.1.0',
      startedAt: Math.floor(Date.now() / 1000) - 3600,
      intervalSeconds: 15,
      keySetVersion: 2,
      revocationsVersion: 14,
      revocationsAgeSeconds: 9,
      stale: false,
      spool: { entries: 0, bytes: 0, oldestSeconds: 0, deadLetters: 0 },
      reportFailures: 0,
      refusals: {},
      usage: [],
      ...body,
    }),
  });
  assert.equal(res.status, 200, await res.text());
}

test('the Nodes page shows each reporting node and its trouble; API keys show where they were last used', { timeout: 90_000 }, async (t) => {
  const { page, url, checkNoProblems } = await open(t);
  const admin = await apiSession(url);
  const key = async (name, role, ttlSeconds = 0) => (await admin('POST', '/api/keys', { name, role, ttlSeconds })).body.key;
  const checkout = await key('checkout-service', 'Agent');
  const search = await key('search-indexer', 'Agent', 3 * 86400 + 60);
  await key('grafana-datasource', 'ReadOnly', 365 * 86400);
  const nodeKeys = {};
  for (const name of ['ingest-1', 'ingest-2', 'ingest-3']) nodeKeys[name] = await key(`${name}-node-key`, 'Node');
  const now = Math.floor(Date.now() / 1000);
  const use = (agent, name, app, pushes, ago) => ({ jti: jtiOf(agent), key: name, app, pushes, bytes: pushes * 10240, refused: 0, lastPushAt: now - ago });

  // ingest-3 reports once with a 1-second interval, then goes quiet: not reporting after 3 s.
  await report(url, nodeKeys['ingest-3'], { node: 'ingest-3', seq: 1, intervalSeconds: 1, usage: [use(search, 'search-indexer', 'search.alloc_objects', 40, 600)] });
  await report(url, nodeKeys['ingest-1'], { node: 'ingest-1', seq: 1, usage: [use(checkout, 'checkout-service', 'checkout.cpu', 120, 120)], refusals: { expired: 3 } });
  await report(url, nodeKeys['ingest-2'], {
    node: 'ingest-2',
    seq: 1,
    spool: { entries: 42, bytes: 430080, oldestSeconds: 95, deadLetters: 1 },
    usage: [use(checkout, 'checkout-service', 'checkout.cpu', 80, 300), use(checkout, 'checkout-service', 'checkout.alloc_space', 20, 300)],
  });
  await eventually('ingest-3 to be not reporting', async () => {
    const nodes = (await admin('GET', '/api/nodes')).body;
    return nodes.find((n) => n.name === 'ingest-3')?.state === 'not_reporting';
  });

  await logIn(page, url);
  await page.getByRole('navigation').getByRole('link', { name: 'Nodes' }).click();
  await page.getByRole('heading', { name: 'Nodes', level: 1 }).waitFor();
  await page.getByTestId('node-row').nth(2).waitFor();
  const state = async (name) => page.locator(`[data-testid=node-row][data-node="${name}"]`).getByTestId('node-state').textContent();
  assert.equal(await state('ingest-1'), 'OK');
  assert.equal(await state('ingest-2'), 'Spool backlog');
  assert.equal(await state('ingest-3'), 'Not reporting');
  assert.match(await text(page.locator('[data-node="ingest-2"]').getByTestId('node-spool')), /^42 pushes/);
  const warning = await text(page.getByTestId('nodes-warning'));
  assert.match(warning, /2 of 3 nodes need attention/);
  assert.match(warning, /ingest-3/);
  await shot(page, 'nodes');

  await page.getByRole('link', { name: 'API keys' }).click();
  const row = (name) => page.locator('[data-testid=api-key-row]', { has: page.getByText(name, { exact: true }) });
  await row('checkout-service').waitFor();
  // The latest push of checkout-service any node saw: ingest-1's, 2 minutes ago.
  assert.match(await text(row('checkout-service').getByTestId('api-key-last-used')), /^2 minutes ago via ingest-1, checkout\.cpu$/);
  assert.match(await text(row('search-indexer').getByTestId('api-key-last-used')), /via ingest-3, search\.alloc_objects$/);
  assert.equal(await text(row('grafana-datasource').locator('td').nth(4)), '—');
  assert.equal(await text(row('search-indexer').getByTestId('api-key-expiring')), 'expires soon');
  assert.equal(await row('grafana-datasource').getByTestId('api-key-expiring').count(), 0);
  await shot(page, 'api-keys-last-used');
  // No key here is 30 days old: the unused filter leaves none.
  await page.getByLabel('Only keys unused for 30+ days').check();
  await page.getByTestId('filter-empty').waitFor();
  await page.getByLabel('Only keys unused for 30+ days').uncheck();
  await row('checkout-service').waitFor();

  await page.getByRole('link', { name: 'Ingestion' }).click();
  const fleetRow = page.locator('[data-testid=fleet-row][data-app="checkout.cpu"]');
  await fleetRow.waitFor();
  const cells = await fleetRow.locator('td').allTextContents();
  assert.equal(cells[1], '200', 'pushes through both nodes');
  assert.equal(await text(fleetRow.getByTestId('fleet-nodes')), 'ingest-1: 120ingest-2: 80');
  await shot(page, 'ingestion-fleet');
  checkNoProblems();
});
