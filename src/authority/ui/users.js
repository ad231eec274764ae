// Settings → Users (Admin): list, create, change role, disable/enable, reset password.

import { get, post, put } from './api.js';
import { alertBox, clearErrors, confirmDialog, field, h, pageHeader, replace, setAlert, showErrors, statusLine, table, uid } from './dom.js';
import { exact, relative } from './format.js';
import { ROLES } from './keys.js';

const USER_ROLES = [
  ['Admin', 'manages users, API keys and signing keys.'],
  ['ReadOnly', 'can log in and manage their own profile; no access to Settings.'],
  ['Agent', 'the same as ReadOnly in the UI; the role matters for API keys.'],
];

export async function render(main, ctx) {
  const status = statusLine();
  const pageError = alertBox();
  const slot = h('div', { class: 'slot' });
  const list = h('div', { class: 'list', 'aria-busy': 'true' }, h('p', { class: 'muted' }, 'Loading users…'));
  const addButton = h('button', { type: 'button', class: 'button primary', 'aria-expanded': 'false' }, 'Add user');

  const say = (message) => {
    setAlert(pageError, null);
    status.textContent = message;
  };
  const fail = (err) => {
    status.textContent = '';
    setAlert(pageError, err.errors.join('. '));
  };

  const closeSlot = () => {
    replace(slot);
    addButton.hidden = false;
    addButton.setAttribute('aria-expanded', 'false');
    addButton.focus();
  };
  addButton.addEventListener('click', () => {
    addButton.hidden = true;
    addButton.setAttribute('aria-expanded', 'true');
    replace(
      slot,
      addUserForm({
        onCancel: closeSlot,
        onCreated: async (user) => {
          closeSlot();
          say(`Created user “${user.name}” with the ${user.role} role.`);
          await load();
        },
      }),
    );
    slot.querySelector('input')?.focus();
  });

  async function load() {
    try {
      const users = await get('/api/users');
      if (!ctx.isCurrent()) return;
      list.removeAttribute('aria-busy');
      replace(list, usersTable(users, ctx.me, { changeRole, toggle, resetPassword }));
    } catch (err) {
      list.removeAttribute('aria-busy');
      replace(list);
      fail(err);
    }
  }

  async function changeRole(user, select) {
    const role = select.value;
    select.disabled = true;
    try {
      await put(`/api/users/${user.id}/role`, { role });
      say(`${user.name} now has the ${role} role.`);
      if (user.id === ctx.me.id) return ctx.refreshMe();
      await load();
    } catch (err) {
      select.value = user.role;
      fail(err);
    } finally {
      select.disabled = false;
    }
  }

  async function toggle(user) {
    const disabling = !user.isDisabled;
    if (disabling) {
      const ok = await confirmDialog({
        title: 'Disable user',
        body: [
          h('p', {}, 'Disable ', h('strong', {}, `“${user.name}”`), '?'),
          'They are logged out at once and can’t log in until an admin enables them again. The API keys they created are revoked with them (nodes refuse them within seconds).',
        ],
        confirmLabel: 'Disable user',
        action: () => put(`/api/users/${user.id}/disable`),
      });
      if (!ok) return;
      say(`Disabled ${user.name}.`);
    } else {
      try {
        await put(`/api/users/${user.id}/enable`);
        say(`Enabled ${user.name}.`);
      } catch (err) {
        return fail(err);
      }
    }
    await load();
  }

  async function resetPassword(user) {
    const input = h('input', { id: uid('reset-password'), type: 'password', autocomplete: 'new-password', minlength: '8' });
    const done = await confirmDialog({
      title: 'Reset password',
      danger: false,
      body: [
        h('p', {}, 'Set a new password for ', h('strong', {}, `“${user.name}”`), '. Their sessions end at once.'),
        h('div', { class: 'field' }, h('label', { for: input.id }, 'New password'), input, h('p', { class: 'hint' }, '8 to 1024 characters. Give it to them through a safe channel.')),
      ],
      confirmLabel: 'Set password',
      action: () => put(`/api/users/${user.id}/password`, { password: input.value }),
    });
    if (done) say(`The password of ${user.name} has been reset.`);
  }

  replace(main, pageHeader('Users', 'People who can log in to pyrogate. Only admins see Settings.', addButton), pageError, slot, status, list);
  await load();
}

/** `https://idp.example/realms/x` → `idp.example`. */
function hostOf(url) {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}

