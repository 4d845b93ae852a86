// Settings (#/settings) and the daemon's log (#/logs).

import { html, useState, useEffect, useRef } from './vendor/preact-htm.js';
import { get, post, patch, seg } from './api.js';
import { useStore, myID, myName } from './store.js';
import { toast, when } from './util.js';

const list = (text) => text.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);

/** One settings form: loads, edits a copy, saves the changed fields; errors inline. */
function useForm(load) {
  const [orig, setOrig] = useState(null);
  const [v, setV] = useState(null);
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    load().then((x) => { setOrig(x); setV(x); }, (e) => setError(e.message));
  }, []);
  const field = (k) => (e) => setV({ ...v, [k]: e.target.type === 'checkbox' ? e.target.checked : e.target.value });
  const changed = v && orig ? Object.keys(v).filter((k) => v[k] !== orig[k]) : [];
  const save = async (f) => {
    if (!changed.length || busy) return; // Enter with nothing to save
    setError('');
    setBusy(true);
    try { await f(v, changed); setOrig(v); toast('Saved'); } catch (e) { setError(e.message); } finally { setBusy(false); }
  };
  return { v, field, changed, save, error, busy };
}

/** A settings card as a form: Enter in a field saves, like the Save button. */
function Card({ title, onSave, children }) {
  return html`<form class="card" onSubmit=${(e) => { e.preventDefault(); onSave && onSave(); }}><h3>${title}</h3>${children}</form>`;
}

const Loading = ({ title, form }) => html`<section class="card"><h3>${title}</h3>
  ${form.error ? html`<p class="error">${form.error}</p>` : html`<p class="muted">Loading…</p>`}</section>`;

function FormFooter({ form, test }) {
  return html`${form.error && html`<p class="error" data-test=${test + '-error'} role="alert">${form.error}</p>`}
    <div class="buttons"><button type="submit" class="primary" data-test=${test + '-save'} disabled=${form.busy || !form.changed.length}>Save</button></div>`;
}

export function SettingsPage() {
  useStore();
  return html`<h2>Settings</h2>
    <div class="settings">
      <${DeviceSettings} />
      <${NetworkSettings} />
      <${GuiSettings} />
    </div>`;
}

function DeviceSettings() {
  const form = useForm(async () => ({ name: myName() }));
  // This device's name is its own entry in the device list, as in Syncthing.
  const save = () => form.save((v) => patch('/rest/config/devices/' + seg(myID()), { name: v.name.trim() }));
  if (!form.v) return html`<${Loading} title="This device" form=${form} />`;
  return html`<${Card} title="This device" onSave=${save}>
    <label>Device name <input data-test="settings-name" value=${form.v.name} onInput=${form.field('name')} /></label>
    <p class="small muted">ID <code class="id">${myID()}</code></p>
    <${FormFooter} form=${form} test="settings-device" />
  </${Card}>`;
}

function NetworkSettings() {
  const form = useForm(async () => {
    const o = await get('/rest/config/options');
    return {
      listen: (o.listenAddresses || []).join(', '), global: !!o.globalAnnounceEnabled, local: !!o.localAnnounceEnabled,
      relays: !!o.relaysEnabled, send: String(o.maxSendKbps || 0), recv: String(o.maxRecvKbps || 0),
    };
  });
  const save = () => form.save((v, changed) => {
    const out = {};
    const map = {
      listen: ['listenAddresses', () => (list(v.listen).length ? list(v.listen) : ['default'])],
      global: ['globalAnnounceEnabled', () => v.global], local: ['localAnnounceEnabled', () => v.local],
      relays: ['relaysEnabled', () => v.relays], send: ['maxSendKbps', () => Number(v.send) || 0], recv: ['maxRecvKbps', () => Number(v.recv) || 0],
    };
    for (const k of changed) out[map[k][0]] = map[k][1]();
    return patch('/rest/config/options', out);
  });
  if (!form.v) return html`<${Loading} title="Connections" form=${form} />`;
  const v = form.v;
  return html`<${Card} title="Connections" onSave=${save}>
    <label>Listen addresses <input data-test="settings-listen" value=${v.listen} spellcheck="false" onInput=${form.field('listen')} />
      <span class="hint">Comma separated, e.g. quic://0.0.0.0:22100, or <code>default</code>.</span></label>
    <label class="check"><input type="checkbox" data-test="settings-global-discovery" checked=${v.global} onChange=${form.field('global')} /> Global discovery</label>
    <label class="check"><input type="checkbox" data-test="settings-local-discovery" checked=${v.local} onChange=${form.field('local')} /> Local (LAN) discovery</label>
    <label class="check"><input type="checkbox" data-test="settings-relays" checked=${v.relays} onChange=${form.field('relays')} /> Relays</label>
    <div class="grid2">
      <label>Upload limit (KiB/s, 0 = none) <input type="number" min="0" data-test="settings-max-send" value=${v.send} onInput=${form.field('send')} /></label>
      <label>Download limit (KiB/s, 0 = none) <input type="number" min="0" data-test="settings-max-recv" value=${v.recv} onInput=${form.field('recv')} /></label>
    </div>
    <${FormFooter} form=${form} test="settings-options" />
  </${Card}>`;
}

