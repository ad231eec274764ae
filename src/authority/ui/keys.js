// Settings → API keys: list (GET /api/keys), add (POST /api/keys), set a key's limit
// (PATCH /api/keys/{id}), delete (DELETE /api/keys/{id}). A new key is shown once, in the "key
// created" panel; the server keeps only its metadata. Limits are not in the key: changing one
// reaches every ingest node within a second, without a new key.

import { del, get, patch, post } from './api.js';
import { alertBox, clearErrors, confirmDialog, field, h, pageHeader, replace, setAlert, showErrors, statusLine, table } from './dom.js';
import { exact, expires, relative, ttlEcho } from './format.js';

export const ROLES = [
  ['Admin', 'manages users and keys; can also push and read profiles.'],
  ['ReadOnly', 'reads profiles, e.g. a Grafana data source.'],
  ['Agent', 'pushes profiles, e.g. a Pyroscope agent; nothing else.'],
  ['Node', 'an ingest node’s own key: reports its traffic and health to this server; nothing else.'],
];

const PRESETS = [
  ['1 day', 86400],
  ['30 days', 30 * 86400],
  ['1 year', 365 * 86400],
  ['Never', 0],
];

export async function render(main, ctx) {
  const status = statusLine();
  const pageError = alertBox();
  const slot = h('div', { class: 'slot' });
  const list = h('div', { class: 'list', 'aria-busy': 'true' }, h('p', { class: 'muted' }, 'Loading API keys…'));
  const addButton = h('button', { type: 'button', class: 'button primary', 'aria-expanded': 'false', 'aria-controls': 'add-key' }, 'Add Key');

  /** The id of the key whose "created" panel is open, if any. */
  let shownKey = null;
  const closeSlot = () => {
    shownKey = null;
    replace(slot);
    addButton.hidden = false;
    addButton.setAttribute('aria-expanded', 'false');
  };

  addButton.addEventListener('click', () => {
    addButton.hidden = true;
    addButton.setAttribute('aria-expanded', 'true');
    replace(
      slot,
      addKeyForm({
        onCancel: () => {
          closeSlot();
          addButton.focus();
        },
        onCreated: (created) => {
          replace(slot, createdPanel(created, { onDone: () => { closeSlot(); addButton.focus(); } }));
          shownKey = created.id;
          slot.querySelector('h2')?.focus();
          load();
        },
      }),
    );
    slot.querySelector('input')?.focus();
  });

  // "Unused for 30+ days": keys at least 30 days old that no node saw push for 30 days.
  let loaded = [];
  const unusedOnly = h('input', { type: 'checkbox', id: 'keys-unused', 'data-testid': 'filter-unused' });
  const filter = h('div', { class: 'filter' }, unusedOnly, h('label', { for: 'keys-unused' }, 'Only keys unused for 30+ days'));
  const show = () => {
    const keys = unusedOnly.checked ? loaded.filter((k) => k.unused) : loaded;
    replace(list, filter, keysTable(keys, { onDelete: remove, onLimit: editLimit, filtered: unusedOnly.checked }));
  };
  unusedOnly.addEventListener('change', show);

  async function load() {
    try {
      const keys = await get('/api/keys');
      if (!ctx.isCurrent()) return;
      list.removeAttribute('aria-busy');
      loaded = keys;
      show();
    } catch (err) {
      list.removeAttribute('aria-busy');
      replace(list);
      setAlert(pageError, err.errors.join('. '));
    }
  }

  async function remove(key) {
    const deleted = await confirmDialog({
      title: 'Delete API key',
      testid: 'delete-key-dialog',
      body: [
        h('p', {}, 'Delete the API key ', h('strong', { 'data-testid': 'dialog-key-name' }, `“${key.name}”`), '?'),
        h(
          'p',
          {},
          'It stops working at once: anything using it is refused, on this server and on every ingest node. This can’t be undone.',
        ),
      ],
      confirmLabel: 'Delete key',
      action: () => del(`/api/keys/${encodeURIComponent(key.id)}`),
    });
    if (deleted) {
      if (shownKey === key.id) closeSlot();
      status.textContent = `Deleted API key “${key.name}”.`;
      await load();
    }
  }

  async function editLimit(key) {
    const inputs = limitInputs('edit-limit', key.limits);
    const saved = await confirmDialog({
      title: 'Limit API key',
      testid: 'limit-key-dialog',
      danger: false,
      body: [
        h('p', {}, 'Pushes and bytes per second for ', h('strong', {}, `“${key.name}”`), ' across all ingest nodes. Leave both rates empty for no limit.'),
        inputs.el,
      ],
      confirmLabel: 'Save limit',
      action: () => patch(`/api/keys/${encodeURIComponent(key.id)}`, { limits: inputs.value() }),
    });
    if (saved) {
      status.textContent = `Saved the limit of API key “${key.name}”; ingest nodes apply it within a second.`;
      await load();
    }
  }

  replace(
    main,
    pageHeader(
      'API keys',
      'Keys let Pyroscope agents push profiles and tools such as Grafana read them. A key is shown only once, when it is created.',
      addButton,
    ),
    pageError,
    slot,
    status,
    list,
  );
  await load();
}

