// The torrent list, virtualized: one scroll container, fixed row height,
// only the visible rows (plus a margin) exist in the DOM, and they are
// reused as the list scrolls. Thousands of torrents cost a few dozen rows.

import { h, setText } from './dom.js';
import { bytes, rate, percent, stateName } from './format.js';

const MARGIN = 8;
const phone = window.matchMedia('(max-width: 640px)');

export class TorrentList {
  constructor(scroller, { onSelect, onOpen }) {
    this.scroller = scroller;
    this.onSelect = onSelect;
    this.onOpen = onOpen;
    this.items = [];
    this.selected = null;
    this.spacer = h('div', { class: 'spacer', 'aria-hidden': 'true' });
    this.empty = h('p', { class: 'empty', hidden: true });
    this.scroller.append(this.spacer, this.empty);
    this.pool = [];
    this.scroller.addEventListener('scroll', () => this.render(), { passive: true });
    this.scroller.addEventListener('keydown', (e) => this.key(e));
    window.addEventListener('resize', () => this.render());
    phone.addEventListener('change', () => this.render());
  }

  get rowHeight() {
    return phone.matches ? 58 : 34;
  }

  /** The rows to show, already filtered and sorted. */
  setItems(items, emptyText) {
    this.items = items;
    this.empty.hidden = items.length > 0;
    setText(this.empty, emptyText || '');
    this.render();
  }

  indexOf(id) {
    return this.items.findIndex((t) => t.id === id);
  }

  select(id, { scroll = true } = {}) {
    this.selected = id;
    if (scroll) this.scrollTo(this.indexOf(id));
    this.render();
    this.onSelect(id);
  }

  scrollTo(i) {
    if (i < 0) return;
    const rh = this.rowHeight;
    const top = i * rh;
    const view = this.scroller.clientHeight;
    if (top < this.scroller.scrollTop) this.scroller.scrollTop = top;
    else if (top + rh > this.scroller.scrollTop + view) this.scroller.scrollTop = top + rh - view;
  }

  key(e) {
    const n = this.items.length;
    if (!n) return;
    let i = this.indexOf(this.selected);
    const page = Math.max(1, Math.floor(this.scroller.clientHeight / this.rowHeight) - 1);
    switch (e.key) {
      case 'ArrowDown': i = Math.min(n - 1, i + 1); break;
      case 'ArrowUp': i = i < 0 ? 0 : Math.max(0, i - 1); break;
      case 'PageDown': i = Math.min(n - 1, i + page); break;
      case 'PageUp': i = Math.max(0, i - page); break;
      case 'Home': i = 0; break;
      case 'End': i = n - 1; break;
      case 'Enter':
      case ' ':
        if (i >= 0) this.onOpen(this.items[i].id);
        e.preventDefault();
        return;
      default:
        return;
    }
    e.preventDefault();
    this.select(this.items[i].id);
  }

  row() {
    const r = {
      name: h('span', { class: 'c-name' }),
      state: h('span', { class: 'c-state' }),
      fill: h('span', { class: 'fill' }),
      pct: h('span', { class: 'c-pct' }),
      size: h('span', { class: 'c-size' }),
      down: h('span', { class: 'c-down' }),
      up: h('span', { class: 'c-up' }),
      peers: h('span', { class: 'c-peers' }),
    };
    r.el = h(
      'div',
      { class: 'row', role: 'option', 'aria-selected': 'false' },
      r.name,
      r.state,
      h('span', { class: 'c-bar bar' }, r.fill),
      r.pct,
      r.size,
      r.down,
      r.up,
      r.peers,
    );
    r.el.addEventListener('click', () => {
      if (r.id === undefined) return;
      this.select(r.id, { scroll: false });
      this.onOpen(r.id);
      this.scroller.focus({ preventScroll: true });
    });
    this.scroller.appendChild(r.el);
    return r;
  }

  render() {
    const rh = this.rowHeight;
    const n = this.items.length;
    this.spacer.style.height = `${n * rh}px`;
    const top = this.scroller.scrollTop;
    const view = this.scroller.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / rh) - MARGIN);
    const last = Math.min(n, Math.ceil((top + view) / rh) + MARGIN);
    const count = last - first;
    while (this.pool.length < count) this.pool.push(this.row());
    for (let k = 0; k < this.pool.length; k++) {
      const r = this.pool[k];
      if (k >= count) {
        if (!r.el.hidden) r.el.hidden = true;
        r.el.removeAttribute('id');
        r.id = undefined;
        continue;
      }
      const i = first + k;
      const t = this.items[i];
      r.el.hidden = false;
      r.id = t.id;
      r.el.id = `row-${t.id}`;
      r.el.style.transform = `translateY(${i * rh}px)`;
      r.el.style.height = `${rh}px`;
      const sel = t.id === this.selected;
      r.el.setAttribute('aria-selected', sel ? 'true' : 'false');
      r.el.dataset.state = t.error ? 'error' : t.state;
      setText(r.name, t.name);
      r.name.title = t.name;
      setText(r.state, stateName(t));
      r.fill.style.width = `${Math.round((t.progress || 0) * 1000) / 10}%`;
      setText(r.pct, percent(t.progress));
      setText(r.size, t.has_metadata ? bytes(t.wanted_size) : '–');
      setText(r.down, `↓ ${rate(t.download_rate)}`);
      setText(r.up, `↑ ${rate(t.upload_rate)}`);
      setText(r.peers, `${t.peers} peer${t.peers === 1 ? '' : 's'}`);
    }
    if (this.selected !== null && this.indexOf(this.selected) >= 0) {
      this.scroller.setAttribute('aria-activedescendant', `row-${this.selected}`);
    } else {
      this.scroller.removeAttribute('aria-activedescendant');
    }
  }
}
