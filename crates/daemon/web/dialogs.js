// Modal dialogs: add a torrent, confirm a removal, log in. Native
// <dialog>: Escape closes, focus stays inside while open.

import { h, fill } from './dom.js';
import * as api from './api.js';

function modal(title, body, buttons, { cancellable = true } = {}) {
  const form = h('form', { class: 'dialog-form', method: 'dialog' },
    h('h2', { text: title }), body, h('div', { class: 'buttons' }, buttons));
  const dlg = h('dialog', { 'aria-label': title }, form);
  document.body.appendChild(dlg);
  dlg.addEventListener('cancel', (e) => {
    if (!cancellable) e.preventDefault();
  });
  dlg.addEventListener('close', () => dlg.remove());
  dlg.showModal();
  return { dlg, form };
}

function errorLine() {
  return h('p', { class: 'error', role: 'alert', 'aria-live': 'assertive' });
}

const HASH = /^([0-9a-fA-F]{40}|[A-Za-z2-7]{32})$/;

/** The add dialog; `added(answer)` after each torrent added. */
export function addDialog({ downloadDir, added }) {
  const link = h('input', {
    id: 'add-link', type: 'text', name: 'link', autocomplete: 'off', spellcheck: 'false',
    placeholder: 'magnet:?xt=urn:btih:…  or  https://…/file.torrent',
  });
  const file = h('input', { id: 'add-file', type: 'file', accept: '.torrent,application/x-bittorrent', multiple: true });
  const dir = h('input', { id: 'add-dir', type: 'text', name: 'dir', value: downloadDir || '', spellcheck: 'false' });
  const paused = h('input', { id: 'add-paused', type: 'checkbox', name: 'paused' });
  const err = errorLine();
  const submit = h('button', { type: 'submit', class: 'primary', text: 'Add' });
  const cancel = h('button', { type: 'button', text: 'Cancel' });
  const body = h('div', { class: 'fields' },
    h('label', { for: 'add-link', text: 'Magnet link, info hash or URL of a .torrent' }), link,
    h('label', { for: 'add-file', text: 'or .torrent file(s)' }), file,
    h('label', { for: 'add-dir', text: 'Download folder' }), dir,
    h('label', { class: 'check' }, paused, ' Add paused (do not start)'),
    err);
  const { dlg, form } = modal('Add torrents', body, [cancel, submit]);
  cancel.addEventListener('click', () => dlg.close());
  link.focus();
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    err.textContent = '';
    const text = link.value.trim();
    const files = [...file.files];
    if (!text && !files.length) {
      err.textContent = 'Give a magnet link, a URL or a .torrent file.';
      return;
    }
    const d = dir.value.trim();
    submit.disabled = true;
    try {
      if (text) {
        const req = {};
        if (text.startsWith('magnet:')) req.magnet = text;
        else if (HASH.test(text)) req.magnet = `magnet:?xt=urn:btih:${text}`;
        else if (/^https?:\/\//i.test(text)) req.url = text;
        else throw new Error('Not a magnet link, an info hash or an http(s) URL.');
        if (d) req.download_dir = d;
        if (paused.checked) req.paused = true;
        added(await api.post('/torrents', req));
      }
      for (const f of files) {
        const q = new URLSearchParams();
        if (d) q.set('download_dir', d);
        if (paused.checked) q.set('paused', 'true');
        const bytes = await f.arrayBuffer();
        added(await api.upload(`/torrents?${q}`, bytes));
      }
      dlg.close();
    } catch (x) {
      err.textContent = x.message;
    } finally {
      submit.disabled = false;
    }
  });
}

/** Ask before removing; resolves to null (kept) or {deleteData}. */
export function confirmRemove(names) {
  return new Promise((resolve) => {
    const data = h('input', { id: 'remove-data', type: 'checkbox' });
    const what = names.length === 1 ? `“${names[0]}”` : `${names.length} torrents`;
    const body = h('div', { class: 'fields' },
      h('p', {}, 'Remove ', h('strong', { text: what }), ' from the list?'),
      h('label', { class: 'check' }, data, ' Also delete the downloaded files'));
    const yes = h('button', { type: 'submit', class: 'danger', text: 'Remove' });
    const no = h('button', { type: 'button', text: 'Cancel' });
    const { dlg, form } = modal('Remove', body, [no, yes]);
    let answer = null;
    no.addEventListener('click', () => dlg.close());
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      answer = { deleteData: data.checked };
      dlg.close();
    });
    dlg.addEventListener('close', () => resolve(answer));
    no.focus();
  });
}

/** The login form; resolves once the daemon said `Ok.`. */
export function loginDialog() {
  return new Promise((resolve) => {
    const user = h('input', { id: 'login-user', type: 'text', autocomplete: 'username', name: 'username' });
    const pass = h('input', { id: 'login-pass', type: 'password', autocomplete: 'current-password', name: 'password' });
    const err = errorLine();
    const body = h('div', { class: 'fields' },
      h('p', { text: 'This daemon has a password.' }),
      h('label', { for: 'login-user', text: 'User name' }), user,
      h('label', { for: 'login-pass', text: 'Password' }), pass, err);
    const go = h('button', { type: 'submit', class: 'primary', text: 'Log in' });
    const { dlg, form } = modal('Log in', body, [go], { cancellable: false });
    user.focus();
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      go.disabled = true;
      fill(err);
      try {
        if (await api.login(user.value, pass.value)) {
          dlg.close();
          resolve();
        } else {
          err.textContent = 'wrong user name or password';
          pass.select();
        }
      } catch (x) {
        err.textContent = `cannot log in: ${x.message}`;
      } finally {
        go.disabled = false;
      }
    });
  });
}