/** "2 min ago via ingest-3, checkout.cpu": when and where a node last saw the key push. */
function lastUsed(key, now) {
  if (!key.lastUsedAt) return h('span', { class: 'muted' }, '—');
  const when = h('time', { datetime: key.lastUsedAt, title: exact(key.lastUsedAt) }, relative(key.lastUsedAt, now));
  if (!key.lastUsedBy) return when;
  return h('span', { 'data-testid': 'api-key-last-used' }, when, ` via ${key.lastUsedBy.node}, ${key.lastUsedBy.app}`);
}

/** "10 pushes/s (burst 20) · 1 MB/s": a key's fleet-wide limit as the table shows it. */
export function describeLimits(limits) {
  if (!limits) return null;
  const parts = [];
  if (limits.pushesPerSecond != null) parts.push(`${limits.pushesPerSecond} pushes/s (burst ${limits.burstPushes})`);
  if (limits.bytesPerSecond != null) parts.push(`${limits.bytesPerSecond} bytes/s (burst ${limits.burstBytes})`);
  return parts.join(' · ');
}

/** The four limit inputs, filled from `limits`; `value()` is the API's `limits` (null: none). */
function limitInputs(prefix, limits) {
  const input = (name, label, value, step) =>
    h('label', { class: 'limit-input' }, label, h('input', { id: `${prefix}-${name}`, name, type: 'number', min: '0', step, class: 'narrow', value: value ?? '' }));
  const fields = [
    input('pushesPerSecond', 'Pushes/s ', limits?.pushesPerSecond, 'any'),
    input('burstPushes', 'Burst ', limits?.burstPushes, '1'),
    input('bytesPerSecond', 'Bytes/s ', limits?.bytesPerSecond, '1'),
    input('burstBytes', 'Burst bytes ', limits?.burstBytes, '1'),
  ];
  const el = h('div', { class: 'limits', role: 'group', 'aria-label': 'Limit', 'data-testid': `${prefix}-inputs` }, fields);
  const value = () => {
    const out = {};
    for (const f of fields) {
      const control = f.querySelector('input');
      if (control.value.trim() !== '') out[control.name] = Number(control.value);
    }
    return Object.keys(out).length ? out : null;
  };
  return { el, value };
}

