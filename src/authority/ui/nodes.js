// Settings → Nodes (Admin): every ingest node that reports to this server (GET /api/nodes) —
// its version, last report, key-set and revocation-list versions, spool backlog and dead
// letters — with a warning for a node that is stale, backed up or not reporting.

import { get } from './api.js';
import { h, refreshingPage, table } from './dom.js';
import { bytes, duration, exact, number, relative } from './format.js';

const STATES = {
  ok: ['OK', 'on', null],
  backlog: ['Spool backlog', 'warn', 'pushes are waiting in its spool: its upstream is down or slow'],
  stale: ['Stale', 'bad', 'its revocation list is too old: it refuses pushes (sync.max-staleness)'],
  not_reporting: ['Not reporting', 'bad', 'no report for three intervals: it is down, or cannot reach this server'],
};

export function render(main, ctx) {
  return refreshingPage(main, ctx, {
    title: 'Nodes',
    lead: 'Ingest nodes that report to this server with a Node key, and how each is doing.',
    load: () => get('/api/nodes'),
    view,
  });
}

function view(nodes) {
  if (nodes.length === 0) {
    return h(
      'div',
      { class: 'empty', 'data-testid': 'empty-state' },
      h('p', {}, h('strong', {}, 'No node has reported yet.')),
      h(
        'p',
        { class: 'muted' },
        'Create an API key with the Node role and give it to each ingest node as ',
        h('code', {}, 'authority.node-key'),
        ' (or ',
        h('code', {}, 'PYROSCOPE_AUTHORITY_NODE_KEY'),
        '); it reports every ',
        h('code', {}, 'node.report-interval'),
        '.',
      ),
    );
  }
  const now = Date.now();
  const troubled = nodes.filter((n) => n.state !== 'ok');
  const warning = troubled.length
    ? h(
        'div',
        { class: 'callout warning', role: 'alert', 'data-testid': 'nodes-warning' },
        h('strong', {}, `${troubled.length} of ${nodes.length} nodes need attention: `),
        troubled.map((n, i) => [i ? '; ' : '', h('strong', {}, n.name), ` — ${STATES[n.state]?.[2] ?? n.state}`]),
        '.',
      )
    : null;
  const rows = nodes.map((n) => {
    const [label, tone] = STATES[n.state] ?? [n.state, 'warn'];
    return h(
      'tr',
      { 'data-testid': 'node-row', 'data-node': n.name, 'data-state': n.state },
      h('td', { class: 'name' }, h('span', { 'data-testid': 'node-name' }, n.name), h('span', { class: 'muted small block' }, `pyrogate ${n.version}`)),
      h('td', {}, h('span', { class: `badge state-${tone}`, 'data-testid': 'node-state' }, label)),
      h(
        'td',
        {},
        // Seconds matter here: three missed intervals may be under a minute.
        h(
          'time',
          { datetime: n.lastReport, title: exact(n.lastReport) },
          n.secondsSinceReport < 60 ? `${n.secondsSinceReport} s ago` : relative(n.lastReport, now),
        ),
        h('span', { class: 'muted small block' }, `every ${duration(n.intervalSeconds).text}`),
      ),
      h(
        'td',
        {},
        `key set v${n.keySetVersion}`,
        h(
          'span',
          { class: 'muted small block' },
          `revocations v${n.revocationsVersion}`,
          n.revocationsAgeSeconds == null ? ', none yet' : `, signed ${duration(n.revocationsAgeSeconds).text} ago`,
        ),
      ),
      h(
        'td',
        { class: 'num', 'data-testid': 'node-spool' },
        n.spoolEntries ? `${number(n.spoolEntries)} pushes` : h('span', { class: 'muted' }, 'empty'),
        n.spoolEntries ? h('span', { class: 'muted small block' }, `${bytes(n.spoolBytes)}, oldest ${duration(n.spoolOldestSeconds).text}`) : null,
      ),
      h('td', { class: 'num' }, n.deadLetters ? h('strong', {}, number(n.deadLetters)) : h('span', { class: 'muted' }, '0')),
    );
  });
  return h(
    'div',
    {},
    warning,
    table('Ingest nodes', ['Node', 'State', 'Last report', 'Key set / revocations', 'Spool', 'Dead letters'], rows, { testid: 'nodes-table' }),
  );
}
