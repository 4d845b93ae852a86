// The add / edit folder dialog. A new folder starts from /rest/config/defaults/folder; an
// edited one from its own object (fields this dialog does not show are sent back as read).

import { html, useState, useEffect } from './vendor/preact-htm.js';
import { get, post, put, del, seg } from './api.js';
import { useStore, devices, folders, refreshPending, holdingConfig } from './store.js';
import { Modal, toast, randomFolderId } from './util.js';
import { SaveCancel, RemoveButton, quiet } from './dialogs.js';

const TYPES = [
  ['sendreceive', 'Send & receive'],
  ['sendonly', 'Send only'],
  ['receiveonly', 'Receive only'],
];

/** Joins the default folder path and a name the way the daemon's OS does (it says "/"). */
function joinPath(dir, name) {
  if (!dir) return name;
  return dir.replace(/\/+$/, '') + '/' + name.replace(/[/\\]/g, '_');
}

/** Versioning as editable fields; Syncthing writes its numbers as strings. */
function versioningFields(v) {
  const p = (v && v.params) || {};
  return {
    type: (v && v.type) || 'none',
    keep: p.keep || '5',
    cleanoutDays: p.cleanoutDays || '0',
    maxAgeDays: p.maxAge ? String(Math.ceil(Number(p.maxAge) / 86400)) : '365',
  };
}

function versioningObject(base, f) {
  const params = {
    trashcan: { cleanoutDays: String(f.cleanoutDays || 0) },
    simple: { keep: String(f.keep || 5), cleanoutDays: String(f.cleanoutDays || 0) },
    staggered: { maxAge: String(Math.round(Number(f.maxAgeDays || 0) * 86400)) },
  }[f.type] || {};
  return { ...(base || {}), type: f.type === 'none' ? '' : f.type, params };
}

/**
 * `id`: edit that folder (`addDevice` pre-ticks a device: a pending folder offered by it).
 * Otherwise add one, `prefill` {id, label} and `share` (device IDs) pre-set.
 */