function keysTable(keys, { onDelete, onLimit, filtered = false }) {
  if (filtered && keys.length === 0) {
    return h('p', { class: 'muted', 'data-testid': 'filter-empty' }, 'No key has gone unused for 30 days or more.');
  }
  if (keys.length === 0) {
    return h(
      'div',
      { class: 'empty', 'data-testid': 'empty-state' },
      h('p', {}, h('strong', {}, 'No API keys yet.')),
      h('p', { class: 'muted' }, 'Add a key to let an agent push profiles or a Grafana data source read them.'),
    );
  }
  const now = Date.now();
  const rows = keys.map((key) =>
    h(
      'tr',
      { 'data-testid': 'api-key-row', 'data-key-id': key.id },
      h(
        'td',
        { class: 'name' },
        h('span', { 'data-testid': 'api-key-name' }, key.name),
        key.tenant ? h('span', { class: 'muted small block' }, `tenant ${key.tenant}`) : null,
        key.apps ? h('span', { class: 'muted small block', 'data-testid': 'api-key-apps' }, `apps ${key.apps.join(', ')}`) : null,
        key.cidrs ? h('span', { class: 'muted small block', 'data-testid': 'api-key-cidrs' }, `from ${key.cidrs.join(', ')}`) : null,
      ),
      h('td', {}, h('span', { class: `badge role-${key.role.toLowerCase()}` }, key.role)),
      h('td', {}, h('time', { datetime: key.createdAt, title: exact(key.createdAt) }, relative(key.createdAt, now))),
      h(
        'td',
        { class: key.expiresAt && Date.parse(key.expiresAt) <= now ? 'expired' : null },
        key.expiresAt ? h('time', { datetime: key.expiresAt, title: exact(key.expiresAt) }, expires(key.expiresAt, now)) : 'never',
        key.expiringSoon ? h('span', { class: 'badge expiring subtle', 'data-testid': 'api-key-expiring' }, 'expires soon') : null,
      ),
      h('td', {}, lastUsed(key, now)),
      h(
        'td',
        {},
        key.limits ? h('span', { 'data-testid': 'api-key-limit' }, describeLimits(key.limits)) : h('span', { class: 'muted' }, 'none'),
        key.limitedRecently
          ? h('span', { class: 'badge expiring subtle', 'data-testid': 'api-key-limited', title: key.lastLimitedAt ? `last refused ${exact(key.lastLimitedAt)}` : null }, 'limited recently')
          : null,
      ),
      h(
        'td',
        { class: 'actions-cell' },
        key.role === 'Agent' || key.role === 'Admin'
          ? h('button', { type: 'button', class: 'button small', 'aria-label': `Limit API key ${key.name}`, onclick: () => onLimit(key) }, 'Limit')
          : null,
        h('button', { type: 'button', class: 'button small danger-outline', 'aria-label': `Delete API key ${key.name}`, onclick: () => onDelete(key) }, 'Delete'),
      ),
    ),
  );
  return table('API keys', ['Name', 'Role', 'Created', 'Expires', 'Last used', 'Limit', h('span', { class: 'visually-hidden' }, 'Actions')], rows, {
    testid: 'api-keys-table',
  });
}

