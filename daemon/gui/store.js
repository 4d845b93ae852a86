// The dashboard's data: loaded once, then kept current by events. Objects in `S` are
// replaced (never mutated) when they change, so memoised cards compare by identity.

import { useState, useEffect } from './vendor/preact-htm.js';
import { get, limiter, pollEvents } from './api.js';

export const S = {
  config: null, // /rest/config, whole (ConfigSaved events carry it too)
  status: null, // /rest/system/status
  version: null,
  conns: {}, // device ID → connection object
  rates: { in: 0, out: 0 }, // device ID → {in, out}; and the totals
  folderStatus: {}, // folder ID → /rest/db/status
  folderStats: {}, // folder ID → {lastScan, lastFile}
  deviceStats: {}, // device ID → {lastSeen}
  completion: {}, // device ID → {folder ID → {completion, globalBytes, needBytes, needItems}}
  scanProgress: {}, // folder ID → {current, total, rate}
  pendingDevices: {},
  pendingFolders: {},
  discovery: {},
  transfers: {}, // "folder\0file" → {folder, item, action, started, bytesTotal, bytesDone}
  online: true,
  loaded: false,
};

// ---- change notification ----------------------------------------------------------------

const listeners = new Set();
let scheduled = false;

/** Marks the state changed; listeners run once per animation frame at most. */
export function changed() {
  if (scheduled) return;
  scheduled = true;
  const flush = () => { scheduled = false; listeners.forEach((f) => f()); };
  // rAF does not run in a hidden tab; a timer keeps state moving there.
  if (document.hidden) setTimeout(flush, 250); else requestAnimationFrame(flush);
}

/** Re-renders the calling component whenever the store changes. */
export function useStore() {
  const [, setTick] = useState(0);
  useEffect(() => {
    const f = () => setTick((t) => t + 1);
    listeners.add(f);
    return () => listeners.delete(f);
  }, []);
  return S;
}

// ---- derived look-ups ---------------------------------------------------------------

export const myID = () => (S.status && S.status.myID) || (window.metadata || {}).deviceID || '';

/** Configured remote devices (the config lists this device too). */
export const devices = () => ((S.config && S.config.devices) || []).filter((d) => d.deviceID !== myID());
export const folders = () => (S.config && S.config.folders) || [];

let namesFor = null, names = {};
/** device ID → name (or short ID), recomputed only when the configuration changes. */
export function deviceNames() {
  if (namesFor !== S.config) {
    namesFor = S.config;
    names = {};
    for (const d of (S.config && S.config.devices) || []) names[d.deviceID] = d.name || d.deviceID.slice(0, 7);
  }
  return names;
}

let sharedFor = null, shared = {};
/** device ID → "label, label, …" of the folders shared with it (per configuration). */
export function sharedFolders() {
  if (sharedFor !== S.config) {
    sharedFor = S.config;
    const lists = {};
    for (const f of folders()) for (const d of f.devices) (lists[d.deviceID] = lists[d.deviceID] || []).push(f.label || f.id);
    shared = {};
    for (const [id, l] of Object.entries(lists)) shared[id] = l.length > 6 ? `${l.slice(0, 5).join(', ')} and ${l.length - 5} more` : l.join(', ');
  }
  return shared;
}

/** A device's name; `id` may be full or short (events name devices by short ID). */
export function deviceName(id) {
  if (!id) return '';
  const n = deviceNames();
  if (n[id]) return n[id];
  const full = Object.keys(n).find((k) => k.startsWith(id));
  return full ? n[full] : id.slice(0, 7);
}

export function myName() {
  const me = ((S.config && S.config.devices) || []).find((d) => d.deviceID === myID());
  return (me && me.name) || '';
}

/** A device's completion over the folders it shares: Syncthing's byte-weighted mean. */
export function deviceCompletion(id) {
  const per = S.completion[id];
  if (!per) return null;
  let global = 0, need = 0, seen = false;
  for (const c of Object.values(per)) { global += c.globalBytes || 0; need += c.needBytes || 0; seen = true; }
  if (!seen) return null;
  return global ? Math.floor(100 * (1 - need / global)) : 100;
}

// ---- loading ------------------------------------------------------------------------------

const statusQueue = limiter(6); // folder status fetches
const completionQueue = limiter(3); // remote completion: low priority

export function refreshFolder(id) {
  statusQueue.run('s:' + id, async () => {
    const f = folders().find((x) => x.id === id);
    if (!f) return;
    try {
      const st = await get('/rest/db/status', { folder: id });
      S.folderStatus = { ...S.folderStatus, [id]: st };
    } catch (e) {
      // A folder that does not run (bad path...) still shows, with the reason.
      S.folderStatus = { ...S.folderStatus, [id]: { state: 'error', error: e.message } };
    }
    changed();
  });
}

