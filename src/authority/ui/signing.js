// Settings → Signing keys (Admin): the Ed25519 keys that sign API keys. Rotate adds a new active
// key (the old one stays published, so its keys keep working); retiring a published key
// unpublishes it, and every API key it signed stops working.

import { del, get, post } from './api.js';
import { alertBox, confirmDialog, h, pageHeader, replace, setAlert, statusLine, table } from './dom.js';
import { exact, relative } from './format.js';

const STATUS_TEXT = {
  active: 'Active',
  published: 'Published',
  retired: 'Retired',
};

export async function render(main, ctx) {
  const status = statusLine();
  const pageError = alertBox();
  const list = h('div', { class: 'list', 'aria-busy': 'true' }, h('p', { class: 'muted' }, 'Loading signing keys…'));
  const rotateButton = h('button', { type: 'button', class: 'button primary' }, 'Rotate signing key');

  const say = (message) => {
    setAlert(pageError, null);
    status.textContent = message;
  };

  async function load() {
    try {
      const keys = await get('/api/signing-keys');
      if (!ctx.isCurrent()) return;
      list.removeAttribute('aria-busy');
      replace(list, signingTable(keys, { retire }));
    } catch (err) {
      list.removeAttribute('aria-busy');
      replace(list);
      setAlert(pageError, err.errors.join('. '));
    }
  }

  rotateButton.addEventListener('click', async () => {
    rotateButton.disabled = true;
    try {
      const { kid } = await post('/api/signing-keys/rotate');
      say(`New active signing key ${kid}. The previous key stays published, so keys it signed keep working.`);
      await load();
    } catch (err) {
      setAlert(pageError, err.errors.join('. '));
    } finally {
      rotateButton.disabled = false;
    }
  });

  async function retire(key) {
    const done = await confirmDialog({
      title: 'Retire signing key',
      testid: 'retire-dialog',
      body: [
        h('p', {}, 'Retire the signing key ', h('code', {}, key.kid), '?'),
        h(
          'div',
          { class: 'callout warning' },
          h('strong', {}, 'Every API key signed by it stops working. '),
          'This server and every ingest node refuse those keys as soon as they reload the key set, and the keys are listed as deleted. Agents that use them need new keys. This can’t be undone.',
        ),
      ],
      confirmLabel: 'Retire key',
      action: () => del(`/api/signing-keys/${encodeURIComponent(key.kid)}`),
    });
    if (done) {
      say(`Retired signing key ${key.kid}.`);
      await load();
    }
  }

  replace(
    main,
    pageHeader(
      'Signing keys',
      h(
        'span',
        {},
        'New API keys are signed with the active key. Ingest nodes trust every published key (',
        h('code', {}, '/.well-known/jwks.json'),
        '). Rotate regularly; retire an old key once nothing needs the API keys it signed.',
      ),
      rotateButton,
    ),
    pageError,
    status,
    list,
  );
  await load();
}

function signingTable(keys, { retire }) {
  const now = Date.now();
  const rows = keys.map((key) =>
    h(
      'tr',
      { 'data-testid': 'signing-key-row', 'data-kid': key.kid, class: key.status === 'retired' ? 'disabled-row' : null },
      h('td', {}, h('code', { class: 'kid' }, key.kid)),
      h('td', {}, h('span', { class: `badge status-${key.status}` }, STATUS_TEXT[key.status] ?? key.status)),
      h('td', {}, h('time', { datetime: key.createdAt, title: exact(key.createdAt) }, relative(key.createdAt, now))),
      h('td', {}, key.retiredAt ? h('time', { datetime: key.retiredAt, title: exact(key.retiredAt) }, relative(key.retiredAt, now)) : h('span', { class: 'muted' }, '—')),
      h(
        'td',
        { class: 'actions-cell' },
        key.status === 'published'
          ? h('button', { type: 'button', class: 'button small danger-outline', 'aria-label': `Retire signing key ${key.kid}`, onclick: () => retire(key) }, 'Retire')
          : key.status === 'active'
            ? h('span', { class: 'muted small' }, 'signs new keys')
            : null,
      ),
    ),
  );
  return table('Signing keys', ['Key ID', 'Status', 'Created', 'Retired', h('span', { class: 'visually-hidden' }, 'Actions')], rows, {
    testid: 'signing-keys-table',
  });
}
