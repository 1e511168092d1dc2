// Lodestone's web page: the torrent list (read once, then kept live by the
// event stream), the toolbar, the detail view and the status bar.

import { $, setText } from './dom.js';
import * as api from './api.js';
import { rate } from './format.js';
import { TorrentList } from './list.js';
import { Detail } from './detail.js';
import { addDialog, confirmRemove, loginDialog } from './dialogs.js';

const torrents = new Map();
const view = { filter: 'all', search: '', sort: 'added', desc: true };
let session = null;
let dirty = false;

const list = new TorrentList($('#list'), {
  onSelect: () => buttons(),
  onOpen: (id) => detail.open(id),
});
const detail = new Detail($('#detail'), {
  onClose: () => {
    detail.hide();
    $('#list').focus();
  },
});

api.onUnauthorized(loginDialog);

// ---- the list: a Map of summaries, drawn at most once per frame ----

function changed() {
  if (dirty) return;
  dirty = true;
  requestAnimationFrame(draw);
}

const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });
const SORTS = {
  name: (a, b) => collator.compare(a.name, b.name),
  added: (a, b) => a.added_at - b.added_at || a.id - b.id,
  progress: (a, b) => a.progress - b.progress,
  rate: (a, b) => a.download_rate + a.upload_rate - (b.download_rate + b.upload_rate),
};

function matches(t, q) {
  switch (view.filter) {
    case 'active': if (!(t.download_rate > 0 || t.upload_rate > 0)) return false; break;
    case 'error': if (!t.error) return false; break;
    case 'all': break;
    default: if (t.state !== view.filter) return false;
  }
  return !q || t.name.toLowerCase().includes(q) || t.info_hash.includes(q);
}

function draw() {
  dirty = false;
  const q = view.search.trim().toLowerCase();
  const items = [];
  for (const t of torrents.values()) if (matches(t, q)) items.push(t);
  const cmp = SORTS[view.sort];
  items.sort(view.desc ? (a, b) => cmp(b, a) || b.id - a.id : (a, b) => cmp(a, b) || a.id - b.id);
  const empty = torrents.size ? 'No torrent matches.' : 'No torrents yet: press Add to add a magnet link or a .torrent file.';
  list.setItems(items, empty);
  let down = 0; let up = 0;
  for (const t of torrents.values()) { down += t.download_rate || 0; up += t.upload_rate || 0; }
  setText($('#st-down'), `↓ ${rate(down)}`);
  setText($('#st-up'), `↑ ${rate(up)}`);
  const n = torrents.size;
  setText($('#st-count'), items.length === n ? `${n} torrent${n === 1 ? '' : 's'}` : `${items.length} of ${n} torrents`);
  buttons();
}

function selected() {
  return list.selected !== null ? torrents.get(list.selected) : undefined;
}

function buttons() {
  const t = selected();
  $('#btn-start').disabled = !t || t.state !== 'stopped';
  $('#btn-stop').disabled = !t || t.state === 'stopped';
  $('#btn-remove').disabled = !t;
}

// Events that come while the list is being read wait for it.
let loading = null;
let queued = [];

async function loadList() {
  const mine = {};
  loading = mine;
  queued = [];
  try {
    const r = await api.get('/torrents');
    if (loading !== mine) return;
    torrents.clear();
    for (const t of r.torrents) torrents.set(t.id, t);
    for (const f of queued) f();
  } catch (e) {
    toast(`cannot read the list: ${e.message}`);
  } finally {
    if (loading === mine) loading = null;
    queued = [];
    changed();
  }
}

function apply(f) {
  if (loading) queued.push(f);
  else f();
  changed();
}

api.stream({
  open: () => {
    setText($('#st-conn'), 'live');
    $('#st-conn').dataset.state = 'live';
    loadList();
  },
  torrent: (t) => apply(() => torrents.set(t.id, t)),
  removed: (id) => apply(() => {
    torrents.delete(id);
    if (list.selected === id) list.selected = null;
    if (detail.id === id) detail.hide();
  }),
  status: (s) => {
    setText($('#st-conn'), s);
    $('#st-conn').dataset.state = s;
  },
});

