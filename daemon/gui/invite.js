// Invite pairing, all in the browser: a link carries this device's ID, name, addresses and
// one folder; the receiving side adds the device and the folder in one go. The inviting
// side then sees a pending device offering that folder and accepts it: one click per side.

import { html, useState, useRef, useMemo } from './vendor/preact-htm.js';
import { api } from './api.js';
import { S, myID, myName, devices, folders, refreshPending } from './store.js';
import { Modal, toast, normalizeDeviceId } from './util.js';
import { copyText, SaveCancel, useDeviceIdCheck } from './dialogs.js';

/** Addresses others can dial: listeners' LAN and WAN addresses, without wildcards. */
export function myAddresses() {
  const out = [];
  for (const [url, l] of Object.entries((S.status && S.status.connectionServiceStatus) || {})) {
    for (const a of [...(l.lanAddresses || []), ...(l.wanAddresses || []), url]) {
      if (!a || out.includes(a)) continue;
      // 0.0.0.0 / [::] say "any interface": nothing another device can dial.
      if (/:\/\/(0\.0\.0\.0|\[::\]|\[0:0:0:0:0:0:0:0\])(:|$)/.test(a)) continue;
      out.push(a);
    }
  }
  return out;
}

/** peerfold://invite?device=…&name=…&addr=…&folder=…&label=… (every value percent-encoded). */
export function inviteLink(folder) {
  const q = [['device', myID()], ['name', myName()], ...myAddresses().map((a) => ['addr', a]),
    ['folder', folder.id], ['label', folder.label || folder.id]];
  return 'peerfold://invite?' + q.map(([k, v]) => k + '=' + encodeURIComponent(v)).join('&');
}

/** The parts of an invite link, or {error}. */
export function parseInvite(text) {
  const t = text.trim();
  const m = /^peerfold:\/\/invite\/?\?(.*)$/s.exec(t);
  if (!m) return { error: 'An invite starts with peerfold://invite?' };
  const q = new URLSearchParams(m[1]);
  const inv = { device: q.get('device') || '', name: q.get('name') || '', addrs: q.getAll('addr').filter(Boolean), folder: q.get('folder') || '', label: q.get('label') || '' };
  if (!inv.device) return { error: 'The invite has no device ID.' };
  if (!inv.folder) return { error: 'The invite names no folder.' };
  return inv;
}

// Invites this browser handed out: the invited device's cluster request names no folder
// (peerfold records offers from known devices only), so accepting it pre-ticks these.
const INVITES_KEY = 'peerfold.invites';
const INVITE_DAYS = 7;

function rememberInvite(folderId) {
  try {
    const all = JSON.parse(localStorage.getItem(INVITES_KEY) || '{}');
    all[folderId] = Date.now();
    localStorage.setItem(INVITES_KEY, JSON.stringify(all));
  } catch { /* storage off: the user ticks the folder by hand */ }
}

/** Forgets invites once answered: a later, unrelated device must not get them pre-ticked. */
export function forgetInvites(folderIds) {
  try {
    const all = JSON.parse(localStorage.getItem(INVITES_KEY) || '{}');
    for (const id of folderIds) delete all[id];
    localStorage.setItem(INVITES_KEY, JSON.stringify(all));
  } catch { /* nothing kept */ }
}

/** Folder IDs this browser sent invites for lately. */
export function invitedFolders() {
  try {
    const all = JSON.parse(localStorage.getItem(INVITES_KEY) || '{}');
    return Object.keys(all).filter((id) => Date.now() - all[id] < INVITE_DAYS * 86400e3);
  } catch { return []; }
}

export function ShareInviteDialog({ folder, onClose }) {
  const link = useMemo(() => { rememberInvite(folder.id); return inviteLink(folder); }, [folder]);
  const ref = useRef(null);
  const addrs = myAddresses();
  return html`<${Modal} title=${'Share "' + (folder.label || folder.id) + '" by invite'} onClose=${onClose} test="share-invite-dialog"
    footer=${html`<span class="grow"></span><button data-test="invite-copy" onClick=${() => copyText(link, ref.current)}>Copy link</button>
      <button class="primary" data-test="dialog-cancel" onClick=${onClose}>Close</button>`}>
    <p class="small">On the other device, choose <em>Paste invite</em> and paste this link (or scan the code).
      It will then ask to connect here: accept it to start syncing.</p>
    ${addrs.length === 0 && html`<p class="warn small">This device has no address others can dial yet; the other side will rely on discovery.</p>`}
    <textarea ref=${ref} class="invite" readonly rows="4" data-test="invite-link" value=${link} onFocus=${(e) => e.target.select()} />
    <img class="qr" alt="QR code of the invite link" data-test="invite-qr" src=${'/qr/?text=' + encodeURIComponent(link)} />
  </${Modal}>`;
}