function setCompletion(device, folder, c) {
  S.completion = { ...S.completion, [device]: { ...(S.completion[device] || {}), [folder]: c } };
  changed();
}

/** Fetches the completion of every folder `device` shares (it is connected). */
function refreshDeviceCompletion(device) {
  for (const f of folders()) {
    if (f.paused || !f.devices.some((d) => d.deviceID === device)) continue;
    completionQueue.run('c:' + device + f.id, async () => {
      try {
        setCompletion(device, f.id, await get('/rest/db/completion', { folder: f.id, device }));
      } catch { /* the folder is not running: no completion to show */ }
    });
  }
}

let lastConns = null;
/** Connections and rates (byte counter differences, as Syncthing's GUI does). */
export async function refreshConnections() {
  const c = await get('/rest/system/connections');
  const now = Date.now();
  const rates = { in: 0, out: 0 };
  if (lastConns) {
    const dt = (now - lastConns.at) / 1000 || 1;
    const r = (a, b) => Math.max(0, (a - b) / dt);
    rates.in = r(c.total.inBytesTotal, lastConns.c.total.inBytesTotal);
    rates.out = r(c.total.outBytesTotal, lastConns.c.total.outBytesTotal);
    for (const [id, x] of Object.entries(c.connections)) {
      const o = lastConns.c.connections[id];
      if (o) rates[id] = { in: r(x.inBytesTotal, o.inBytesTotal), out: r(x.outBytesTotal, o.outBytesTotal) };
    }
  }
  lastConns = { at: now, c };
  // Keep objects that did not change so device cards do not re-render.
  const conns = {};
  for (const [id, x] of Object.entries(c.connections)) {
    const o = S.conns[id];
    const same = o && o.connected === x.connected && o.address === x.address && o.type === x.type && o.paused === x.paused;
    conns[id] = same ? o : x;
    if (x.connected && (!o || !o.connected)) refreshDeviceCompletion(id);
  }
  S.conns = conns;
  S.rates = rates;
  changed();
}

export const refreshPending = async () => {
  const [d, f] = await Promise.all([get('/rest/cluster/pending/devices'), get('/rest/cluster/pending/folders')]);
  S.pendingDevices = d || {};
  S.pendingFolders = f || {};
  changed();
};

export const refreshStats = async () => {
  const [f, d] = await Promise.all([get('/rest/stats/folder'), get('/rest/stats/device')]);
  S.folderStats = f || {};
  S.deviceStats = d || {};
  changed();
};

export const refreshDiscovery = async () => {
  S.discovery = (await get('/rest/system/discovery')) || {};
  changed();
};

export const refreshStatus = async () => {
  S.status = await get('/rest/system/status');
  changed();
};

export async function refreshConfig() {
  setConfig(await get('/rest/config'));
}

/** A new configuration: folders that appeared get their status fetched. */
function setConfig(config) {
  const before = S.config;
  S.config = config;
  const had = new Map(((before && before.folders) || []).map((f) => [f.id, f]));
  for (const f of config.folders || []) {
    const old = had.get(f.id);
    if (!old || old.paused !== f.paused || old.path !== f.path || old.type !== f.type) refreshFolder(f.id);
  }
  changed();
}

// A dialog's save may take several requests (add a device, then share folders with it).
// Configurations saved meanwhile wait, so the page shows the result of the whole save, not
// a half-done one a user (or a test) might act on.
let holds = 0;
let held = null;

/** Runs `f` (async) with configuration updates held until it ends. */
export async function holdingConfig(f) {
  holds++;
  try {
    return await f();
  } finally {
    if (--holds === 0 && held) {
      const c = held;
      held = null;
      setConfig(c);
    }
  }
}

/** Everything, once (at start and after the daemon comes back). */
export async function loadAll() {
  const [config, status, version] = await Promise.all([
    get('/rest/config'), get('/rest/system/status'), get('/rest/system/version'),
  ]);
  S.status = status;
  S.version = version;
  S.folderStatus = {};
  S.completion = {};
  S.transfers = {}; // a finish missed while away would leave a transfer forever
  lastConns = null;
  S.config = null;
  setConfig(config);
  S.loaded = true;
  changed();
  // The rest is not needed for the first paint.
  const soft = (p) => p.catch(() => {});
  soft(refreshConnections());
  soft(refreshPending());
  soft(refreshStats());
  soft(refreshDiscovery());
}

