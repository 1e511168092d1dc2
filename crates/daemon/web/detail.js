// One torrent's detail: Overview, Files, Peers, Pieces, Sources. While
// open it polls that torrent (and the open tab's call) every 1.5 s; the
// list itself never polls.

import { h, fill, setText } from './dom.js';
import * as api from './api.js';
import { bytes, rate, percent, duration, date, ratio, stateName } from './format.js';
import { diagnose, sourceName, sourceStatus, lastResult, peerFlags, FLAG_LEGEND } from './words.js';

const POLL_MS = 1500;
const FILES_PAGE = 200;
const TABS = [
  ['overview', 'Overview'],
  ['files', 'Files'],
  ['peers', 'Peers'],
  ['pieces', 'Pieces'],
  ['sources', 'Sources'],
];

export class Detail {
  constructor(root, { onClose }) {
    this.root = root;
    this.onClose = onClose;
    this.id = null;
    this.tab = 'overview';
    this.timer = null;
    this.ticker = null;
    this.filesPage = 0;
    this.title = h('h2', { class: 'detail-title', id: 'detail-title' });
    this.close = h('button', { class: 'icon', type: 'button', 'aria-label': 'Close the detail', title: 'Close (Escape)', text: '✕' });
    this.close.addEventListener('click', () => this.onClose());
    this.tabs = new Map();
    const bar = h('div', { class: 'tabs', role: 'tablist', 'aria-labelledby': 'detail-title' });
    for (const [key, label] of TABS) {
      const b = h('button', { type: 'button', role: 'tab', id: `tab-${key}`, 'data-tab': key, 'aria-controls': 'detail-panel', text: label });
      b.addEventListener('click', () => this.show(key));
      b.addEventListener('keydown', (e) => this.tabKey(e, key));
      this.tabs.set(key, b);
      bar.appendChild(b);
    }
    this.panel = h('div', { class: 'panel', id: 'detail-panel', role: 'tabpanel', tabindex: '0' });
    fill(root, h('div', { class: 'detail-head' }, this.title, this.close), bar, this.panel);
  }

  tabKey(e, key) {
    const keys = TABS.map(([k]) => k);
    let i = keys.indexOf(key);
    if (e.key === 'ArrowRight') i = (i + 1) % keys.length;
    else if (e.key === 'ArrowLeft') i = (i + keys.length - 1) % keys.length;
    else return;
    e.preventDefault();
    this.show(keys[i]);
    this.tabs.get(keys[i]).focus();
  }

  open(id) {
    if (this.id !== id) {
      this.id = id;
      this.filesPage = 0;
      this.data = {};
      fill(this.panel, h('p', { class: 'muted', text: 'Loading…' }));
    }
    this.root.hidden = false;
    document.body.classList.add('detail-open');
    this.show(this.tab);
  }

  hide() {
    this.id = null;
    this.root.hidden = true;
    document.body.classList.remove('detail-open');
    clearTimeout(this.timer);
    clearInterval(this.ticker);
    this.timer = null;
  }

  show(tab) {
    clearInterval(this.ticker);
    if (this.tab !== tab) fill(this.panel);
    this.tab = tab;
    for (const [k, b] of this.tabs) {
      b.setAttribute('aria-selected', k === tab ? 'true' : 'false');
      b.tabIndex = k === tab ? 0 : -1;
    }
    this.panel.dataset.tab = tab;
    this.built = null;
    this.refresh();
  }

  async refresh() {
    clearTimeout(this.timer);
    const id = this.id;
    const tab = this.tab;
    if (id === null) return;
    try {
      const t = await api.get(`/torrents/${id}`);
      let extra = null;
      if (tab === 'files') extra = await api.get(`/torrents/${id}/files`);
      else if (tab === 'peers') extra = await api.get(`/torrents/${id}/peers`);
      else if (tab === 'pieces') extra = await api.get(`/torrents/${id}/pieces`);
      else if (tab === 'sources') extra = await api.get(`/torrents/${id}/sources`);
      if (this.id !== id || this.tab !== tab) return;
      this.torrent = t;
      setText(this.title, t.name);
      this.render(t, extra);
    } catch (e) {
      if (this.id !== id) return;
      this.built = null;
      if (e.status === 404) {
        fill(this.panel, h('p', { class: 'muted', text: 'This torrent was removed.' }));
        return;
      }
      fill(this.panel, h('p', { class: 'error', text: e.message }));
    }
    if (this.id === id) this.timer = setTimeout(() => this.refresh(), POLL_MS);
  }

