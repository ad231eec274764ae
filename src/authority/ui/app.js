// pyrogate's web UI: the shell (sidebar, routing, session) around one page module per screen.
// Routing is client-side with history.pushState; the server answers every page path with this
// same index.html. Pages talk to the JSON API documented in docs/api.md, nothing else.

import { get, post, setUnauthorizedHandler } from './api.js';
import { h, replace } from './dom.js';
import * as ingestion from './ingestion.js';
import * as keys from './keys.js';
import * as login from './login.js';
import * as nodes from './nodes.js';
import * as profile from './profile.js';
import * as signing from './signing.js';
import * as users from './users.js';

const PAGES = {
  '/settings/api-keys': { title: 'API keys', admin: true, page: keys },
  '/settings/users': { title: 'Users', admin: true, page: users },
  '/settings/signing-keys': { title: 'Signing keys', admin: true, page: signing },
  '/settings/ingestion': { title: 'Ingestion', admin: true, page: ingestion },
  '/settings/nodes': { title: 'Nodes', admin: true, page: nodes },
  '/profile': { title: 'Profile', admin: false, page: profile },
};

const SETTINGS_LINKS = [
  ['/settings/api-keys', 'API keys'],
  ['/settings/users', 'Users'],
  ['/settings/signing-keys', 'Signing keys'],
  ['/settings/ingestion', 'Ingestion'],
  ['/settings/nodes', 'Nodes'],
];

const root = document.getElementById('app');
/** The logged-in user (GET /api/user), or null before it is known. */
let me = null;
/** Bumped on every navigation, so a slow page can tell it is no longer on screen. */
let generation = 0;

const isAdmin = () => me && me.role === 'Admin';

export function navigate(path, { replace: replaceEntry = false } = {}) {
  if (replaceEntry) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  render();
}

/** Where a logged-in user lands by default. */
const home = () => (isAdmin() ? '/settings/api-keys' : '/profile');

/** `next` from /login?next=…, if it is a path on this site (never another origin). */
function safeNext() {
  const next = new URLSearchParams(location.search).get('next');
  if (!next || !next.startsWith('/') || next.startsWith('//') || next.startsWith('/\\')) return null;
  try {
    const url = new URL(next, location.origin);
    if (url.origin !== location.origin || url.pathname.startsWith('/api/') || url.pathname === '/login') return null;
    return url.pathname + url.search + url.hash;
  } catch {
    return null;
  }
}

function toLogin() {
  me = null;
  const here = location.pathname + location.search;
  const next = here === '/' || location.pathname === '/login' ? '' : `?next=${encodeURIComponent(here)}`;
  navigate(`/login${next}`, { replace: true });
}

async function loadMe() {
  try {
    me = await get('/api/user');
  } catch (err) {
    me = null;
    if (err.status !== 401) throw err;
  }
  return me;
}

async function render() {
  generation += 1;
  const path = location.pathname.replace(/\/+$/, '') || '/';
  if (path === '/login') {
    document.title = 'Log in · pyrogate';
    // Already logged in: go where the user was going.
    if (me || (await loadMe().catch(() => null))) return navigate(safeNext() ?? home(), { replace: true });
    replace(root, login.view({ onLoggedIn: loggedIn }));
    return;
  }
  if (!me) {
    try {
      if (!(await loadMe())) return toLogin();
    } catch (err) {
      replace(root, h('main', { class: 'boot-error' }, h('h1', {}, 'pyrogate'), h('p', { role: 'alert' }, err.message)));
      return;
    }
  }
  if (path === '/' || path === '/settings') return navigate(home(), { replace: true });
  const entry = PAGES[path];
  const main = h('main', { id: 'main', class: 'main' });
  replace(root, shell(path), main);
  if (!entry) {
    document.title = 'Not found · pyrogate';
    replace(main, h('h1', { tabindex: '-1' }, 'Page not found'), h('p', {}, 'There is no page at ', h('code', {}, path), '.'));
    return;
  }
  document.title = `${entry.title} · pyrogate`;
  if (entry.admin && !isAdmin()) {
    replace(
      main,
      h('h1', { tabindex: '-1' }, entry.title),
      h(
        'div',
        { class: 'callout', role: 'alert', 'data-testid': 'needs-admin' },
        h('strong', {}, 'You need the Admin role to see this page. '),
        `You are logged in as ${me.name} with the ${me.role} role. Ask an admin if you need access.`,
      ),
    );
  } else {
    const mine = generation;
    await entry.page.render(main, {
      me,
      navigate,
      isCurrent: () => mine === generation,
      refreshMe: async () => {
        await loadMe();
        if (!me) return toLogin();
        render();
      },
    });
  }
  const heading = main.querySelector('h1');
  if (heading && document.activeElement === document.body) heading.focus({ preventScroll: true });
}

function loggedIn() {
  me = null;
  return loadMe().then(() => navigate(safeNext() ?? home(), { replace: true }));
}

async function logout() {
  try {
    await post('/api/logout');
  } finally {
    me = null;
    navigate('/login', { replace: true });
  }
}

function link(href, text, current) {
  return h('a', { href, class: 'nav-link', 'aria-current': href === current ? 'page' : null }, text);
}

function shell(current) {
  const settings = isAdmin()
    ? h(
        'li',
        {},
        h(
          'a',
          { href: '/settings', class: 'nav-link nav-section', 'aria-current': current.startsWith('/settings') ? 'true' : null },
          'Settings',
        ),
        h('ul', { class: 'nav-sub' }, SETTINGS_LINKS.map(([href, text]) => h('li', {}, link(href, text, current)))),
      )
    : null;
  return h(
    'aside',
    { class: 'sidebar' },
    h(
      'div',
      { class: 'sidebar-inner' },
      h('a', { href: '/', class: 'brand' }, h('img', { src: '/assets/favicon.svg', alt: '', width: '24', height: '24' }), 'pyrogate'),
      h('nav', { 'aria-label': 'Main', class: 'nav' }, h('ul', {}, settings, h('li', {}, link('/profile', 'Profile', current)))),
      h(
        'div',
        { class: 'whoami' },
        h('span', { class: 'whoami-name', 'data-testid': 'current-user', title: me.name }, me.name),
        h('span', { class: 'badge' }, me.role),
        h('button', { type: 'button', class: 'button small', onclick: logout }, 'Log out'),
      ),
    ),
  );
}

// Same-origin links navigate in place; modified clicks (new tab…) keep their default. The API,
// assets and the single sign-on routes (/auth/…, answered by the server) load for real.
document.addEventListener('click', (event) => {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const a = event.target instanceof Element ? event.target.closest('a[href]') : null;
  if (!a || a.target || a.hasAttribute('download')) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || ['/api/', '/assets/', '/auth/'].some((p) => url.pathname.startsWith(p))) return;
  event.preventDefault();
  if (url.pathname + url.search !== location.pathname + location.search) navigate(url.pathname + url.search);
});

window.addEventListener('popstate', render);
setUnauthorizedHandler(() => {
  if (location.pathname !== '/login') toLogin();
});
render();
