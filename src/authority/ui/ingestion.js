// Settings → Ingestion (Admin): per application, fleet-wide from the ingest nodes' reports (with
// each node's share and the keys that pushed), and what this server itself received since it
// started.

import { get } from './api.js';
import { h, refreshingPage, table } from './dom.js';
import { bytes, exact, number, relative } from './format.js';

export function render(main, ctx) {
  return refreshingPage(main, ctx, {
    title: 'Ingestion',
    lead: 'Profiles pushed per application, and the API keys that pushed them: through every reporting ingest node, and to this server itself.',
    load: () => get('/api/ingestion'),
    view,
  });
}

/** The fleet-wide table: per application, its totals, its keys and each node's share. */
function fleetView(fleet) {
  const now = Date.now();
  const chips = (items, field, testid) =>
    h(
      'ul',
      { class: 'chips', 'data-testid': testid },
      items.map((x) => h('li', { class: 'badge subtle', title: `${number(x.pushes)} pushes, ${bytes(x.bytes)}` }, `${x[field] || '(no key)'}: ${number(x.pushes)}`)),
    );
  const rows = fleet.map((app) =>
    h(
      'tr',
      { 'data-testid': 'fleet-row', 'data-app': app.app },
      h('td', { class: 'name' }, app.app),
      h('td', { class: 'num' }, number(app.pushes), app.refused ? h('span', { class: 'muted small block' }, `${number(app.refused)} refused`) : null),
      h('td', { class: 'num' }, bytes(app.bytes)),
      h('td', {}, app.lastPushAt ? h('time', { datetime: app.lastPushAt, title: exact(app.lastPushAt) }, relative(app.lastPushAt, now)) : '—'),
      h('td', {}, chips(app.keys, 'key', 'fleet-keys')),
      h('td', {}, chips(app.nodes, 'node', 'fleet-nodes')),
    ),
  );
  return h(
    'section',
    { 'aria-labelledby': 'fleet-heading' },
    h('h2', { id: 'fleet-heading' }, 'All ingest nodes'),
    table('Ingestion per application across the fleet', ['Application', 'Pushes', 'Data', 'Last push', 'API keys', 'Nodes'], rows, { testid: 'fleet-table' }),
  );
}

function view({ apps, localStore, fleet }) {
  const fleetPart = fleet && fleet.length ? fleetView(fleet) : null;
  const local = localView(apps, localStore, !fleetPart);
  return h('div', {}, fleetPart, fleetPart && local ? h('h2', {}, 'This server') : null, local);
}

function localView(apps, localStore, alone) {
  const store = localStore
    ? h('p', { class: 'muted', 'data-testid': 'local-store' }, `Local store: ${number(localStore.profiles)} profiles, ${bytes(localStore.bytes)}.`)
    : null;
  if ((!apps || apps.length === 0) && !alone) return store;
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