  render(t, extra) {
    switch (this.tab) {
      case 'overview': return this.overview(t);
      case 'files': return this.files(t, extra.files);
      case 'peers': return this.peers(t, extra.peers);
      case 'pieces': return this.pieces(t, extra);
      case 'sources': return this.sources(t, extra);
      default: return undefined;
    }
  }

  overview(t) {
    const rows = [
      ['State', stateName(t)],
      ['Progress', `${percent(t.progress)} (${bytes(t.have)} of ${t.has_metadata ? bytes(t.wanted_size) : '?'})`],
      ['Size', t.has_metadata ? `${bytes(t.total_size)} (${bytes(t.wanted_size)} wanted)` : 'unknown until the metadata arrives'],
      ['Left', t.has_metadata ? bytes(t.left) : '–'],
      ['Time left', t.left > 0 && t.download_rate > 0 ? duration(t.left / t.download_rate) : '–'],
      ['Download rate', rate(t.download_rate)],
      ['Upload rate', rate(t.upload_rate)],
      ['Downloaded', bytes(t.downloaded)],
      ['Uploaded', bytes(t.uploaded)],
      ['Ratio', ratio(t.uploaded, t.downloaded)],
      ['Peers', `${t.peers} connected, ${t.seeds} seeds`],
      ['Added', date(t.added_at)],
      ['Completed', date(t.done_at)],
      ['Info hash', t.info_hash],
      ['Folder', t.download_dir],
    ];
    if (t.pieces !== undefined) rows.push(['Pieces', `${t.pieces} × ${bytes(t.piece_size)}`]);
    if (t.private) rows.push(['Private', 'yes: only the trackers find peers']);
    if (t.labels && t.labels.length) rows.push(['Labels', t.labels.join(', ')]);
    if (t.comment) rows.push(['Comment', t.comment]);
    if (t.created_by) rows.push(['Created by', t.created_by]);
    if (t.magnet) rows.push(['Magnet', t.magnet]);
    rows.push(['Error', t.error || 'none']);
    // The short fields fill the columns first; the long ones take whole
    // lines below them (grid auto-placement would leave holes otherwise).
    const wide = new Set(['Info hash', 'Folder', 'Magnet', 'Comment', 'Error', 'Progress', 'Size', 'Private']);
    rows.sort((a, b) => wide.has(a[0]) - wide.has(b[0]));
    // Updated in place while the fields stay the same, so a selection
    // (copying the hash or the magnet) survives the refresh.
    const key = `overview:${t.id}:${rows.map(([k]) => k).join('|')}`;
    if (this.built === key) {
      rows.forEach(([, v], i) => setText(this.fields[i], v));
      return;
    }
    this.built = key;
    this.fields = rows.map(([k, v]) => h('dd', { text: v, 'data-field': k }));
    fill(this.panel, h('dl', { class: 'overview' },
      rows.map(([k], i) => h('div', { class: wide.has(k) ? 'wide' : null }, h('dt', { text: k }), this.fields[i]))));
  }