// ---- the status bar's session numbers (small, every 5 s) ----

async function pollSession() {
  try {
    session = await api.get('/session');
    const d = session.dht;
    setText($('#st-dht'), !d ? 'DHT: –' : d.enabled ? `DHT: ${d.nodes} nodes` : 'DHT: off');
  } catch {
    setText($('#st-dht'), 'DHT: –');
  }
  setTimeout(pollSession, 5000);
}
pollSession();

// ---- the toolbar ----

let toastTimer = null;
/** A message in the status bar for a few seconds (a failed action). */
function toast(text) {
  setText($('#toast'), text);
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => setText($('#toast'), ''), 8000);
}

function act(f) {
  return async () => {
    try {
      await f();
    } catch (e) {
      toast(e.message);
    }
  };
}

function openAdd() {
  addDialog({
    downloadDir: session && session.download_dir,
    added: (a) => {
      if (a && a.id !== undefined) {
        list.selected = a.id;
        changed();
      }
    },
  });
}

$('#btn-add').addEventListener('click', openAdd);
$('#btn-start').addEventListener('click', act(async () => {
  const t = selected();
  if (t) torrents.set(t.id, await api.post(`/torrents/${t.id}/resume`));
  changed();
}));
$('#btn-stop').addEventListener('click', act(async () => {
  const t = selected();
  if (t) torrents.set(t.id, await api.post(`/torrents/${t.id}/pause`));
  changed();
}));
$('#btn-remove').addEventListener('click', act(async () => {
  const t = selected();
  if (!t) return;
  const answer = await confirmRemove([t.name]);
  if (!answer) return;
  await api.del(`/torrents/${t.id}?delete_data=${answer.deleteData}`);
  torrents.delete(t.id);
  if (detail.id === t.id) detail.hide();
  list.selected = null;
  changed();
  $('#list').focus();
}));

$('#search').addEventListener('input', (e) => { view.search = e.target.value; changed(); });
$('#filter').addEventListener('change', (e) => { view.filter = e.target.value; changed(); });
$('#sort').addEventListener('change', (e) => {
  view.sort = e.target.value;
  view.desc = view.sort !== 'name';
  dirButton();
  changed();
});
function dirButton() {
  setText($('#btn-dir'), view.desc ? '↓' : '↑');
  $('#btn-dir').setAttribute('aria-label', `Sort direction: ${view.desc ? 'descending' : 'ascending'}`);
}
$('#btn-dir').addEventListener('click', () => { view.desc = !view.desc; dirButton(); changed(); });

// ---- light and dark ----

const dark = window.matchMedia('(prefers-color-scheme: dark)');
function theme() {
  let chosen = null;
  try { chosen = localStorage.getItem('lodestone-theme'); } catch { /* private mode */ }
  const effective = chosen || (dark.matches ? 'dark' : 'light');
  document.documentElement.dataset.theme = effective;
  $('#btn-theme').setAttribute('aria-label', effective === 'dark' ? 'Switch to light' : 'Switch to dark');
  $('#btn-theme').title = effective === 'dark' ? 'Switch to light' : 'Switch to dark';
  if (detail.id !== null && detail.tab === 'pieces') detail.refresh();
}
$('#btn-theme').addEventListener('click', () => {
  const next = document.documentElement.dataset.theme === 'dark' ? 'light' : 'dark';
  try { localStorage.setItem('lodestone-theme', next); } catch { /* private mode */ }
  theme();
});
dark.addEventListener('change', theme);
theme();

// ---- keys anywhere ----

document.addEventListener('keydown', (e) => {
  // Escape closes the open dialog (the browser does), else the detail.
  if (e.key === 'Escape' && !document.querySelector('dialog[open]') && detail.id !== null) {
    e.preventDefault();
    detail.hide();
    $('#list').focus();
    return;
  }
  const typing = e.target.closest && e.target.closest('input, select, textarea, dialog');
  if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === 'a') { e.preventDefault(); openAdd(); }
  else if (e.key === '/') { e.preventDefault(); $('#search').focus(); }
});

changed();
