// Settings → Ingestion (Admin): what this server received since it started, per application.

import { get } from './api.js';
import { alertBox, h, pageHeader, replace, setAlert, table } from './dom.js';
import { bytes, exact, number, relative } from './format.js';

export async function render(main, ctx) {
  const pageError = alertBox();
  const list = h('div', { class: 'list', 'aria-busy': 'true' }, h('p', { class: 'muted' }, 'Loading…'));
  const refresh = h('button', { type: 'button', class: 'button' }, 'Refresh');

  async function load() {
    refresh.disabled = true;
    try {
      const data = await get('/api/ingestion');
      if (!ctx.isCurrent()) return;
      setAlert(pageError, null);
      list.removeAttribute('aria-busy');
      replace(list, view(data));
    } catch (err) {
      list.removeAttribute('aria-busy');
      setAlert(pageError, err.errors.join('. '));
    } finally {
      refresh.disabled = false;
    }
  }
  refresh.addEventListener('click', load);

  replace(
    main,
    pageHeader('Ingestion', 'Profiles pushed to this server since it started, per application, and the API keys that pushed them.', refresh),
    pageError,
    list,
  );
  await load();
}

function view({ apps, localStore }) {
  const store = localStore
    ? h('p', { class: 'muted', 'data-testid': 'local-store' }, `Local store: ${number(localStore.profiles)} profiles, ${bytes(localStore.bytes)}.`)
    : null;
  if (!apps || apps.length === 0) {
    return h(
      'div',
      {},
      h(
        'div',
        { class: 'empty', 'data-testid': 'empty-state' },
        h('p', {}, h('strong', {}, 'No pushes yet.')),
        h('p', { class: 'muted' }, 'Point a Pyroscope agent at ', h('code', {}, location.origin), ' with an Agent key; its application appears here.'),
      ),
      store,
    );
  }
  const now = Date.now();
  const rows = apps.map((app) =>
    h(
      'tr',
      { 'data-testid': 'ingestion-row' },
      h('td', { class: 'name' }, app.app),
      h('td', { class: 'num' }, number(app.pushes)),
      h('td', { class: 'num' }, bytes(app.bytes)),
      h('td', {}, h('time', { datetime: app.lastPushAt, title: exact(app.lastPushAt) }, relative(app.lastPushAt, now))),
      h(
        'td',
        {},
        app.keys && app.keys.length
          ? h('ul', { class: 'chips' }, app.keys.map((k) => h('li', { class: 'badge subtle' }, k)))
          : h('span', { class: 'muted' }, 'none (ingestion auth off)'),
      ),
    ),
  );
  return h('div', {}, table('Ingestion per application', ['Application', 'Pushes', 'Data', 'Last push', 'API keys'], rows, { testid: 'ingestion-table' }), store);
}
