// Building DOM without markup: text only ever goes in through textContent,
// so a torrent, peer or tracker string can never become an element.

/**
 * h('button', {class: 'x', onclick: f, 'aria-label': 'Close'}, 'text', child)
 * Attributes are set with setAttribute (never `style`, never an `on...`
 * string); functions under `on...` become listeners; `style` may be an
 * object of CSSOM properties (allowed by the page's CSP, unlike a style
 * attribute).
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2), v);
    } else if (k === 'style' && typeof v === 'object') {
      Object.assign(el.style, v);
    } else if (k === 'text') {
      el.textContent = String(v);
    } else if (k === 'value') {
      el.value = v;
    } else if (k === 'checked' || k === 'disabled' || k === 'selected' || k === 'hidden') {
      el[k] = Boolean(v);
    } else if (k === 'style' || k.startsWith('on')) {
      throw new Error(`h: attribute ${k} is not allowed`);
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** Remove every child. */
export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** Replace the children of `el`. */
export function fill(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

/** Set text only when it changed (cheap updates of live rows). */
export function setText(el, text) {
  const t = String(text);
  if (el.textContent !== t) el.textContent = t;
}

export const $ = (sel, root = document) => root.querySelector(sel);
