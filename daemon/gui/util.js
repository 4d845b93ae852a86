// Formatting helpers and the few shared widgets (toasts, modal dialog, memo).

import { html, Component, useState, useEffect, useRef } from './vendor/preact-htm.js';

// ---- formatting -------------------------------------------------------------------

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function bytes(n) {
  n = Number(n) || 0;
  let i = 0;
  while (Math.abs(n) >= 1024 && i < UNITS.length - 1) { n /= 1024; i++; }
  return (i === 0 ? Math.round(n) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + ' ' + UNITS[i];
}

export const rate = (n) => bytes(n) + '/s';

export function duration(s) {
  s = Math.max(0, Math.floor(Number(s) || 0));
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

/** A time as the user's locale writes it; Syncthing's zero times read as "never". */
export function when(t) {
  if (!t) return 'never';
  const d = new Date(t);
  if (isNaN(d) || d.getFullYear() <= 1970) return 'never';
  return d.toLocaleString();
}

/** "5 min ago" style, for the dashboard where the date matters less than the age. */
export function ago(t) {
  const d = new Date(t);
  if (!t || isNaN(d) || d.getFullYear() <= 1970) return 'never';
  const s = (Date.now() - d) / 1000;
  if (s < 60) return 'just now';
  if (s < 3600) return Math.floor(s / 60) + ' min ago';
  if (s < 86400) return Math.floor(s / 3600) + ' h ago';
  return d.toLocaleDateString();
}

export const shortId = (id) => (id || '').slice(0, 7);

/** "1 file", "2 files". */
export const plural = (n, word) => `${n || 0} ${word}${n === 1 ? '' : 's'}`;

/** Percent in sync; Syncthing's rule: nothing global means done. */
export function pct(globalBytes, needBytes) {
  if (!globalBytes) return 100;
  return Math.max(0, Math.min(100, Math.floor(100 * (1 - needBytes / globalBytes))));
}

/** Syncthing-like random folder ID `xxxxx-xxxxx`, drawn locally (no round trip). */
export function randomFolderId() {
  const chars = '23456789abcdefghijkmnopqrstuvwxyz';
  const buf = crypto.getRandomValues(new Uint8Array(10));
  const s = Array.from(buf, (b) => chars[b % chars.length]).join('');
  return s.slice(0, 5) + '-' + s.slice(5);
}

// ---- memo -------------------------------------------------------------------------

/**
 * Re-renders `fn` only when a prop changed (shallow): with 500 folder cards a change to
 * one folder re-renders one card. The standalone Preact build has no `memo`.
 */
export function memo(fn) {
  return class extends Component {
    shouldComponentUpdate(next) {
      for (const k in next) if (next[k] !== this.props[k]) return true;
      for (const k in this.props) if (!(k in next)) return true;
      return false;
    }
    // `fn` renders as its own component so its hooks (useState) update it directly.
    render(props) { return html`<${fn} ...${props} />`; }
  };
}

// ---- toasts -----------------------------------------------------------------------

let toasts = [];
let toastListener = null;
let toastSeq = 0;

/** Shows a message for a while; errors stay longer. */
export function toast(message, kind = 'info') {
  const id = ++toastSeq;
  toasts = [...toasts, { id, message: String(message), kind }];
  toastListener && toastListener(toasts);
  setTimeout(() => {
    toasts = toasts.filter((t) => t.id !== id);
    toastListener && toastListener(toasts);
  }, kind === 'error' ? 10000 : 4000);
}

/** Shows an error's message (the server's `{"error"}` text). */
export const toastError = (e) => toast(e && e.message ? e.message : e, 'error');

export function Toasts() {
  const [list, setList] = useState(toasts);
  useEffect(() => { toastListener = setList; return () => { toastListener = null; }; }, []);
  return html`<div class="toasts" aria-live="polite">
    ${list.map((t) => html`<div key=${t.id} class=${'toast ' + t.kind} data-test="toast" data-kind=${t.kind}>${t.message}</div>`)}
  </div>`;
}

/** Runs an action, toasting its error; returns its result or undefined. */
export async function attempt(f, okMessage) {
  try {
    const r = await f();
    if (okMessage) toast(okMessage);
    return r;
  } catch (e) {
    toastError(e);
    return undefined;
  }
}

// ---- modal --------------------------------------------------------------------------

/**
 * A dialog: title, body, and footer buttons. `error` is shown inline (the dialog stays open
 * on a failed save). Escape or the backdrop cancel; Enter in a field calls `onSubmit`.
 */
export function Modal({ title, children, onClose, onSubmit, footer, error, wide, test }) {
  const box = useRef(null);
  // Focus the first field the user can type in (or the dialog, for keyboard users).
  useEffect(() => {
    const first = box.current && box.current.querySelector('.modal-body input:not([readonly]):not([type=checkbox]), .modal-body textarea:not([readonly])');
    if (first) first.focus();
  }, []);
  useEffect(() => {
    const key = (e) => { if (e.key === 'Escape') onClose(); };
    addEventListener('keydown', key);
    return () => removeEventListener('keydown', key);
  }, [onClose]);
  return html`<div class="backdrop" onMouseDown=${(e) => e.target === e.currentTarget && onClose()}>
    <div ref=${box} class=${'modal' + (wide ? ' wide' : '')} role="dialog" aria-modal="true" aria-label=${title} data-test=${test || 'dialog'}
      onKeyDown=${(e) => {
        // Enter in a one-line field saves, as in a form (textareas keep their newlines).
        if (onSubmit && e.key === 'Enter' && e.target.tagName === 'INPUT' && e.target.type !== 'checkbox') { e.preventDefault(); onSubmit(); }
      }}>
      <header><h2>${title}</h2><button class="icon" aria-label="Close" onClick=${onClose}>×</button></header>
      <div class="modal-body">
        ${children}
        ${error && html`<p class="error" data-test="dialog-error" role="alert">${error}</p>`}
      </div>
      ${footer && html`<footer>${footer}</footer>`}
    </div>
  </div>`;
}

/** A numbered pager over a list already in memory. */
export function Pager({ page, pages, onPage }) {
  if (pages <= 1) return null;
  return html`<div class="pager">
    <button disabled=${page <= 1} onClick=${() => onPage(page - 1)} data-test="page-prev">‹ Prev</button>
    <span data-test="page-number">${page} / ${pages}</span>
    <button disabled=${page >= pages} onClick=${() => onPage(page + 1)} data-test="page-next">Next ›</button>
  </div>`;
}

// ---- device IDs -------------------------------------------------------------------------------

const B32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** Syncthing's Luhn mod 32 check character of a 13-character group. */
function luhn32(group) {
  let factor = 1, sum = 0;
  for (const ch of group) {
    let addend = factor * B32.indexOf(ch);
    factor = factor === 2 ? 1 : 2;
    addend = Math.floor(addend / 32) + (addend % 32);
    sum += addend;
  }
  return B32[(32 - (sum % 32)) % 32];
}

/**
 * A device ID checked and written the canonical way, without asking the daemon (for saves
 * that must start at once: see the invite dialog). Throws with the reason.
 */
export function normalizeDeviceId(text) {
  const s = text.toUpperCase().replace(/[\s-]/g, '').replace(/0/g, 'O').replace(/1/g, 'I').replace(/8/g, 'B');
  if (/[^A-Z2-7]/.test(s)) throw new Error('A device ID has only the letters A-Z and the digits 2-7.');
  let full = s;
  if (s.length === 52) {
    full = '';
    for (let i = 0; i < 4; i++) { const g = s.slice(i * 13, i * 13 + 13); full += g + luhn32(g); }
  } else if (s.length === 56) {
    for (let i = 0; i < 4; i++) {
      const g = s.slice(i * 14, i * 14 + 13);
      if (luhn32(g) !== s[i * 14 + 13]) throw new Error(`check character of group ${i + 1} does not match: the ID has a typo`);
    }
  } else {
    throw new Error(`a device ID has 56 characters (or 52 without check characters), this one has ${s.length}`);
  }
  return full.match(/.{7}/g).join('-');
}
