// Profile: who is logged in, and changing one's own password (PUT /api/user/password).

import { put } from './api.js';
import { alertBox, clearErrors, field, h, pageHeader, replace, showErrors, statusLine } from './dom.js';
import { exact } from './format.js';

const ROLE_TEXT = {
  Admin: 'manages users, API keys and signing keys',
  ReadOnly: 'no access to Settings',
  Agent: 'no access to Settings',
};

export async function render(main, { me }) {
  const details = h(
    'dl',
    { class: 'details', 'data-testid': 'profile-details' },
    row('User name', me.name),
    me.fullName ? row('Full name', me.fullName) : null,
    row('Email', me.email || h('span', { class: 'muted' }, 'not set')),
    row('Role', h('span', {}, h('span', { class: 'badge' }, me.role), ' ', h('span', { class: 'muted' }, ROLE_TEXT[me.role] ?? ''))),
    row('Member since', exact(me.createdAt)),
    row('Password changed', exact(me.passwordChangedAt)),
  );
  replace(
    main,
    pageHeader('Profile', 'Your account on this pyrogate server.'),
    h('section', { class: 'panel', 'aria-labelledby': 'account-title' }, h('h2', { id: 'account-title' }, 'Account'), details),
    passwordForm(me),
  );
}

function row(term, value) {
  return [h('dt', {}, term), h('dd', {}, value)];
}

function passwordForm(me) {
  const current = field('Current password', h('input', { id: 'current-password', type: 'password', autocomplete: 'current-password', required: true }));
  const next = field('New password', h('input', { id: 'new-password', type: 'password', autocomplete: 'new-password', required: true }), {
    hint: '8 to 1024 characters.',
  });
  const confirm = field('Confirm new password', h('input', { id: 'confirm-password', type: 'password', autocomplete: 'new-password', required: true }));
  const formError = alertBox('form-error');
  const status = statusLine();
  const submit = h('button', { type: 'submit', class: 'button primary' }, 'Change password');
  const fields = { current, next, confirm };
  // Lets password managers tie the new password to this account.
  const username = h('input', { type: 'text', autocomplete: 'username', value: me.name, hidden: true, readOnly: true, tabindex: '-1', 'aria-hidden': 'true' });
  const form = h(
    'form',
    { novalidate: true, class: 'form', 'aria-labelledby': 'password-title' },
    username,
    current.el,
    next.el,
    confirm.el,
    formError,
    h('div', { class: 'actions' }, submit),
    status,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(fields, formError);
    status.textContent = '';
    if (next.control.value !== confirm.control.value) {
      showErrors(fields, formError, ['The new passwords do not match.'], () => 'confirm');
      return;
    }
    submit.disabled = true;
    try {
      await put('/api/user/password', { oldPassword: current.control.value, newPassword: next.control.value });
      for (const f of Object.values(fields)) f.control.value = '';
      status.textContent = 'Password changed. Your other sessions have been logged out.';
    } catch (err) {
      showErrors(fields, formError, err.errors, (message) => {
        const m = message.toLowerCase();
        if (m.includes('current password')) return 'current';
        if (m.includes('password')) return 'next';
        return null;
      });
    } finally {
      submit.disabled = false;
    }
  });
  return h('section', { class: 'panel', 'aria-labelledby': 'password-title' }, h('h2', { id: 'password-title' }, 'Change password'), form);
}
