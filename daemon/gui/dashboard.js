// The dashboard (#/): this device, pending requests, folders, devices.

import { html, useState } from './vendor/preact-htm.js';
import { post, patch, put, del, seg } from './api.js';
import {
  S, useStore, myID, myName, devices, folders, deviceNames, deviceName, deviceCompletion, sharedFolders,
  refreshFolder, refreshPending, refreshConnections,
} from './store.js';
import { bytes, rate, duration, ago, pct, plural, memo, attempt } from './util.js';
import { openDialog } from './dialogs.js';
import { invitedFolders, myAddresses } from './invite.js';

export function Dashboard() {
  const s = useStore();
  if (!s.loaded) return html`<p class="muted">Loading…</p>`;
  return html`
    <${Pending} />
    <div class="columns">
      <section class="col-folders">
        <div class="section-head">
          <h2>Folders <span class="count">${folders().length}</span></h2>
          <div class="actions">
            ${folders().length > 1 && html`<button data-test="rescan-all" onClick=${rescanAll}>Rescan all</button>`}
            <button data-test="paste-invite" onClick=${() => openDialog('pasteInvite')}>Paste invite</button>
            <button class="primary" data-test="add-folder" onClick=${() => openDialog('folder', {})}>+ Add folder</button>
          </div>
        </div>
        <${FolderList} />
      </section>
      <section class="col-side">
        <${ThisDevice} />
        <div class="section-head">
          <h2>Devices <span class="count">${devices().length}</span></h2>
          <div class="actions">
            ${devices().length > 1 && html`<button data-test="pause-all-devices" onClick=${() => pauseAll(true)}>Pause all</button>
              <button data-test="resume-all-devices" onClick=${() => pauseAll(false)}>Resume all</button>`}
            <button class="primary" data-test="add-device" onClick=${() => openDialog('device', {})}>+ Add device</button>
          </div>
        </div>
        <${DeviceList} />
      </section>
    </div>`;
}

// Without `folder` / `device` the daemon scans every folder / pauses every device.
const rescanAll = () => attempt(() => post('/rest/db/scan'), 'Rescanned every folder');
const pauseAll = (paused) => attempt(async () => {
  await post('/rest/system/' + (paused ? 'pause' : 'resume'));
  await refreshConnections();
});

// ---- this device -------------------------------------------------------------------------

function ThisDevice() {
  const st = S.status || {};
  const listeners = Object.values(st.connectionServiceStatus || {});
  const listenOk = listeners.filter((l) => !l.error).length;
  const disc = Object.values(st.discoveryStatus || {});
  const discOk = disc.filter((d) => !d.error).length;
  const discErrors = Object.entries(st.discoveryStatus || {}).filter(([, d]) => d.error).map(([k, d]) => k + ': ' + d.error).join('\n');
  const listenErrors = Object.entries(st.connectionServiceStatus || {}).filter(([, l]) => l.error).map(([k, l]) => k + ': ' + l.error).join('\n');
  return html`<div class="card this-device" data-test="this-device">
    <div class="card-head"><strong data-test="this-device-name">${myName() || 'This device'}</strong></div>
    <dl class="facts">
      <dt>Device ID</dt>
      <dd><code class="id" data-test="this-device-id" title=${myID()}>${myID()}</code>
        <button class="small" data-test="show-id" onClick=${() => openDialog('showId', { id: myID(), name: myName() })}>Show ID</button></dd>
      <dt>Download</dt><dd data-test="rate-in">${rate(S.rates.in)}</dd>
      <dt>Upload</dt><dd data-test="rate-out">${rate(S.rates.out)}</dd>
      <dt>Addresses</dt><dd class="path small" data-test="this-device-addresses">${myAddresses().join(', ') || 'none yet'}</dd>
      <dt>Listeners</dt><dd title=${listenErrors} class=${listenOk < listeners.length ? 'warn' : ''} data-test="listeners">${listenOk}/${listeners.length}</dd>
      <dt>Discovery</dt><dd title=${discErrors} class=${discOk < disc.length ? 'warn' : ''} data-test="discovery">${disc.length ? `${discOk}/${disc.length}` : 'off'}</dd>
      <dt>Uptime</dt><dd>${duration(st.uptime)}</dd>
      <dt>Version</dt><dd>${(S.version && S.version.version) || ''}</dd>
    </dl>
  </div>`;
}

// ---- folders --------------------------------------------------------------------------------