// ---- events -------------------------------------------------------------------------------

/** Calls `f` at most once per `ms` (trailing), for bursts of events. */
function debounce(f, ms) {
  let t = null;
  return () => {
    if (t) return;
    t = setTimeout(() => { t = null; f().catch(() => {}); }, ms);
  };
}

const soonConnections = debounce(refreshConnections, 300);
const soonPending = debounce(refreshPending, 300);
const soonStats = debounce(refreshStats, 2000);
const soonDiscovery = debounce(refreshDiscovery, 2000);

const tKey = (d) => d.folder + '\0' + d.item;

/** Applies one event to the state (exported for debugging: `peerfoldDebug.handleEvent`). */
export function handleEvent(ev) {
  const d = ev.data || {};
  switch (ev.type) {
    case 'ConfigSaved':
      if (!d.folders) refreshConfig().catch(() => {});
      else if (holds) held = d;
      else setConfig(d);
      break;
    case 'StateChanged': {
      const old = S.folderStatus[d.folder] || {};
      S.folderStatus = { ...S.folderStatus, [d.folder]: { ...old, state: d.to } };
      if (d.to !== 'scanning') {
        const { [d.folder]: _, ...rest } = S.scanProgress;
        S.scanProgress = rest;
      }
      // Leaving a busy state: counts, errors and last scan have moved.
      if (d.to === 'idle' || d.to === 'error') { refreshFolder(d.folder); soonStats(); }
      break;
    }
    case 'FolderSummary': {
      const old = S.folderStatus[d.folder] || {};
      S.folderStatus = { ...S.folderStatus, [d.folder]: { ...old, ...d.summary } };
      break;
    }
    case 'FolderCompletion':
      if (d.device && d.device !== myID()) setCompletion(d.device, d.folder, d);
      break;
    case 'FolderErrors': {
      const old = S.folderStatus[d.folder] || {};
      const n = (d.errors || []).length;
      S.folderStatus = { ...S.folderStatus, [d.folder]: { ...old, pullErrors: n, errors: n } };
      break;
    }
    case 'FolderScanProgress':
      S.scanProgress = { ...S.scanProgress, [d.folder]: d };
      break;
    case 'LocalIndexUpdated':
    case 'RemoteIndexUpdated':
      soonStats();
      break;
    case 'DeviceConnected':
    case 'DeviceDisconnected':
      soonConnections();
      soonStats();
      break;
    case 'DeviceDiscovered':
      soonDiscovery();
      break;
    case 'PendingDevicesChanged':
    case 'PendingFoldersChanged':
      soonPending();
      break;
    case 'ItemStarted':
      S.transfers = { ...S.transfers, [tKey(d)]: { folder: d.folder, item: d.item, action: d.action, started: Date.now() } };
      break;
    case 'ItemFinished': {
      const { [tKey(d)]: _, ...rest } = S.transfers;
      S.transfers = rest;
      break;
    }
    case 'DownloadProgress': {
      // Syncthing's shape: {folder: {file: {bytesTotal, bytesDone, ...}}}.
      const next = { ...S.transfers };
      for (const [folder, files] of Object.entries(d)) {
        for (const [item, p] of Object.entries(files || {})) {
          const k = folder + '\0' + item;
          const old = next[k] || { folder, item, action: 'update', started: Date.now() };
          const now = Date.now();
          const dt = old.at ? (now - old.at) / 1000 : 0;
          const rate = dt > 0 ? Math.max(0, (p.bytesDone - (old.bytesDone || 0)) / dt) : old.rate || 0;
          next[k] = { ...old, bytesTotal: p.bytesTotal, bytesDone: p.bytesDone, at: now, rate };
        }
      }
      S.transfers = next;
      break;
    }
    case 'StartupComplete':
      loadAll().catch(() => {});
      break;
    default:
      return;
  }
  changed();
}

let wasOffline = false;

/** Starts the event loop and the connection-rate poll. */
export function startLive() {
  pollEvents(
    (batch) => batch.forEach(handleEvent),
    (ok) => {
      if (ok && wasOffline) loadAll().catch(() => {}); // the daemon came back: start over
      wasOffline = !ok;
      if (S.online !== ok) { S.online = ok; changed(); }
    },
  );
  setInterval(() => { if (!document.hidden && S.online) refreshConnections().catch(() => {}); }, 5000);
  // Ages ("5 min ago") and uptime move without events.
  setInterval(() => { if (!document.hidden) refreshStatus().catch(() => {}); }, 30000);
}