function GuiSettings() {
  const form = useForm(async () => {
    const g = await get('/rest/config/gui');
    return { address: g.address || '', user: g.user || '', password: '' };
  });
  const save = () => form.save(async (v, changed) => {
    const out = {};
    if (changed.includes('address')) out.address = v.address.trim();
    if (changed.includes('user')) out.user = v.user.trim();
    // Only a typed password is sent: the daemon keeps a hash, never shows it.
    if (v.password) out.password = v.password;
    await patch('/rest/config/gui', out);
    // New credentials end this browser's session: the login form that follows says why.
    if (out.user || out.password) sessionStorage.setItem('peerfold.loginHint', 'Log in with the new user and password.');
    if (out.address) toast('The GUI moves to ' + out.address + ' (after a restart if the daemon says so)');
  });
  const logout = async () => {
    try { await post('/rest/noauth/auth/logout'); } catch (e) { toast(e.message, 'error'); }
    location.reload();
  };
  if (!form.v) return html`<${Loading} title="GUI" form=${form} />`;
  const v = form.v;
  return html`<${Card} title="GUI" onSave=${save}>
    <label>Listen address <input data-test="settings-gui-address" value=${v.address} spellcheck="false" onInput=${form.field('address')} /></label>
    <label>User <input data-test="settings-gui-user" value=${v.user} autocomplete="username" onInput=${form.field('user')} /></label>
    <label>New password <input type="password" data-test="settings-gui-password" value=${v.password} autocomplete="new-password"
      placeholder="unchanged" onInput=${form.field('password')} /></label>
    <p class="hint">With a user and password set, the browser asks for them.</p>
    <${FormFooter} form=${form} test="settings-gui" />
    <div class="buttons"><button type="button" data-test="logout" onClick=${logout}>Log out</button></div>
  </${Card}>`;
}

// ---- logs ----------------------------------------------------------------------------------

const LEVELS = ['DEBUG', 'VERBOSE', 'INFO', 'WARN'];
const MAX_LINES = 2000;

export function LogsPage() {
  const [lines, setLines] = useState([]);
  const [error, setError] = useState('');
  const [auto, setAuto] = useState(true);
  const [minLevel, setMinLevel] = useState(0);
  const last = useRef('');
  const box = useRef(null);

  // Fetches the lines after the last one seen.
  const load = async () => {
    try {
      const r = await get('/rest/system/log', last.current ? { since: last.current } : undefined);
      const fresh = (r.messages || []).filter((m) => m.when !== last.current);
      if (fresh.length) {
        last.current = fresh[fresh.length - 1].when;
        setLines((old) => [...old, ...fresh].slice(-MAX_LINES));
      }
      setError('');
    } catch (e) { setError(e.message); }
  };
  useEffect(() => { load(); }, []);
  useEffect(() => {
    if (!auto) return undefined;
    const t = setInterval(() => { if (!document.hidden) load(); }, 3000);
    return () => clearInterval(t);
  }, [auto]);
  // Start at the newest line, and stay there as lines come unless the user scrolled up.
  const atBottom = useRef(true);
  useEffect(() => {
    const b = box.current;
    if (b && atBottom.current) b.scrollTop = b.scrollHeight;
  }, [lines, minLevel]);
  const onScroll = (e) => {
    const b = e.target;
    atBottom.current = b.scrollHeight - b.scrollTop - b.clientHeight < 40;
  };

  const shown = lines.filter((l) => l.level >= minLevel);
  return html`<div class="section-head"><h2>Logs</h2>
      <div class="actions">
        <label class="inline"><select data-test="logs-level" value=${minLevel} onChange=${(e) => setMinLevel(Number(e.target.value))}>
          ${LEVELS.map((l, i) => html`<option value=${i}>${l} and up</option>`)}</select></label>
        <label class="check inline"><input type="checkbox" data-test="logs-auto" checked=${auto} onChange=${(e) => setAuto(e.target.checked)} /> Auto-refresh</label>
        <button data-test="refresh" onClick=${load}>Refresh</button>
      </div></div>
    ${error && html`<p class="error">${error}</p>`}
    <div class="log" ref=${box} onScroll=${onScroll} data-test="log-lines">
      ${shown.map((l, i) => html`<div key=${i} class=${'log-line level-' + l.level} data-test="log-line"><time>${when(l.when)}</time> <span class="lvl">${LEVELS[Math.min(l.level, 3)]}</span> ${l.message}</div>`)}
      ${shown.length === 0 && html`<p class="muted">No log lines yet.</p>`}
    </div>`;
}
