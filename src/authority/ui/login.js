// /login: user name and password → POST /api/login, which sets the session cookie; with single
// sign-on (GET /api/login/methods says so) a "Sign in with <provider>" button too, a plain link
// to GET /auth/oidc/login?next=… (the server checks `next` again).

import { get, post } from './api.js';
import { h, setAlert } from './dom.js';

export function view({ onLoggedIn }) {
  const username = h('input', {
    id: 'login-username',
    name: 'username',
    autocomplete: 'username',
    autocapitalize: 'none',
    spellcheck: 'false',
    required: true,
  });
  const password = h('input', {
    id: 'login-password',
    name: 'password',
    type: 'password',
    autocomplete: 'current-password',
    required: true,
  });
  const error = h('p', { class: 'alert', role: 'alert', 'data-testid': 'login-error', hidden: true });
  const submit = h('button', { type: 'submit', class: 'button primary wide' }, 'Log in');

  const form = h(
    'form',
    { class: 'login-form', novalidate: true, 'aria-labelledby': 'login-title' },
    h('div', { class: 'field' }, h('label', { for: username.id }, 'User name'), username),
    h('div', { class: 'field' }, h('label', { for: password.id }, 'Password'), password),
    error,
    submit,
  );

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    setAlert(error, null);
    if (!username.value || !password.value) {
      setAlert(error, 'Enter your user name and password.');
      (username.value ? password : username).focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = 'Logging in…';
    try {
      await post('/api/login', { username: username.value, password: password.value });
      await onLoggedIn();
    } catch (err) {
      setAlert(error, capitalize((err.errors ?? [String(err)]).join('. ')));
      password.value = '';
      password.focus();
    } finally {
      submit.disabled = false;
      submit.textContent = 'Log in';
    }
  });

  const sso = h('div', { class: 'sso', hidden: true });
  const card = h(
    'div',
    { class: 'login-card' },
    h('div', { class: 'login-brand' }, h('img', { src: '/assets/favicon.svg', alt: '', width: '32', height: '32' }), 'pyrogate'),
    h('h1', { id: 'login-title' }, 'Log in'),
    h('p', { class: 'lead' }, 'API keys for continuous profiling.'),
    sso,
    form,
  );
  get('/api/login/methods')
    .then((methods) => {
      if (methods.sso) {
        const here = new URLSearchParams(location.search).get('next') ?? '';
        const next = here.startsWith('/') && !here.startsWith('//') && !here.startsWith('/\\') ? here : '/';
        sso.append(
          h('a', { class: 'button primary wide', href: `${methods.sso.url}?next=${encodeURIComponent(next)}`, 'data-testid': 'sso-login' }, `Sign in with ${methods.sso.name}`),
        );
        if (methods.password) sso.append(h('p', { class: 'divider muted' }, 'or with a user name and password'));
        sso.hidden = false;
      }
      if (!methods.password) form.hidden = true;
      else queueMicrotask(() => username.focus());
    })
    .catch(() => queueMicrotask(() => username.focus()));
  return h('main', { class: 'login-page' }, card);
}

const capitalize = (text) => text.charAt(0).toUpperCase() + text.slice(1);