function addKeyForm({ onCancel, onCreated }) {
  const name = field('Name', h('input', { id: 'key-name', name: 'name', autocomplete: 'off', required: true, 'aria-required': 'true' }), {
    hint: 'A unique, descriptive name, such as the service or data source that will use it.',
  });

  const roleSelect = h('select', { id: 'key-role', name: 'role' }, ROLES.map(([role]) => h('option', { value: role }, role)));
  roleSelect.value = 'ReadOnly';
  const roleHelp = h(
    'ul',
    { class: 'role-help', id: 'key-role-help' },
    ROLES.map(([role, what]) => h('li', { 'data-role': role }, h('strong', {}, role), ` — ${what}`)),
  );
  const syncRole = () => {
    for (const li of roleHelp.children) li.classList.toggle('current', li.dataset.role === roleSelect.value);
  };
  roleSelect.addEventListener('change', syncRole);
  syncRole();
  const role = field('Role', roleSelect, { extra: roleHelp });

  const ttlInput = h('input', { id: 'key-ttl', name: 'ttlSeconds', type: 'number', min: '0', step: '1', inputmode: 'numeric', value: '0', class: 'narrow' });
  const echo = h('output', { for: 'key-ttl', class: 'echo', 'data-testid': 'ttl-echo', 'aria-live': 'polite' }, ttlEcho('0'));
  const syncTtl = () => {
    echo.textContent = ttlEcho(ttlInput.value);
  };
  ttlInput.addEventListener('input', syncTtl);
  const presets = h(
    'div',
    { class: 'presets', role: 'group', 'aria-label': 'Common validity periods' },
    PRESETS.map(([label, seconds]) =>
      h('button', { type: 'button', class: 'chip', onclick: () => { ttlInput.value = String(seconds); syncTtl(); } }, label),
    ),
  );
  const ttl = field('Valid for (seconds)', ttlInput, { hint: '0 means the key never expires.', extra: [echo, presets] });

  const tenant = field('Tenant (optional)', h('input', { id: 'key-tenant', name: 'tenant', autocomplete: 'off' }), {
    hint: 'Sent upstream as X-Scope-OrgID for pushes and queries with this key. Leave empty for the default tenant.',
  });

  const apps = field('Applications (optional)', h('input', { id: 'key-apps', name: 'apps', autocomplete: 'off', placeholder: 'checkout, checkout-*' }), {
    hint: 'Comma-separated names, or prefixes ending in *. The key may push and read only these applications. Not for Admin keys.',
  });
  const cidrs = field('Source networks (optional)', h('input', { id: 'key-cidrs', name: 'cidrs', autocomplete: 'off', placeholder: '10.0.0.0/8, 2001:db8::/32' }), {
    hint: 'Comma-separated networks the key may be used from. Leave empty to allow any.',
  });

  const limitsInputs = limitInputs('key-limits', null);
  const limits = field('Limit (optional)', limitsInputs.el, {
    hint: 'Pushes and bytes per second for this key across all ingest nodes; over it, pushes get 429. Empty: the role’s default limit, if the server sets one. Changeable later without a new key.',
  });

  const formError = alertBox('form-error');
  const submit = h('button', { type: 'submit', class: 'button primary' }, 'Add API Key');
  const fields = { name, role, ttl, tenant, apps, cidrs, limits };

  const form = h(
    'form',
    { novalidate: true, class: 'form', 'aria-labelledby': 'add-key-title' },
    name.el,
    role.el,
    ttl.el,
    tenant.el,
    apps.el,
    cidrs.el,
    limits.el,
    formError,
    h('div', { class: 'actions' }, submit, h('button', { type: 'button', class: 'button', onclick: onCancel }, 'Cancel')),
  );

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(fields, formError);
    const raw = ttlInput.value.trim();
    const body = {
      name: name.control.value,
      role: roleSelect.value,
      ttlSeconds: raw === '' ? 0 : Number(raw),
    };
    if (tenant.control.value.trim()) body.tenant = tenant.control.value.trim();
    const list = (input) => input.control.value.split(',').map((s) => s.trim()).filter((s) => s !== '');
    if (list(apps).length) body.apps = list(apps);
    if (list(cidrs).length) body.cidrs = list(cidrs);
    if (limitsInputs.value()) body.limits = limitsInputs.value();
    submit.disabled = true;
    try {
      const created = await post('/api/keys', body);
      onCreated(created);
    } catch (err) {
      showErrors(fields, formError, err.errors, fieldOf);
    } finally {
      submit.disabled = false;
    }
  });

  return h('section', { class: 'panel', id: 'add-key', 'aria-labelledby': 'add-key-title' }, h('h2', { id: 'add-key-title' }, 'Add API key'), form);
}

/** Which field an API message is about. */
function fieldOf(message) {
  const m = message.toLowerCase();
  if (m.startsWith('apps:')) return 'apps';
  if (m.startsWith('cidrs:')) return 'cidrs';
  if (m.startsWith('limits')) return 'limits';
  if (m.includes('tenant')) return 'tenant';
  if (m.includes('ttl')) return 'ttl';
  if (m.includes('role')) return 'role';
  if (m.includes('name')) return 'name';
  return null;
}