const STATE_LABEL = {
  idle: 'Up to date', scanning: 'Scanning', 'scan-waiting': 'Waiting to scan', syncing: 'Syncing',
  'sync-waiting': 'Waiting to sync', 'sync-preparing': 'Preparing to sync', cleaning: 'Cleaning',
  'clean-waiting': 'Waiting to clean', error: 'Error', paused: 'Paused', unknown: 'Loading…',
};

/** The state shown: paused comes from the configuration, the rest from status/events. */
export function folderState(f, st) {
  if (f.paused) return 'paused';
  return (st && st.state) || 'unknown';
}

/** Past this many folders, cards start collapsed (one line each) and a filter shows. */
const MANY = 12;

function FolderList() {
  const names = deviceNames();
  const [filter, setFilter] = useState('');
  const all = folders();
  const many = all.length > MANY;
  const q = filter.trim().toLowerCase();
  const shown = q ? all.filter((f) => f.id.toLowerCase().includes(q) || (f.label || '').toLowerCase().includes(q)) : all;
  return html`<div class="list" data-test="folder-list">
    ${many && html`<input type="search" data-test="folder-filter" placeholder=${`Filter ${all.length} folders`} value=${filter}
      onInput=${(e) => setFilter(e.target.value)} />`}
    ${shown.map((f) => html`<${FolderCard} key=${f.id} f=${f} st=${S.folderStatus[f.id]}
      stats=${S.folderStats[f.id]} scan=${S.scanProgress[f.id]} names=${names} collapsed=${many} />`)}
    ${all.length === 0 && html`<p class="muted">No folders yet.</p>`}
  </div>`;
}

const FolderCard = memo(({ f, st, stats, scan, names, collapsed }) => {
  const [open, setOpen] = useState(!collapsed);
  const state = folderState(f, st);
  const s = st || {};
  const done = pct(s.globalBytes, s.needBytes);
  const needItems = s.needTotalItems || 0;
  const failed = s.pullErrors || 0;
  const shared = f.devices.map((d) => d.deviceID).filter((id) => id !== myID());
  let label = STATE_LABEL[state] || state;
  if (state === 'idle' && needItems > 0) label = 'Out of sync';
  if (state === 'scanning' && scan && scan.total) label += ` ${Math.floor((100 * scan.current) / scan.total)}%`;
  if (state === 'syncing') label += ` ${done}%`;
  const togglePause = () => attempt(() => patch('/rest/config/folders/' + seg(f.id), { paused: !f.paused }));
  const rescan = () => attempt(() => post('/rest/db/scan', undefined, { folder: f.id }), `Rescanned ${f.label || f.id}`);
  const override = () => confirm('Make every other device take this folder\'s files as they are here?')
    && attempt(async () => { await post('/rest/db/override', undefined, { folder: f.id }); refreshFolder(f.id); }, 'Overridden');
  const revert = () => confirm('Undo the local changes in this receive-only folder?')
    && attempt(async () => { await post('/rest/db/revert', undefined, { folder: f.id }); refreshFolder(f.id); }, 'Reverted');
  return html`<div class=${'card folder state-' + state} data-test=${'folder-' + f.id} data-state=${state} data-completion=${done}>
    <button class="card-head toggle" aria-expanded=${open} data-test="folder-toggle" onClick=${() => setOpen(!open)}>
      <span class="name" title=${f.id}>${f.label || f.id}</span>
      <span class="badge" data-test="folder-state">${label}</span>
    </button>
    ${open && html`<dl class="facts">
      <dt>Folder ID</dt><dd><code>${f.id}</code></dd>
      <dt>Path</dt><dd class="path">${f.path}</dd>
      ${s.error && html`<dt>Error</dt><dd class="error" data-test="folder-error">${s.error}</dd>`}
      <dt>Type</dt><dd>${f.type}</dd>
      <dt>Local</dt><dd>${plural(s.localFiles, 'file')}, ${plural(s.localDirectories, 'dir')}, ${bytes(s.localBytes)}</dd>
      <dt>Global</dt><dd>${plural(s.globalFiles, 'file')}, ${plural(s.globalDirectories, 'dir')}, ${bytes(s.globalBytes)}</dd>
      ${needItems > 0 && html`<dt>Out of sync</dt><dd data-test="folder-need">${plural(needItems, 'item')}, ${bytes(s.needBytes)}</dd>`}
      ${failed > 0 && html`<dt>Failed items</dt><dd class="error"><a href=${'#/failed?folder=' + encodeURIComponent(f.id)} data-test="folder-failed">${failed}</a></dd>`}
      <dt>Last scan</dt><dd>${ago(stats && stats.lastScan)}</dd>
      ${stats && stats.lastFile && stats.lastFile.filename && html`<dt>Last file</dt><dd class="path">${stats.lastFile.filename}${stats.lastFile.deleted ? ' (deleted)' : ''}</dd>`}
      <dt>Shared with</dt><dd>${shared.length ? shared.map((id) => names[id] || id.slice(0, 7)).join(', ') : 'nobody yet'}</dd>
      <dt>Versioning</dt><dd>${(f.versioning && f.versioning.type) || 'none'}</dd>
      <dt>Watching</dt><dd>${f.fsWatcherEnabled ? 'yes' : 'no'}, rescan every ${duration(f.rescanIntervalS)}</dd>
    </dl>`}
    ${open && html`<div class="buttons">
      <button data-test="folder-pause" onClick=${togglePause}>${f.paused ? 'Resume' : 'Pause'}</button>
      <button data-test="folder-rescan" disabled=${f.paused} onClick=${rescan}>Rescan</button>
      ${f.type === 'sendonly' && needItems > 0 && html`<button class="danger" data-test="folder-override" onClick=${override}>Override changes</button>`}
      ${f.type === 'receiveonly' && html`<button class="danger" data-test="folder-revert" onClick=${revert}>Revert local changes</button>`}
      <button data-test=${'share-invite-' + f.id} onClick=${() => openDialog('shareInvite', { folder: f })}>Share by invite</button>
      <button data-test="folder-edit" onClick=${() => openDialog('folder', { id: f.id })}>Edit</button>
    </div>`}
  </div>`;
});

