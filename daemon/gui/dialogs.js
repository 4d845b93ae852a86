// Dialogs: one at a time, opened from anywhere with `openDialog(name, props)`. This file
// has the host, the device dialog and the "Show ID" dialog; folder and invite dialogs live
// in folder-dialog.js and invite.js.

import { html, useState, useEffect, useRef, useCallback } from './vendor/preact-htm.js';
import { get, post, put, patch, del, seg } from './api.js';
import { S, useStore, myID, folders, devices, refreshPending, holdingConfig } from './store.js';
import { Modal, toast } from './util.js';
import { FolderDialog } from './folder-dialog.js';
import { ShareInviteDialog, PasteInviteDialog, forgetInvites } from './invite.js';

let setCurrent = null;

/** Opens dialog `name` ('device', 'folder', 'showId', 'shareInvite', 'pasteInvite'). */
export function openDialog(name, props = {}) {
  setCurrent && setCurrent({ name, props, key: Date.now() });
}

export function DialogHost() {
  const [cur, setCur] = useState(null);
  useEffect(() => { setCurrent = setCur; return () => { setCurrent = null; }; }, []);
  const close = useCallback(() => setCur(null), []);
  if (!cur) return null;
  const C = { device: DeviceDialog, folder: FolderDialog, showId: ShowIdDialog, shareInvite: ShareInviteDialog, pasteInvite: PasteInviteDialog }[cur.name];
  return html`<${C} key=${cur.key} ...${cur.props} onClose=${close} />`;
}

/** Footer buttons shared by the edit dialogs. */
export function SaveCancel({ onSave, onClose, busy, saveLabel = 'Save', extra }) {
  return html`${extra}<span class="grow"></span>
    <button data-test="dialog-cancel" onClick=${onClose}>Cancel</button>
    <button class="primary" data-test="dialog-save" disabled=${busy} onClick=${onSave}>${busy ? 'Saving…' : saveLabel}</button>`;
}

/** A "Remove" button that asks again inline (no window.confirm: tests can click it). */
export function RemoveButton({ what, onRemove }) {
  const [asking, setAsking] = useState(false);
  if (!asking) return html`<button class="danger" data-test="dialog-remove" onClick=${() => setAsking(true)}>Remove</button>`;
  return html`<span class="confirm">Remove ${what}?
    <button class="danger" data-test="dialog-remove-confirm" onClick=${onRemove}>Yes, remove</button>
    <button data-test="dialog-remove-cancel" onClick=${() => setAsking(false)}>No</button></span>`;
}

// ---- device ID validation -------------------------------------------------------------

/**
 * Asks the daemon whether `text` is a device ID; resolves to the normalised ID or throws
 * with its message (e.g. a wrong check character).
 */
export async function checkDeviceId(text, { allowExisting = false } = {}) {
  const t = text.trim();
  if (!t) throw new Error('Enter the device ID.');
  const r = await get('/rest/svc/deviceid', { id: t });
  if (r.error) throw new Error(r.error);
  if (r.id === myID()) throw new Error("That is this device's own ID.");
  if (!allowExisting && devices().some((d) => d.deviceID === r.id)) throw new Error('That device is already added.');
  return r.id;
}

/**
 * Validates `text` as typed (debounced), so the user sees the daemon's verdict before
 * saving. Returns {id, error}. Saving checks again (`checkDeviceId`): it may come first.
 */
export function useDeviceIdCheck(text, opts) {
  const [res, setRes] = useState({ id: '', error: '' });
  useEffect(() => {
    if (!text.trim()) { setRes({ id: '', error: '' }); return undefined; }
    let live = true;
    const timer = setTimeout(() => {
      checkDeviceId(text, opts).then(
        (id) => live && setRes({ id, error: '' }),
        (e) => live && setRes({ id: '', error: e.message }),
      );
    }, 300);
    return () => { live = false; clearTimeout(timer); };
  }, [text]);
  return res;
}