function usersTable(users, me, { changeRole, toggle, resetPassword }) {
  const now = Date.now();
  const rows = users.map((user) => {
    const select = h(
      'select',
      { class: 'compact', 'aria-label': `Role of ${user.name}`, 'data-testid': 'user-role' },
      ROLES.map(([role]) => h('option', { value: role }, role)),
    );
    select.value = user.role;
    select.addEventListener('change', () => changeRole(user, select));
    const self = user.id === me.id;
    return h(
      'tr',
      { 'data-testid': 'user-row', 'data-user-id': user.id, class: user.isDisabled ? 'disabled-row' : null },
      h(
        'td',
        { class: 'name' },
        h('span', { 'data-testid': 'user-name' }, user.name),
        self ? h('span', { class: 'badge subtle' }, 'you') : null,
        user.fullName ? h('span', { class: 'muted small block' }, user.fullName) : null,
      ),
      h('td', {}, user.email || h('span', { class: 'muted' }, '—')),
      h(
        'td',
        { 'data-testid': 'user-sign-in' },
        user.ssoIssuer
          ? [
              h('span', { class: 'badge subtle', title: user.ssoIssuer }, `SSO · ${hostOf(user.ssoIssuer)}`),
              user.groups?.length ? h('span', { class: 'muted small block', 'data-testid': 'user-groups', title: 'Groups at the last sign-in' }, user.groups.join(', ')) : null,
            ]
          : h('span', { class: 'muted' }, 'Password'),
      ),
      h('td', {}, select),
      h('td', {}, h('span', { class: user.isDisabled ? 'badge off' : 'badge on' }, user.isDisabled ? 'Disabled' : 'Active')),
      h('td', {}, user.lastSeenAt ? h('time', { datetime: user.lastSeenAt, title: exact(user.lastSeenAt) }, relative(user.lastSeenAt, now)) : h('span', { class: 'muted' }, 'never')),
      h(
        'td',
        { class: 'actions-cell' },
        user.ssoIssuer
          ? null
          : h('button', { type: 'button', class: 'button small', 'aria-label': `Reset password of ${user.name}`, onclick: () => resetPassword(user) }, 'Reset password'),
        self
          ? null
          : h(
              'button',
              { type: 'button', class: user.isDisabled ? 'button small' : 'button small danger-outline', 'aria-label': `${user.isDisabled ? 'Enable' : 'Disable'} ${user.name}`, onclick: () => toggle(user) },
              user.isDisabled ? 'Enable' : 'Disable',
            ),
      ),
    );
  });
  return table('Users', ['Name', 'Email', 'Signs in with', 'Role', 'Status', 'Last seen', h('span', { class: 'visually-hidden' }, 'Actions')], rows, { testid: 'users-table' });
}

function addUserForm({ onCancel, onCreated }) {
  const name = field('User name', h('input', { id: 'user-name', autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false', required: true, 'aria-required': 'true' }), {
    hint: 'What they type to log in.',
  });
  const email = field('Email (optional)', h('input', { id: 'user-email', type: 'email', autocomplete: 'off' }));
  const password = field('Password', h('input', { id: 'user-password', type: 'password', autocomplete: 'new-password', required: true, 'aria-required': 'true' }), {
    hint: '8 to 1024 characters.',
  });
  const roleSelect = h('select', { id: 'user-role' }, USER_ROLES.map(([role]) => h('option', { value: role }, role)));
  roleSelect.value = 'ReadOnly';
  const roleHelp = h('ul', { class: 'role-help' }, USER_ROLES.map(([role, what]) => h('li', { 'data-role': role }, h('strong', {}, role), ` — ${what}`)));
  const sync = () => {
    for (const li of roleHelp.children) li.classList.toggle('current', li.dataset.role === roleSelect.value);
  };
  roleSelect.addEventListener('change', sync);
  sync();
  const role = field('Role', roleSelect, { extra: roleHelp });
  const formError = alertBox('form-error');
  const submit = h('button', { type: 'submit', class: 'button primary' }, 'Create user');
  const fields = { name, email, password, role };
  const form = h(
    'form',
    { novalidate: true, class: 'form', 'aria-labelledby': 'add-user-title' },
    name.el,
    email.el,
    password.el,
    role.el,
    formError,
    h('div', { class: 'actions' }, submit, h('button', { type: 'button', class: 'button', onclick: onCancel }, 'Cancel')),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(fields, formError);
    submit.disabled = true;
    try {
      const user = await post('/api/users', {
        name: name.control.value,
        email: email.control.value.trim(),
        password: password.control.value,
        role: roleSelect.value,
      });
      await onCreated(user);
    } catch (err) {
      showErrors(fields, formError, err.errors, (message) => {
        const m = message.toLowerCase();
        if (m.includes('password')) return 'password';
        if (m.includes('email')) return 'email';
        if (m.includes('role')) return 'role';
        if (m.includes('name')) return 'name';
        return null;
      });
    } finally {
      submit.disabled = false;
    }
  });
  return h('section', { class: 'panel', 'aria-labelledby': 'add-user-title' }, h('h2', { id: 'add-user-title' }, 'Add user'), form);
}