export function PasteInviteDialog({ onClose }) {
  const [text, setText] = useState('');
  const [path, setPath] = useState('');
  const [pathTouched, setPathTouched] = useState(false);
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const inv = text.trim() ? parseInvite(text) : null;
  const check = useDeviceIdCheck(inv && !inv.error ? inv.device : '', { allowExisting: true });
  const existingFolder = inv && !inv.error ? folders().find((f) => f.id === inv.folder) : null;
  const existingDevice = check.id ? devices().find((d) => d.deviceID === check.id) : null;
  const defaultPath = ((S.config && S.config.defaults && S.config.defaults.folder && S.config.defaults.folder.path) || '~').replace(/\/+$/, '');
  const suggested = inv && !inv.error ? defaultPath + '/' + (inv.label || inv.folder).replace(/[/\\]/g, '_') : '';
  const shownPath = existingFolder ? existingFolder.path : pathTouched ? path : suggested;

  /**
   * One request, sent before anything is awaited: the device and the folder shared with it
   * go in together (PUT of the devices and folders lists), so the accept is atomic and
   * survives the user leaving the page at once.
   */
  const accept = async () => {
    if (busy) return; // Enter pressed again while saving
    setError('');
    if (!inv || inv.error) { setError((inv && inv.error) || 'Paste an invite link first.'); return; }
    if (!existingFolder && !shownPath.trim()) { setError('Enter where the folder goes.'); return; }
    let id;
    try { id = normalizeDeviceId(inv.device); } catch (e) { setError('Device ID ' + inv.device + ': ' + e.message); return; }
    if (id === myID()) { setError('This invite is from this device itself.'); return; }
    const config = S.config;
    const defaults = config.defaults || {};
    const known = config.devices.find((d) => d.deviceID === id);
    const devicesList = known
      ? config.devices.map((d) => (d.deviceID !== id || !inv.addrs.length ? d
        // Known already: learn the addresses it sent, keeping the ones we had.
        : { ...d, addresses: [...new Set([...(d.addresses || []).filter((a) => a !== 'dynamic'), ...inv.addrs])] }))
      : [...config.devices, { ...(defaults.device || {}), deviceID: id, name: inv.name, addresses: inv.addrs.length ? inv.addrs : ['dynamic'] }];
    const foldersList = existingFolder
      ? config.folders.map((f) => (f.id !== existingFolder.id || f.devices.some((d) => d.deviceID === id) ? f
        : { ...f, devices: [...f.devices, { deviceID: id }] }))
      : [...config.folders, { ...(defaults.folder || {}), id: inv.folder, label: inv.label, path: shownPath.trim(), devices: [{ deviceID: myID() }, { deviceID: id }] }];
    setBusy(true);
    try {
      await api('/rest/config', { method: 'PUT', body: { devices: devicesList, folders: foldersList }, keepalive: true });
      refreshPending().catch(() => {});
      toast(`Added ${inv.name || id.slice(0, 7)} and folder ${inv.label || inv.folder}; it syncs once they accept.`);
      onClose();
    } catch (e) {
      setError(e.message);
    } finally { setBusy(false); }
  };

  return html`<${Modal} title="Paste invite" onClose=${onClose} onSubmit=${accept} error=${error} test="paste-invite-dialog"
    footer=${html`<${SaveCancel} onSave=${accept} onClose=${onClose} busy=${busy} saveLabel="Add device and folder" />`}>
    <label>Invite link <textarea data-test="invite-input" rows="3" spellcheck="false" placeholder="peerfold://invite?device=…"
      value=${text} onInput=${(e) => setText(e.target.value)} /></label>
    ${inv && inv.error && html`<p class="error small" data-test="invite-error">${inv.error}</p>`}
    ${inv && !inv.error && html`<div class="invite-summary" data-test="invite-summary">
      <p>From <strong>${inv.name || inv.device.slice(0, 7)}</strong> <code class="id">${inv.device}</code>
        ${existingDevice && html` <span class="muted">(already added)</span>`}</p>
      ${check.error && html`<p class="error small" data-test="device-id-error">${check.error}</p>`}
      <p>Folder <strong>${inv.label || inv.folder}</strong> <code>${inv.folder}</code>
        ${existingFolder && html` <span class="muted">(you have it already: it will be shared with them)</span>`}</p>
      ${inv.addrs.length > 0 && html`<p class="small muted">Addresses: ${inv.addrs.join(', ')}</p>`}
      <label>Put the folder in <input data-test="invite-path-input" value=${shownPath} readonly=${!!existingFolder} spellcheck="false"
        onInput=${(e) => { setPathTouched(true); setPath(e.target.value); }} /></label>
    </div>`}
  </${Modal}>`;
}