/** `p`, marked handled (its error is shown where it is awaited), so it never counts as unhandled. */
export function quiet(p) {
  p.catch(() => {});
  return p;
}

/** The comma-separated address field as a list (nothing means "dynamic"). */
export const parseAddresses = (text) => {
  const list = text.split(/[\s,]+/).map((a) => a.trim()).filter(Boolean);
  return list.length ? list : ['dynamic'];
};

/** Shares folder `fid` with `device` or stops sharing it (PATCH of its device list). */
export async function setShared(fid, device, on) {
  const f = folders().find((x) => x.id === fid);
  if (!f) return;
  const has = f.devices.some((d) => d.deviceID === device);
  if (has === on) return;
  const list = on ? [...f.devices, { deviceID: device }] : f.devices.filter((d) => d.deviceID !== device);
  await patch('/rest/config/folders/' + seg(fid), { devices: list });
}

// ---- add / edit device ------------------------------------------------------------------

/**
 * `id`: edit that device. Otherwise add one, optionally `prefill`ed (a pending device) with
 * `share` folder IDs pre-ticked (the folders it offers), `hints` saying why.
 */
function DeviceDialog({ id, prefill, share, hints = {}, onClose }) {
  useStore();
  const editing = !!id;
  const [loading] = useState(() => quiet(editing ? get('/rest/config/devices/' + seg(id)) : get('/rest/config/defaults/device')));
  // Fields start from the configuration we hold (the same object the GET returns), so the
  // form is usable at once; the GET's object is what Save starts from.
  const known = editing ? devices().find((d) => d.deviceID === id) || {} : {};
  const [idText, setIdText] = useState((prefill && prefill.deviceID) || id || '');
  const [name, setName] = useState((prefill && prefill.name) || known.name || '');
  const [addrs, setAddrs] = useState(((prefill && prefill.addresses) || known.addresses || ['dynamic']).join(', '));
  const [autoAccept, setAutoAccept] = useState(!!known.autoAcceptFolders);
  const [introducer, setIntroducer] = useState(!!known.introducer);
  const [shared, setShared_] = useState(() => new Set(editing
    ? folders().filter((f) => f.devices.some((x) => x.deviceID === id)).map((f) => f.id)
    : (share || []).filter((f) => folders().some((x) => x.id === f))));
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const check = useDeviceIdCheck(editing ? '' : idText);

  useEffect(() => { loading.catch((e) => setError(e.message)); }, []);

  // Devices discovery saw on the LAN (or globally) that are not configured: one-click fill.
  const configured = new Set([myID(), ...devices().map((d) => d.deviceID)]);
  const suggestions = editing ? [] : Object.entries(S.discovery || {}).filter(([d]) => !configured.has(d));

  const toggle = (fid) => {
    const n = new Set(shared);
    n.has(fid) ? n.delete(fid) : n.add(fid);
    setShared_(n);
  };

  const save = async () => {
    if (busy) return; // Enter pressed again while saving
    setError('');
    setBusy(true);
    try {
      await holdingConfig(async () => {
        const deviceID = editing ? id : await checkDeviceId(idText);
        const base = await loading;
        const obj = { ...base, deviceID, name: name.trim(), addresses: parseAddresses(addrs), autoAcceptFolders: autoAccept, introducer };
        if (editing) await put('/rest/config/devices/' + seg(id), obj);
        else await post('/rest/config/devices', obj);
        for (const f of folders()) await setShared(f.id, deviceID, shared.has(f.id));
      });
      if (!editing) forgetInvites([...shared]);
      refreshPending().catch(() => {}); // an accepted offer leaves the pending lists
      toast(editing ? 'Device saved' : 'Device added');
      onClose();
    } catch (e) {
      setError(e.message);
    } finally { setBusy(false); }
  };

  const remove = async () => {
    try {
      await del('/rest/config/devices/' + seg(id));
      toast('Device removed');
      onClose();
    } catch (e) { setError(e.message); }
  };

  return html`<${Modal} title=${editing ? 'Edit device' : 'Add device'} onClose=${onClose} onSubmit=${save} error=${error} test="device-dialog"
    footer=${html`<${SaveCancel} onSave=${save} onClose=${onClose} busy=${busy}
      extra=${editing && html`<${RemoveButton} what="this device" onRemove=${remove} />`} />`}>
    <label>Device ID
      <input data-test="device-id-input" value=${idText} readonly=${editing} autocomplete="off" spellcheck="false"
        placeholder="XXXXXXX-XXXXXXX-XXXXXXX-XXXXXXX-XXXXXXX-XXXXXXX-XXXXXXX-XXXXXXX"
        onInput=${(e) => setIdText(e.target.value)} />
    </label>
    ${!editing && html`<p class=${'id-check small ' + (check.error ? 'error' : 'ok')} data-test=${check.error ? 'device-id-error' : check.id ? 'device-id-ok' : 'device-id-pending'}
      >${check.error || (check.id && '✓ ' + check.id)}</p>`}
    ${suggestions.length > 0 && html`<div class="suggest"><span class="muted small">Seen nearby:</span>
      ${suggestions.map(([d, v]) => html`<button class="small" key=${d} data-test=${'device-suggestion-' + d}
        onClick=${() => { setIdText(d); if ((v.addresses || []).length && addrs === 'dynamic') setAddrs('dynamic'); }}>${d.slice(0, 7)}</button>`)}</div>`}
    <label>Name <input data-test="device-name-input" value=${name} placeholder="e.g. Laptop" onInput=${(e) => setName(e.target.value)} /></label>
    <label>Addresses <input data-test="device-addresses-input" value=${addrs} spellcheck="false" onInput=${(e) => setAddrs(e.target.value)} />
      <span class="hint">Comma separated, e.g. quic://192.0.2.1:22100, or <code>dynamic</code> to find it.</span></label>
    <label class="check"><input type="checkbox" data-test="device-autoaccept" checked=${autoAccept} onChange=${(e) => setAutoAccept(e.target.checked)} /> Auto-accept folders it shares</label>
    <label class="check"><input type="checkbox" data-test="device-introducer" checked=${introducer} onChange=${(e) => setIntroducer(e.target.checked)} /> Introducer (add the devices it knows)</label>
    <fieldset><legend>Share folders</legend>
      ${folders().length === 0 && html`<p class="muted small">No folders yet.</p>`}
      ${folders().map((f) => html`<label class="check" key=${f.id}><input type="checkbox" data-test=${'device-share-' + f.id}
        checked=${shared.has(f.id)} onChange=${() => toggle(f.id)} /> ${f.label || f.id} <span class="muted small">${f.id}${hints[f.id] ? ' · ' + hints[f.id] : ''}</span></label>`)}
    </fieldset>
  </${Modal}>`;
}

// ---- show ID ----------------------------------------------------------------------------------

function ShowIdDialog({ id, name, onClose }) {
  const ref = useRef(null);
  const copy = () => copyText(id, ref.current);
  return html`<${Modal} title=${'Device ID' + (name ? ' of ' + name : '')} onClose=${onClose} test="show-id-dialog"
    footer=${html`<span class="grow"></span><button data-test="copy-id" onClick=${copy}>Copy</button><button class="primary" data-test="dialog-cancel" onClick=${onClose}>Close</button>`}>
    <input ref=${ref} class="id-big" readonly value=${id} data-test="show-id-text" onFocus=${(e) => e.target.select()} />
    <img class="qr" alt="QR code of the device ID" data-test="show-id-qr" src=${'/qr/?text=' + encodeURIComponent(id)} />
  </${Modal}>`;
}

/** Copies to the clipboard; over plain http (no clipboard API) selects the text instead. */
export async function copyText(text, input) {
  try {
    await navigator.clipboard.writeText(text);
    toast('Copied');
  } catch {
    if (input) { input.focus(); input.select(); }
    try { document.execCommand('copy'); toast('Copied'); } catch { toast('Select the text and copy it'); }
  }
}