// ---- devices ---------------------------------------------------------------------------------

function DeviceList() {
  const shared = sharedFolders();
  return html`<div class="list" data-test="device-list">
    ${devices().map((d) => html`<${DeviceCard} key=${d.deviceID} d=${d} conn=${S.conns[d.deviceID]}
      r=${S.rates[d.deviceID]} completion=${completionOf(d.deviceID, shared)} stats=${S.deviceStats[d.deviceID]} folders=${shared[d.deviceID] || ''} />`)}
    ${devices().length === 0 && html`<p class="muted">No other devices yet. Add one with its device ID, or share a folder by invite.</p>`}
  </div>`;
}

/** Byte-weighted completion; a device that shares nothing has nothing to fetch (100%). */
const completionOf = (id, shared) => {
  const c = deviceCompletion(id);
  return c === null && !shared[id] ? 100 : c;
};

const DeviceCard = memo(({ d, conn, r, completion, stats, folders: sharedList }) => {
  const connected = !!(conn && conn.connected);
  const state = d.paused ? 'paused' : connected ? (completion !== null && completion < 100 ? 'syncing' : 'connected') : 'disconnected';
  const label = { paused: 'Paused', syncing: `Syncing ${completion}%`, connected: 'Up to date', disconnected: 'Disconnected' }[state];
  const togglePause = () => attempt(async () => {
    await post('/rest/system/' + (d.paused ? 'resume' : 'pause'), undefined, { device: d.deviceID });
    refreshConnections().catch(() => {});
  });
  return html`<div class=${'card device state-' + state} data-test=${'device-' + d.deviceID}
      data-connected=${String(connected)} data-completion=${completion === null ? '' : completion}>
    <div class="card-head"><span class="name" title=${d.deviceID}>${d.name || d.deviceID.slice(0, 7)}</span>
      <span class="badge">${label}</span></div>
    <dl class="facts">
      ${connected ? html`
        <dt>Address</dt><dd class="path" data-test="device-address">${conn.address} <span class="muted">(${conn.type}${conn.isLocal ? ', LAN' : ''}${conn.holePunched ? ', hole punched' : ''})</span></dd>
        <dt>Rates</dt><dd>↓ ${rate(r && r.in)} ↑ ${rate(r && r.out)}</dd>
        ${completion !== null && html`<dt>Completion</dt><dd>${completion}%</dd>`}
        ${conn.clientVersion && html`<dt>Version</dt><dd>${conn.clientVersion}</dd>`}` : html`
        <dt>Last seen</dt><dd>${ago(stats && stats.lastSeen)}</dd>
        <dt>Addresses</dt><dd class="path">${(d.addresses || []).join(', ')}</dd>`}
      <dt>Folders</dt><dd data-test="device-folders">${sharedList || 'none shared'}</dd>
    </dl>
    <div class="buttons">
      <button data-test="device-pause" onClick=${togglePause}>${d.paused ? 'Resume' : 'Pause'}</button>
      <button data-test="device-edit" onClick=${() => openDialog('device', { id: d.deviceID })}>Edit</button>
    </div>
  </div>`;
});

// ---- pending devices and folders -------------------------------------------------------

