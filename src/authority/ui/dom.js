// Building the page without innerHTML: every value from the API becomes a text node, so
// nothing a user typed (a key name, a user name) can ever turn into markup or script.

/**
 * h('button', {class: 'primary', onclick: fn}, 'Save') → <button class="primary">Save</button>
 *
 * Attributes: `class`, `for` and plain names are set as attributes; `on…` functions become
 * listeners; `hidden`, `disabled`, `required`, `readOnly`, `checked`, `selected` and `value` are
 * set as properties; `null`/`undefined`/`false` leave the attribute out.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else if (PROPS.has(name)) {
      el[name] = value;
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

const PROPS = new Set(['hidden', 'disabled', 'required', 'readOnly', 'checked', 'selected', 'value']);

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let ids = 0;
/** A document-unique id for label/input pairs. */
export function uid(prefix) {
  ids += 1;
  return `${prefix}-${ids}`;
}

/**
 * A labelled form field with a hint and an error slot:
 *   <div class="field"><label for=…>…</label> control <p class="hint"> <p class="field-error">
 * `control` is the input/select; it gets the id, `aria-describedby` and `aria-invalid`.
 */
export function field(labelText, control, { hint, extra } = {}) {
  const id = control.id || uid('field');
  control.id = id;
  const hintEl = hint ? h('p', { class: 'hint', id: `${id}-hint` }, hint) : null;
  const errorEl = h('p', {
    class: 'field-error',
    id: `${id}-error`,
    role: 'alert',
    'data-testid': 'field-error',
    hidden: true,
  });
  control.setAttribute('aria-describedby', [hintEl && hintEl.id, errorEl.id].filter(Boolean).join(' '));
  const wrap = h('div', { class: 'field' }, h('label', { for: id }, labelText), control, extra, hintEl, errorEl);
  return {
    el: wrap,
    control,
    setError(message) {
      errorEl.textContent = message ?? '';
      errorEl.hidden = !message;
      if (message) control.setAttribute('aria-invalid', 'true');
      else control.removeAttribute('aria-invalid');
    },
  };
}

/**
 * Shows API errors next to the fields they are about. `route(message)` names a field key (or
 * null); what no field claims goes to `fallback`, an element with role="alert".
 */
export function showErrors(fields, fallback, messages, route) {
  const byField = new Map();
  const rest = [];
  for (const message of messages) {
    const key = route(message);
    if (key && fields[key]) byField.set(key, [...(byField.get(key) ?? []), message]);
    else rest.push(message);
  }
  for (const [key, f] of Object.entries(fields)) {
    const list = byField.get(key);
    f.setError(list ? list.join('. ') : null);
  }
  fallback.textContent = rest.join('. ');
  fallback.hidden = rest.length === 0;
  const first = Object.entries(fields).find(([key]) => byField.has(key));
  if (first) first[1].control.focus();
}

/** Clears every field error and the fallback alert. */
export function clearErrors(fields, fallback) {
  for (const f of Object.values(fields)) f.setError(null);
  fallback.textContent = '';
  fallback.hidden = true;
}

/** A page-level alert element, hidden until it has something to say. */
export function alertBox(testid = 'page-error') {
  return h('p', { class: 'alert', role: 'alert', 'data-testid': testid, hidden: true });
}

export function setAlert(el, message) {
  el.textContent = message ?? '';
  el.hidden = !message;
}

/** A polite status line ("Deleted key …"), announced by screen readers. */
export function statusLine(testid = 'status') {
  return h('p', { class: 'status', role: 'status', 'aria-live': 'polite', 'data-testid': testid });
}

/**
 * A modal confirmation built on <dialog>. Resolves to true when `confirm` is clicked and the
 * `action` (if any) succeeds; an action's thrown API errors are shown inside the dialog.
 */
export function confirmDialog({ title, body, confirmLabel, danger = true, action, testid = 'confirm-dialog' }) {
  return new Promise((resolve) => {
    const titleId = uid('dialog-title');
    const error = h('p', { class: 'alert', role: 'alert', hidden: true });
    const cancel = h('button', { type: 'button', class: 'button' }, 'Cancel');
    const confirm = h('button', { type: 'button', class: danger ? 'button danger' : 'button primary' }, confirmLabel);
    const dialog = h(
      'dialog',
      { class: 'dialog', 'aria-labelledby': titleId, 'data-testid': testid },
      h('h2', { id: titleId }, title),
      ...[body].flat().map((p) => (p instanceof Node ? p : h('p', {}, p))),
      error,
      h('div', { class: 'actions' }, cancel, confirm),
    );
    let done = false;
    const finish = (result) => {
      if (done) return;
      done = true;
      dialog.close();
      dialog.remove();
      resolve(result);
    };
    cancel.addEventListener('click', () => finish(false));
    dialog.addEventListener('cancel', (event) => {
      event.preventDefault();
      finish(false);
    });
    confirm.addEventListener('click', async () => {
      if (!action) return finish(true);
      confirm.disabled = true;
      cancel.disabled = true;
      try {
        await action();
        finish(true);
      } catch (err) {
        setAlert(error, (err.errors ?? [String(err)]).join('. '));
        confirm.disabled = false;
        cancel.disabled = false;
      }
    });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

/** A table with a header row; `rows` are <tr> elements. */
export function table(caption, headers, rows, { testid } = {}) {
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { class: 'table', 'data-testid': testid },
      h('caption', { class: 'visually-hidden' }, caption),
      h('thead', {}, h('tr', {}, headers.map((text) => h('th', { scope: 'col' }, text)))),
      h('tbody', {}, rows),
    ),
  );
}

/** The heading block of a page; the h1 takes focus after navigation. */
export function pageHeader(title, lead, ...actions) {
  return h(
    'header',
    { class: 'page-header' },
    h('div', {}, h('h1', { tabindex: '-1' }, title), lead ? h('p', { class: 'lead' }, lead) : null),
    actions.length ? h('div', { class: 'page-actions' }, actions) : null,
  );
}

/**
 * A read-only page: a header with a Refresh button, an error box, and a list that shows
 * `view(await get(path))` — loaded now and again on Refresh. For pages with nothing to edit.
 */
export async function refreshingPage(main, ctx, { title, lead, load: fetch, view }) {
  const pageError = alertBox();
  const list = h('div', { class: 'list', 'aria-busy': 'true' }, h('p', { class: 'muted' }, 'Loading…'));
  const refresh = h('button', { type: 'button', class: 'button' }, 'Refresh');

  async function load() {
    refresh.disabled = true;
    try {
      const data = await fetch();
      if (!ctx.isCurrent()) return;
      setAlert(pageError, null);
      list.removeAttribute('aria-busy');
      replace(list, view(data));
    } catch (err) {
      list.removeAttribute('aria-busy');
      setAlert(pageError, err.errors ? err.errors.join('. ') : String(err));
    } finally {
      refresh.disabled = false;
    }
  }
  refresh.addEventListener('click', load);

  replace(main, pageHeader(title, lead, refresh), pageError, list);
  await load();
}