  files(t, files) {
    if (!files.length) {
      fill(this.panel, h('p', { class: 'muted', text: 'The file list arrives with the metadata.' }));
      return;
    }
    this.fileList = files;
    const pages = Math.ceil(files.length / FILES_PAGE);
    this.filesPage = Math.min(this.filesPage, pages - 1);
    const from = this.filesPage * FILES_PAGE;
    const shown = files.slice(from, from + FILES_PAGE);
    const key = `${t.id}:${files.length}:${this.filesPage}`;
    if (this.built !== key) {
      this.built = key;
      this.fileRows = shown.map((f) => {
        const sel = h('select', { 'data-index': f.index, 'aria-label': `Priority of ${f.path}` },
          ['skip', 'low', 'normal', 'high'].map((p) => h('option', { value: p, text: p === 'skip' ? 'skip (do not download)' : p })));
        sel.addEventListener('change', () => this.setPriority(f.index, sel.value));
        const fillBar = h('span', { class: 'fill' });
        const pct = h('span', { class: 'pct' });
        return { sel, fillBar, pct, tr: h('tr', { 'data-index': f.index },
          h('td', { class: 'path', text: f.path }),
          h('td', { class: 'num', text: bytes(f.length) }),
          h('td', { class: 'progress' }, h('span', { class: 'bar' }, fillBar), pct),
          h('td', {}, sel)) };
      });
      const nav = pages > 1 ? h('div', { class: 'pager' },
        h('button', { type: 'button', text: '‹ Previous', disabled: this.filesPage === 0,
          onclick: () => { this.filesPage--; this.built = null; this.refresh(); } }),
        h('span', { text: ` files ${from + 1}–${from + shown.length} of ${files.length} ` }),
        h('button', { type: 'button', text: 'Next ›', disabled: this.filesPage >= pages - 1,
          onclick: () => { this.filesPage++; this.built = null; this.refresh(); } })) : null;
      fill(this.panel, nav, h('table', { class: 'grid files' },
        h('thead', {}, h('tr', {}, ['Path', 'Size', 'Progress', 'Priority'].map((c) => h('th', { text: c })))),
        h('tbody', {}, this.fileRows.map((r) => r.tr))));
    }
    shown.forEach((f, i) => {
      const r = this.fileRows[i];
      const p = f.length ? (f.done || 0) / f.length : 1;
      r.fillBar.style.width = `${(p * 100).toFixed(1)}%`;
      setText(r.pct, percent(p));
      if (document.activeElement !== r.sel && r.sel.value !== f.priority) r.sel.value = f.priority;
    });
  }

  async setPriority(index, priority) {
    const priorities = this.fileList.map((f) => (f.index === index ? priority : f.priority));
    try {
      const r = await api.post(`/torrents/${this.id}/files`, { priorities });
      this.fileList = r.files;
    } catch (e) {
      alertLine(this.panel, e.message);
    }
  }

  peers(t, peers) {
    const total = t.pieces || 0;
    const table = h('table', { class: 'grid peers cards' },
      h('thead', {}, h('tr', {}, ['Address', 'Client', 'Transport', 'Flags', '↓ Rate', '↑ Rate', 'Progress', 'Found by']
        .map((c) => h('th', { text: c })))),
      h('tbody', {}, peers.map((p) => h('tr', { class: 'peer' },
        h('th', { scope: 'row', class: 'addr', text: p.address }),
        h('td', { 'data-label': 'Client', text: p.client || '?' }),
        h('td', { 'data-label': 'Transport', text: p.transport || 'tcp' }),
        h('td', { 'data-label': 'Flags', class: 'flags', text: peerFlags(p), title: peerFlags(p).split('').map((f) => legend(f)).join('\n') }),
        h('td', { 'data-label': '↓ Rate', class: 'num', text: rate(p.download_rate) }),
        h('td', { 'data-label': '↑ Rate', class: 'num', text: rate(p.upload_rate) }),
        h('td', { 'data-label': 'Progress', class: 'num', text: p.seed ? '100%' : total ? percent(p.pieces / total) : '–' }),
        h('td', { 'data-label': 'Found by', text: (p.found_by || []).join(', ') })))));
    // One legend, kept across refreshes (so it stays open once opened).
    if (!this.legend) {
      this.legend = h('details', { class: 'legend' }, h('summary', { text: 'What the flags mean' }),
        h('dl', {}, FLAG_LEGEND.map(([f, d]) => [h('dt', { text: f }), h('dd', { text: d })])));
    }
    fill(this.panel,
      peers.length ? table : h('p', { class: 'muted', text: 'No peer connected.' }),
      this.legend);
  }