/** Folders `device` offers us (pending folders), as [{id, label}]. */
export function offeredBy(device) {
  return Object.entries(S.pendingFolders || {})
    .filter(([, p]) => p.offeredBy && p.offeredBy[device])
    .map(([id, p]) => ({ id, label: p.offeredBy[device].label }));
}

function Pending() {
  const known = new Set(devices().map((d) => d.deviceID));
  const pd = Object.entries(S.pendingDevices || {}).filter(([id]) => !known.has(id));
  const pf = [];
  for (const [fid, p] of Object.entries(S.pendingFolders || {})) {
    const local = folders().find((f) => f.id === fid);
    for (const [dev, o] of Object.entries(p.offeredBy || {})) {
      // Offers already answered (shared since) wait for the next refresh: hide them now.
      if (known.has(dev) && !(local && local.devices.some((d) => d.deviceID === dev))) pf.push({ fid, dev, o });
    }
  }
  if (!pd.length && !pf.length) return null;
  return html`<div class="pending">
    ${pd.map(([id, p]) => html`<${PendingDevice} key=${id} id=${id} p=${p} />`)}
    ${pf.map((x) => html`<${PendingFolder} key=${x.fid + x.dev} ...${x} />`)}
  </div>`;
}

function PendingDevice({ id, p }) {
  const offers = offeredBy(id);
  // The address it came from (host:port of its QUIC socket) is worth dialing back.
  const addr = p.address ? [p.address.includes('://') ? p.address : 'quic://' + p.address] : [];
  const accept = () => {
    const hints = {};
    for (const f of invitedFolders()) hints[f] = 'you sent an invite for it';
    for (const o of offers) hints[o.id] = 'offered by this device';
    openDialog('device', { prefill: { deviceID: id, name: p.name, addresses: [...addr, 'dynamic'] }, share: Object.keys(hints), hints });
  };
  const ignore = () => attempt(async () => {
    const list = [...(S.config.remoteIgnoredDevices || []), { deviceID: id, name: p.name || '', address: p.address || '', time: new Date().toISOString() }];
    await put('/rest/config', { remoteIgnoredDevices: list });
    await del('/rest/cluster/pending/devices', { device: id }).catch(() => {});
    await refreshPending();
  }, 'Device ignored');
  const dismiss = () => attempt(async () => { await del('/rest/cluster/pending/devices', { device: id }); await refreshPending(); });
  return html`<div class="banner" data-test=${'pending-device-' + id}>
    <p>Device <strong>${p.name || id.slice(0, 7)}</strong> <code class="id">${id}</code> at ${p.address || 'an unknown address'} wants to connect.
      ${offers.length > 0 && html` It offers ${offers.map((o) => o.label || o.id).join(', ')}.`}</p>
    <div class="buttons">
      <button class="primary" data-test="pending-device-accept" onClick=${accept}>Add device</button>
      <button data-test="pending-device-ignore" onClick=${ignore}>Ignore</button>
      <button data-test="pending-device-dismiss" onClick=${dismiss}>Dismiss</button>
    </div>
  </div>`;
}

function PendingFolder({ fid, dev, o }) {
  const existing = folders().find((f) => f.id === fid);
  const accept = () => existing
    ? openDialog('folder', { id: fid, addDevice: dev })
    : openDialog('folder', { prefill: { id: fid, label: o.label || fid }, share: [dev] });
  const ignore = () => attempt(async () => {
    const d = devices().find((x) => x.deviceID === dev);
    const list = [...((d && d.ignoredFolders) || []), { id: fid, label: o.label || '', time: new Date().toISOString() }];
    await patch('/rest/config/devices/' + seg(dev), { ignoredFolders: list });
    await del('/rest/cluster/pending/folders', { folder: fid, device: dev }).catch(() => {});
    await refreshPending();
  }, 'Folder ignored');
  const dismiss = () => attempt(async () => { await del('/rest/cluster/pending/folders', { folder: fid, device: dev }); await refreshPending(); });
  return html`<div class="banner" data-test=${'pending-folder-' + fid} data-device=${dev}>
    <p><strong>${deviceName(dev)}</strong> wants to share folder <strong>${o.label || fid}</strong> (<code>${fid}</code>).
      ${existing && ' You have a folder with this ID: accepting shares it with them.'}</p>
    <div class="buttons">
      <button class="primary" data-test="pending-folder-accept" onClick=${accept}>${existing ? 'Share' : 'Add folder'}</button>
      <button data-test="pending-folder-ignore" onClick=${ignore}>Ignore</button>
      <button data-test="pending-folder-dismiss" onClick=${dismiss}>Dismiss</button>
    </div>
  </div>`;
}