export function FolderDialog({ id, addDevice, prefill, share, onClose }) {
  const st = useStore();
  const editing = !!id;
  // Save starts from the daemon's object (fetched now); the form starts at once from the
  // configuration we hold, which has the same objects.
  const [loading] = useState(() => quiet(editing ? get('/rest/config/folders/' + seg(id)) : get('/rest/config/defaults/folder')));
  const defaults = (st.config && st.config.defaults) || {};
  const start = (editing ? folders().find((x) => x.id === id) : defaults.folder) || {};
  const defaultDir = (defaults.folder && defaults.folder.path) || '~';
  const [f, setF] = useState(() => {
    const fid = editing ? id : (prefill && prefill.id) || randomFolderId();
    const label = editing ? start.label || '' : (prefill && prefill.label) || '';
    return {
      id: fid, label, path: editing ? start.path || '' : joinPath(defaultDir, label || fid),
      type: start.type || 'sendreceive', watch: start.fsWatcherEnabled !== false, rescan: String(start.rescanIntervalS ?? 3600),
    };
  });
  const [pathTouched, setPathTouched] = useState(false);
  const [ver, setVer] = useState(() => versioningFields(start.versioning));
  const [shared, setSharedSet] = useState(() => {
    const s = new Set(editing ? (start.devices || []).map((d) => d.deviceID) : share || []);
    if (addDevice) s.add(addDevice);
    return s;
  });
  const defaultIgnores = editing ? '' : ((defaults.ignores && defaults.ignores.lines) || []).join('\n');
  const [ignores, setIgnores] = useState(defaultIgnores);
  const [ignoresLoaded, setIgnoresLoaded] = useState(editing ? null : defaultIgnores);
  const [ignoresError, setIgnoresError] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    loading.catch((e) => setError(e.message));
    // Ignores need the folder running; a paused one says so instead.
    if (editing) {
      get('/rest/db/ignores', { folder: id }).then((r) => {
        const t = (r.ignore || []).join('\n');
        setIgnoresLoaded(t);
        setIgnores((typed) => (typed === '' ? t : typed));
      }, (e) => setIgnoresError(e.message));
    }
  }, []);

  const set = (k) => (e) => {
    const v = e.target.type === 'checkbox' ? e.target.checked : e.target.value;
    setF((old) => {
      const n = { ...old, [k]: v };
      // A new folder's path follows its label until the user types a path.
      if (!editing && !pathTouched && (k === 'label' || k === 'id')) n.path = joinPath(defaultDir, n.label || n.id);
      return n;
    });
  };
  const setV = (k) => (e) => setVer({ ...ver, [k]: e.target.value });
  const toggle = (d) => { const n = new Set(shared); n.has(d) ? n.delete(d) : n.add(d); setSharedSet(n); };

  const save = async () => {
    if (busy) return; // Enter pressed again while saving
    setError('');
    if (!f.id.trim()) { setError('The folder ID must not be empty.'); return; }
    if (!f.path.trim()) { setError('Enter the folder path.'); return; }
    const rescan = Number(f.rescan);
    if (!Number.isInteger(rescan) || rescan < 0) { setError('The rescan interval must be a whole number of seconds.'); return; }
    if (!editing && folders().some((x) => x.id === f.id.trim())) { setError(`A folder with ID "${f.id.trim()}" already exists.`); return; }
    setBusy(true);
    try {
      const base = await loading;
      const obj = {
        ...base, id: f.id.trim(), label: f.label.trim(), path: f.path.trim(), type: f.type,
        fsWatcherEnabled: f.watch, rescanIntervalS: rescan,
        versioning: versioningObject(base.versioning, ver),
        devices: [...shared].map((d) => ({ deviceID: d })),
      };
      await holdingConfig(async () => {
        if (editing) await put('/rest/config/folders/' + seg(id), obj);
        else await post('/rest/config/folders', obj);
        const lines = ignores.split('\n').map((l) => l.replace(/\r$/, ''));
        while (lines.length && lines[lines.length - 1] === '') lines.pop();
        if (ignoresLoaded !== null && ignores !== ignoresLoaded && !ignoresError) await saveIgnores(obj.id, lines, !editing);
      });
      // Sharing may answer a pending offer; the daemon drops it without an event.
      refreshPending().catch(() => {});
      toast(editing ? 'Folder saved' : 'Folder added');
      onClose();
    } catch (e) {
      setError(e.message);
    } finally { setBusy(false); }
  };

  const remove = async () => {
    try {
      await del('/rest/config/folders/' + seg(id));
      toast('Folder removed (its files stay on disk)');
      onClose();
    } catch (e) { setError(e.message); }
  };

  return html`<${Modal} title=${editing ? `Edit folder ${f.label || f.id}` : 'Add folder'} onClose=${onClose} onSubmit=${save} error=${error} wide test="folder-dialog"
    footer=${html`<${SaveCancel} onSave=${save} onClose=${onClose} busy=${busy}
      extra=${editing && html`<${RemoveButton} what="this folder" onRemove=${remove} />`} />`}>
    <div class="grid2">
      <label>Label <input data-test="folder-label-input" value=${f.label} placeholder="e.g. Photos" onInput=${set('label')} /></label>
      <label>Folder ID <input data-test="folder-id-input" value=${f.id} readonly=${editing} spellcheck="false" onInput=${set('id')} />
        <span class="hint">The same on every device sharing it.</span></label>
    </div>
    <label>Path <input data-test="folder-path-input" value=${f.path} readonly=${editing} spellcheck="false"
      onInput=${(e) => { setPathTouched(true); set('path')(e); }} />
      <span class="hint">${editing ? 'A folder\'s path cannot change; remove it and add it again.' : 'Created if missing. ~/ is your home directory.'}</span></label>
    <div class="grid2">
      <label>Type <select data-test="folder-type-select" value=${f.type} onChange=${set('type')}>
        ${TYPES.map(([v, t]) => html`<option value=${v}>${t}</option>`)}
        <option value="receiveencrypted" disabled>Receive encrypted (not supported)</option>
      </select></label>
      <label>Rescan interval (s) <input data-test="folder-rescan-input" type="number" min="0" value=${f.rescan} onInput=${set('rescan')} /></label>
    </div>
    <label class="check"><input type="checkbox" data-test="folder-watch" checked=${f.watch} onChange=${set('watch')} /> Watch for changes</label>
    <fieldset><legend>Share with</legend>
      ${devices().length === 0 && html`<p class="muted small">No other devices yet.</p>`}
      ${devices().map((d) => html`<label class="check" key=${d.deviceID}><input type="checkbox" data-test=${'folder-share-' + d.deviceID}
        checked=${shared.has(d.deviceID)} onChange=${() => toggle(d.deviceID)} /> ${d.name || d.deviceID.slice(0, 7)}
        ${d.name && html`<span class="muted small">${d.deviceID.slice(0, 7)}</span>`}</label>`)}
    </fieldset>
    <fieldset><legend>File versioning</legend>
      <div class="grid2">
        <label>Keep old versions <select data-test="folder-versioning-select" value=${ver.type} onChange=${setV('type')}>
          <option value="none">No</option><option value="trashcan">Trash can (last one)</option>
          <option value="simple">Simple (last N)</option><option value="staggered">Staggered (thinning out)</option>
        </select></label>
        ${ver.type === 'simple' && html`<label>Versions to keep <input type="number" min="1" data-test="folder-versioning-keep" value=${ver.keep} onInput=${setV('keep')} /></label>`}
        ${(ver.type === 'simple' || ver.type === 'trashcan') && html`<label>Remove after (days, 0 = never) <input type="number" min="0" data-test="folder-versioning-cleanout" value=${ver.cleanoutDays} onInput=${setV('cleanoutDays')} /></label>`}
        ${ver.type === 'staggered' && html`<label>Maximum age (days, 0 = forever) <input type="number" min="0" data-test="folder-versioning-maxage" value=${ver.maxAgeDays} onInput=${setV('maxAgeDays')} /></label>`}
      </div>
    </fieldset>
    <fieldset><legend>Ignore patterns</legend>
      ${ignoresError ? html`<p class="muted small" data-test="folder-ignores-error">Ignore patterns cannot be edited now: ${ignoresError}</p>`
        : html`<textarea data-test="folder-ignores-input" rows="5" spellcheck="false" placeholder="One pattern per line, e.g. *.tmp" value=${ignores} onInput=${(e) => setIgnores(e.target.value)} />`}
    </fieldset>
  </${Modal}>`;
}

/**
 * Saves ignore patterns. A folder just added may take a moment to start, so a new one is
 * retried briefly before giving up with the server's message.
 */
async function saveIgnores(id, lines, fresh) {
  for (let i = 0; ; i++) {
    try {
      return await post('/rest/db/ignores', { ignore: lines }, { folder: id });
    } catch (e) {
      if (!fresh || i >= 5 || e.status !== 404) throw new Error('Folder saved, but not its ignore patterns: ' + e.message);
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}
