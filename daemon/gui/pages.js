// Per-folder file pages: conflicts (#/conflicts), versions (#/versions) and failed / out of
// sync items (#/failed).

import { html, useState, useEffect, useCallback } from './vendor/preact-htm.js';
import { get, post, limiter } from './api.js';
import { S, useStore, folders, deviceName } from './store.js';
import { bytes, when, attempt, toast, toastError, Pager } from './util.js';
import { folderState } from './dashboard.js';

const PER_PAGE = 50;

/** Running folders (a paused one answers nothing useful). */
const running = () => folders().filter((f) => !f.paused);
const folderName = (f) => f.label || f.id;

/** A folder chooser; remembers nothing, the page keeps the choice. */
function FolderSelect({ value, onChange, list, test }) {
  return html`<label class="inline">Folder
    <select data-test=${test || 'folder-select'} value=${value} onChange=${(e) => onChange(e.target.value)}>
      ${list.map((f) => html`<option key=${f.id} value=${f.id}>${folderName(f)}${f.label && f.label !== f.id ? ` (${f.id})` : ''}</option>`)}
    </select></label>`;
}

// ---- conflicts -------------------------------------------------------------------------------

export function ConflictsPage() {
  const s = useStore();
  const [rows, setRows] = useState(null); // [{folder, ...conflict}]
  const [errors, setErrors] = useState([]);
  const [page, setPage] = useState(1);
  const [busy, setBusy] = useState('');

  // Every running folder, six at a time (there may be hundreds).
  const load = useCallback(() => {
    const list = running();
    const found = [], errs = [];
    let left = list.length;
    if (!left) { setRows([]); return; }
    const q = limiter(6);
    for (const f of list) {
      q.run(f.id, async () => {
        try {
          const r = await get('/rest/db/conflicts', { folder: f.id });
          for (const c of r.conflicts || []) found.push({ folder: f.id, ...c });
        } catch (e) { errs.push(folderName(f) + ': ' + e.message); }
        if (--left === 0) {
          found.sort((a, b) => (a.folder + a.name).localeCompare(b.folder + b.name));
          setRows(found);
          setErrors(errs);
        }
      });
    }
  }, []);
  // Opened by URL, the page may come before the configuration: wait for it.
  useEffect(() => { if (s.config) load(); }, [!!s.config]);

  const resolve = async (c, keep) => {
    setBusy(c.folder + c.name);
    try {
      const r = await post('/rest/db/conflicts/resolve', { conflict: c.name, keep }, { folder: c.folder });
      toast((r && r.ok) || 'Resolved');
      load();
    } catch (e) { toastError(e); } finally { setBusy(''); }
  };

  if (rows === null) return html`<h2>Conflicts</h2><p class="muted">Looking for conflict copies…</p>`;
  const pages = Math.ceil(rows.length / PER_PAGE);
  const shown = rows.slice((page - 1) * PER_PAGE, page * PER_PAGE);
  return html`<div class="section-head"><h2>Conflicts <span class="count">${rows.length}</span></h2>
      <button data-test="refresh" onClick=${load}>Refresh</button></div>
    ${errors.map((e) => html`<p class="error small">${e}</p>`)}
    ${rows.length === 0 && html`<p class="muted" data-test="no-conflicts">No conflict copies. When two devices change a file at once, the losing copy shows up here.</p>`}
    <div class="rows">
      ${shown.map((c) => html`<div class="row card" key=${c.folder + '/' + c.name} data-test=${'conflict-' + c.name} data-folder=${c.folder}>
        <div class="row-main">
          <div class="path"><strong>${c.original}</strong></div>
          <div class="small muted">copy <span class="path">${c.name}</span> in ${folderName(folders().find((f) => f.id === c.folder) || { id: c.folder })}</div>
          <div class="small">${bytes(c.size)}, changed ${when(c.modified)} by ${deviceName(c.modifiedBy)}</div>
        </div>
        <div class="buttons">
          <button data-test="keep-original" disabled=${!!busy} onClick=${() => resolve(c, 'original')}>Keep original</button>
          <button data-test="keep-conflict" disabled=${!!busy} onClick=${() => resolve(c, 'conflict')}>Keep this copy</button>
          <button data-test="keep-both" disabled=${!!busy} onClick=${() => resolve(c, 'both')}>Keep both</button>
        </div>
      </div>`)}
    </div>
    <${Pager} page=${page} pages=${pages} onPage=${setPage} />`;
}

// ---- versions --------------------------------------------------------------------------------