function createdPanel(created, { onDone }) {
  const input = h('input', {
    id: 'new-api-key',
    class: 'mono key-output',
    readOnly: true,
    value: created.key,
    'data-testid': 'new-api-key',
    spellcheck: 'false',
    'aria-describedby': 'new-key-warning',
  });
  input.addEventListener('focus', () => input.select());
  const copied = h('p', { class: 'copied', role: 'status', 'data-testid': 'copied-notice', hidden: true }, 'Key has been copied');
  const copyError = h('p', { class: 'alert', role: 'alert', hidden: true });
  const copy = h('button', { type: 'button', class: 'button primary' }, 'Copy');
  copy.addEventListener('click', async () => {
    copied.hidden = true;
    setAlert(copyError, null);
    if (await copyText(input)) {
      copied.hidden = false;
    } else {
      setAlert(copyError, 'Copying failed: select the key and copy it yourself.');
      input.focus();
    }
  });

  const pushes = created.role !== 'ReadOnly';
  const origin = location.origin;
  const snippet = [
    '# Keep the key in your secret store, e.g. as PYROGATE_KEY. Agents send it either',
    '# as a bearer token (Go AuthToken, Node authToken, any HTTP client):',
    'Authorization: Bearer $PYROGATE_KEY',
    '',
    '# as the auth token setting of the Java agent and the pyroscope CLI:',
    'PYROSCOPE_AUTH_TOKEN=$PYROGATE_KEY',
    '',
    '# or as the password of HTTP Basic auth (Python pyroscope-io, .NET); any user name:',
    'basic_auth_username = "my-app"',
    'basic_auth_password = $PYROGATE_KEY',
    '',
    pushes
      ? `# Try it: push a profile to ${origin}`
      : '# Grafana: add a Pyroscope data source with the header Authorization: Bearer <key>',
    pushes ? 'curl -H "Authorization: Bearer $PYROGATE_KEY" \\' : null,
    pushes ? '     --data-binary @cpu.pprof \\' : null,
    pushes ? `     "${origin}/ingest?name=my-app.cpu&format=pprof"` : null,
  ]
    .filter((line) => line !== null)
    .join('\n');

  const summary = [created.role, created.expiresAt ? `expires ${exact(created.expiresAt)}` : 'never expires'];
  if (created.tenant) summary.push(`tenant ${created.tenant}`);
  if (created.apps) summary.push(`apps ${created.apps.join(', ')}`);
  if (created.cidrs) summary.push(`from ${created.cidrs.join(', ')}`);
  if (created.limits) summary.push(`limit ${describeLimits(created.limits)}`);

  return h(
    'section',
    { class: 'panel created', 'aria-labelledby': 'created-title', 'data-testid': 'key-created' },
    h('h2', { id: 'created-title', tabindex: '-1' }, `API key “${created.name}” created`),
    h('p', { class: 'muted' }, summary.join(' · ')),
    h(
      'div',
      { class: 'callout warning', id: 'new-key-warning' },
      h('strong', {}, 'Copy the key now. '),
      'It cannot be shown again: pyrogate keeps only its name and metadata. If it is lost, delete it and add a new one.',
    ),
    h('div', { class: 'field' }, h('label', { for: input.id }, 'API key'), h('div', { class: 'copy-row' }, input, copy)),
    copied,
    copyError,
    h('h3', {}, 'Using the key'),
    h('pre', { class: 'snippet', 'data-testid': 'usage-snippet' }, h('code', {}, snippet)),
    h('div', { class: 'actions' }, h('button', { type: 'button', class: 'button', onclick: onDone }, 'Done')),
  );
}

/** The Clipboard API where allowed; otherwise select the text and use the legacy copy command. */
async function copyText(input) {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(input.value);
      return true;
    }
  } catch {
    // Permission denied or not focused: fall back below.
  }
  try {
    input.focus();
    input.select();
    input.setSelectionRange(0, input.value.length);
    return document.execCommand('copy');
  } catch {
    return false;
  }
}
