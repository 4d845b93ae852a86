// What is moving: transfers in progress (#/transfers) and recent changes (#/changes).

import { html, useState, useEffect } from './vendor/preact-htm.js';
import { get } from './api.js';
import { S, useStore, folders, deviceName } from './store.js';
import { bytes, rate, duration, when, Pager } from './util.js';

const PER_PAGE = 50;
const label = (id) => { const f = folders().find((x) => x.id === id); return (f && (f.label || f.id)) || id; };

/** One transfer row: name, folder, peer(s), progress and the rate since the last poll. */
function TransferRow({ t }) {
  const p = t.bytesTotal ? Math.floor((100 * t.bytesDone) / t.bytesTotal) : null;
  const who = t.devices.map(deviceName).join(', ');
  return html`<div class="card row" data-test=${'transfer-' + t.name} data-folder=${t.folder} data-direction=${t.direction}>
    <div class="row-main">
      <div class="path"><strong>${t.direction === 'down' ? '↓' : '↑'} ${t.name}</strong></div>
      <div class="small muted">${label(t.folder)} · ${t.direction === 'down' ? 'from' : 'to'} ${who} · ${duration(t.elapsedS)}</div>
      ${p !== null && html`<progress max="100" value=${p}></progress>`}
      <div class="small">${p !== null ? `${bytes(t.bytesDone)} of ${bytes(t.bytesTotal)} (${p}%)` : `${bytes(t.bytesDone)} sent`}
        ${t.rate ? ' · ' + rate(t.rate) : ''}</div>
    </div>
  </div>`;
}

// Files moving now, both ways, from GET /rest/db/transfers (polled each second while the
// page is open); rates from the change between two polls.
export function TransfersPage() {
  useStore();
  const [list, setList] = useState([]);
  const [error, setError] = useState('');
  useEffect(() => {
    let last = new Map();
    let lastAt = Date.now();
    const load = () => get('/rest/db/transfers').then((r) => {
      const now = Date.now();
      const secs = Math.max(0.001, (now - lastAt) / 1000);
      const next = [
        ...r.downloads.map((d) => ({ ...d, direction: 'down' })),
        ...r.uploads.map((u) => ({ ...u, direction: 'up', devices: [u.device], bytesDone: u.bytesSent, bytesTotal: 0 })),
      ].map((t) => {
        const key = t.direction + t.folder + '\0' + t.name + '\0' + t.devices.join();
        const before = last.get(key);
        return { ...t, key, rate: before === undefined ? 0 : Math.max(0, (t.bytesDone - before) / secs) };
      });
      last = new Map(next.map((t) => [t.key, t.bytesDone]));
      lastAt = now;
      setList(next);
      setError('');
    }, (e) => setError(e.message));
    load();
    const timer = setInterval(() => { if (!document.hidden) load(); }, 1000);
    return () => clearInterval(timer);
  }, []);
  return html`<h2>Transfers <span class="count">${list.length}</span></h2>
    <p class="small muted">Total ↓ ${rate(S.rates.in)} ↑ ${rate(S.rates.out)}</p>
    ${error && html`<p class="error">${error}</p>`}
    ${list.length === 0 && !error && html`<p class="muted" data-test="no-transfers">Nothing is being transferred right now.</p>`}
    <div class="rows">${list.map((t) => html`<${TransferRow} key=${t.key} t=${t} />`)}</div>`;
}

export function ChangesPage() {
  useStore();
  const [events, setEvents] = useState(null);
  const [error, setError] = useState('');
  const [page, setPage] = useState(1);
  const [folder, setFolder] = useState('');

  // The disk events are few and small: fetch the newest 1000 and page here.
  const load = () => get('/rest/events/disk', { since: 0, limit: 1000, timeout: 0 })
    .then((r) => { setEvents((r || []).reverse()); setError(''); }, (e) => setError(e.message));
  useEffect(() => {
    load();
    const t = setInterval(() => { if (!document.hidden) load(); }, 10000);
    return () => clearInterval(t);
  }, []);

  const list = (events || []).filter((e) => !folder || e.data.folder === folder);
  const pages = Math.ceil(list.length / PER_PAGE);
  return html`<div class="section-head"><h2>Recent changes</h2><button data-test="refresh" onClick=${load}>Refresh</button></div>
    <div class="toolbar"><label class="inline">Folder <select data-test="changes-folder" value=${folder} onChange=${(e) => { setFolder(e.target.value); setPage(1); }}>
      <option value="">All</option>${folders().map((f) => html`<option value=${f.id}>${f.label || f.id}</option>`)}</select></label></div>
    ${error && html`<p class="error">${error}</p>`}
    ${events === null && !error && html`<p class="muted">Loading…</p>`}
    ${events && list.length === 0 && html`<p class="muted" data-test="no-changes">No changes yet.</p>`}
    <div class="table-wrap"><table class="changes">
      ${list.length > 0 && html`<thead><tr><th>When</th><th>Who</th><th>Action</th><th>Folder</th><th>Path</th></tr></thead>`}
      <tbody>${list.slice((page - 1) * PER_PAGE, page * PER_PAGE).map((e) => html`<tr key=${e.id} data-test="change-row">
        <td>${when(e.time)}</td>
        <td>${e.type === 'LocalChangeDetected' ? 'this device' : deviceName(e.data.modifiedBy)}</td>
        <td>${e.data.action} ${e.data.type}</td>
        <td>${e.data.label || label(e.data.folder)}</td>
        <td class="path">${e.data.path}</td></tr>`)}</tbody>
    </table></div>
    <${Pager} page=${page} pages=${pages} onPage=${setPage} />`;
}