export function VersionsPage() {
  useStore();
  const list = running();
  const [fid, setFid] = useState('');
  const [data, setData] = useState(null);
  const [error, setError] = useState('');
  const [filter, setFilter] = useState('');
  const [page, setPage] = useState(1);
  const folder = fid || (list[0] && list[0].id) || '';

  const load = useCallback(() => {
    if (!folder) return;
    setError('');
    setData(null);
    get('/rest/folder/versions', { folder }).then(setData, (e) => { setError(e.message); setData({}); });
  }, [folder]);
  useEffect(load, [folder]);

  const restore = (name, v) => attempt(async () => {
    const r = await post('/rest/folder/versions', { [name]: v.versionTime }, { folder });
    // Syncthing answers {} or {name: "why not"}.
    const failed = r && Object.entries(r).filter(([, msg]) => msg);
    if (failed && failed.length) throw new Error(failed.map(([n, m]) => `${n}: ${m}`).join('; '));
    toast(`Restored ${name}`);
    load();
  });

  if (!list.length) return html`<h2>Versions</h2><p class="muted">No running folders.</p>`;
  const names = data ? Object.keys(data).filter((n) => n.toLowerCase().includes(filter.toLowerCase())).sort() : [];
  const pages = Math.ceil(names.length / PER_PAGE);
  return html`<div class="section-head"><h2>Versions</h2><button data-test="refresh" onClick=${load}>Refresh</button></div>
    <div class="toolbar">
      <${FolderSelect} value=${folder} list=${list} onChange=${(v) => { setFid(v); setPage(1); }} />
      <input type="search" placeholder="Filter by name" data-test="versions-filter" value=${filter} onInput=${(e) => { setFilter(e.target.value); setPage(1); }} />
    </div>
    ${error && html`<p class="error" data-test="versions-error">${error}</p>`}
    ${data === null && html`<p class="muted">Loading…</p>`}
    ${data && !error && names.length === 0 && html`<p class="muted" data-test="no-versions">No kept versions${filter ? ' match' : ''}. Turn on file versioning in the folder's settings to keep old copies.</p>`}
    <div class="rows">
      ${names.slice((page - 1) * PER_PAGE, page * PER_PAGE).map((name) => html`<div class="card" key=${name} data-test=${'version-' + name}>
        <div class="path"><strong>${name}</strong></div>
        <table class="versions"><thead><tr><th>Kept</th><th>Modified</th><th>Size</th><th></th></tr></thead><tbody>
          ${[...data[name]].reverse().map((v) => html`<tr key=${v.versionTime}>
            <td>${when(v.versionTime)}</td><td>${when(v.modTime)}</td><td>${bytes(v.size)}</td>
            <td><button class="small" data-test="restore" data-version=${v.versionTime} onClick=${() => restore(name, v)}>Restore</button></td></tr>`)}
        </tbody></table>
      </div>`)}
    </div>
    <${Pager} page=${page} pages=${pages} onPage=${setPage} />`;
}

// ---- failed / out of sync ---------------------------------------------------------------------

export function FailedPage() {
  useStore();
  const list = running();
  // Folders with something to show first (counts come from the dashboard's status).
  const trouble = list.filter((f) => { const s = S.folderStatus[f.id] || {}; return s.pullErrors > 0 || s.needTotalItems > 0; });
  // `#/failed?folder=ID` (the dashboard's link) opens on that folder.
  const [fid, setFid] = useState(() => new URLSearchParams(location.hash.split('?')[1] || '').get('folder') || '');
  const folder = fid || (trouble[0] || list[0] || {}).id || '';
  if (!list.length) return html`<h2>Failed items</h2><p class="muted">No running folders.</p>`;
  return html`<h2>Failed items and out of sync</h2>
    <p class="small muted">${trouble.length ? `${trouble.length} folder(s) with failed or missing items: ${trouble.map(folderName).join(', ')}` : 'Every folder is in sync.'}</p>
    <div class="toolbar"><${FolderSelect} value=${folder} list=${list} onChange=${setFid} /></div>
    <${FolderTrouble} key=${folder} folder=${folder} st=${S.folderStatus[folder] || {}}
      state=${folderState(list.find((f) => f.id === folder) || {}, S.folderStatus[folder])} />`;
}

/** One folder's errors and needed items, each paged by the server. */
function FolderTrouble({ folder, st, state }) {
  return html`<div class="card" data-test=${'failed-' + folder} data-state=${state}>
    <h3>Failed items <span class="count">${st.pullErrors || 0}</span></h3>
    <${ServerPaged} key=${'e' + folder + st.pullErrors} path="/rest/folder/errors" folder=${folder} total=${st.pullErrors}
      pick=${(r) => r.errors || []} test="failed-item"
      row=${(e) => html`<div class="path">${e.path}</div><div class="small error">${e.error}</div>`} empty="No failed items." />
    <h3>Out of sync <span class="count">${st.needTotalItems || 0}</span></h3>
    <${ServerPaged} key=${'n' + folder + st.needTotalItems} path="/rest/db/need" folder=${folder} total=${st.needTotalItems}
      pick=${(r) => [...(r.progress || []), ...(r.queued || []), ...(r.rest || [])]} test="need-item"
      row=${(e) => html`<div class="path">${e.name}${e.deleted ? ' (delete)' : ''}</div><div class="small muted">${bytes(e.size)}, ${when(e.modified)} by ${deviceName(e.modifiedBy)}</div>`}
      empty="Nothing to fetch." />
  </div>`;
}

function ServerPaged({ path, folder, total, pick, row, test, empty }) {
  const [page, setPage] = useState(1);
  const [items, setItems] = useState(null);
  const [error, setError] = useState('');
  useEffect(() => {
    setItems(null);
    get(path, { folder, page, perpage: PER_PAGE }).then((r) => setItems(pick(r)), (e) => { setError(e.message); setItems([]); });
  }, [page]);
  // The total comes from the status; without it, a full page means there may be more.
  const pages = total ? Math.ceil(total / PER_PAGE) : items && items.length === PER_PAGE ? page + 1 : page;
  if (error) return html`<p class="error small">${error}</p>`;
  if (items === null) return html`<p class="muted small">Loading…</p>`;
  return html`${items.length === 0 && html`<p class="muted small">${empty}</p>`}
    <ul class="plain">${items.map((e, i) => html`<li key=${i} data-test=${test}>${row(e)}</li>`)}</ul>
    <${Pager} page=${page} pages=${pages} onPage=${setPage} />`;
}