  pieces(t, p) {
    if (!p.count) {
      fill(this.panel, h('p', { class: 'muted', text: t.has_metadata ? 'No piece information (the torrent is not running).' : 'The pieces arrive with the metadata.' }));
      this.built = null;
      return;
    }
    if (this.built !== 'pieces') {
      this.built = 'pieces';
      this.canvas = h('canvas', { class: 'pieces', role: 'img', 'aria-label': 'Pieces' });
      this.pieceText = h('p', { class: 'muted' });
      fill(this.panel, this.pieceText, this.canvas,
        h('p', { class: 'legend-inline' },
          h('span', { class: 'swatch have' }), ' have ',
          h('span', { class: 'swatch downloading' }), ' downloading ',
          h('span', { class: 'swatch missing' }), ' missing'));
    }
    const s = p.states;
    let have = 0; let dl = 0;
    for (const c of s) { if (c === 'h') have++; else if (c === 'd') dl++; }
    setText(this.pieceText, `${p.count} pieces: ${have} have, ${dl} downloading, ${p.count - have - dl} missing`);
    const width = Math.max(200, this.panel.clientWidth - 24);
    const cell = Math.max(3, Math.min(14, Math.floor(Math.sqrt((width * 240) / s.length))));
    const cols = Math.max(1, Math.floor(width / cell));
    const rows = Math.ceil(s.length / cols);
    const ratioPx = window.devicePixelRatio || 1;
    const c = this.canvas;
    c.width = cols * cell * ratioPx;
    c.height = rows * cell * ratioPx;
    c.style.width = `${cols * cell}px`;
    c.style.height = `${rows * cell}px`;
    const ctx = c.getContext('2d');
    ctx.scale(ratioPx, ratioPx);
    const css = getComputedStyle(document.documentElement);
    const color = { h: css.getPropertyValue('--have'), d: css.getPropertyValue('--downloading'), '.': css.getPropertyValue('--missing') };
    const gap = cell > 4 ? 1 : 0;
    for (let i = 0; i < s.length; i++) {
      ctx.fillStyle = color[s[i]] || color['.'];
      ctx.fillRect((i % cols) * cell, Math.floor(i / cols) * cell, cell - gap, cell - gap);
    }
  }

  sources(t, s) {
    const fetched = performance.now();
    const diag = !t.has_metadata && s.metadata
      ? h('div', { class: 'diagnosis', role: 'status', id: 'diagnosis' },
        h('h3', { text: 'Why the metadata is not here yet' }),
        h('ul', {}, diagnose(s.metadata).map((line) => h('li', { text: line }))))
      : null;
    if (!s.sources.length) {
      fill(this.panel, diag, h('p', { class: 'muted', id: 'no-sources',
        text: t.state === 'stopped' ? 'Stopped: no source is being asked. Start it to look for peers.' : 'No source has reported yet.' }));
      return;
    }
    const countdowns = [];
    const body = s.sources.map((row) => {
      const next = h('td', { class: 'num next', 'data-label': 'Next update in' });
      countdowns.push([next, row.next_update_s]);
      const c = row.connected;
      return h('tr', { 'data-kind': row.kind },
        h('th', { scope: 'row', class: 'src', text: sourceName(row) }),
        h('td', { class: 'status', 'data-label': 'Status', 'data-status': row.state.status, text: sourceStatus(row) }),
        h('td', { class: 'last', 'data-label': 'Last result', text: lastResult(row) }),
        next,
        h('td', { class: 'num found', 'data-label': 'Peers found', text: row.peers }),
        h('td', { class: 'num seeds', 'data-label': 'Seeds', text: c ? c.seeds : '–' }),
        h('td', { class: 'num leechers', 'data-label': 'Leechers', text: c ? c.leechers : '–' }));
    });
    fill(this.panel, diag, h('div', { class: 'scroll-x' }, h('table', { class: 'grid sources cards' },
      h('thead', {}, h('tr', {}, ['Source', 'Status', 'Last result', 'Next update in', 'Peers found', 'Seeds', 'Leechers']
        .map((x) => h('th', { scope: 'col', text: x })))),
      h('tbody', {}, body))),
      h('p', { class: 'muted note', text: 'Seeds and leechers: connected peers that came from the source. A tracker\'s own swarm counts are in its last result.' }));
    const tick = () => {
      const gone = (performance.now() - fetched) / 1000;
      for (const [cell, next] of countdowns) {
        setText(cell, next === null || next === undefined ? '–' : duration(Math.max(0, next - gone)));
      }
    };
    tick();
    clearInterval(this.ticker);
    this.ticker = setInterval(tick, 1000);
  }
}

function legend(f) {
  const hit = FLAG_LEGEND.find(([k]) => k === f);
  return hit ? `${f}: ${hit[1]}` : f;
}

function alertLine(panel, text) {
  panel.prepend(h('p', { class: 'error', role: 'alert', text }));
}
