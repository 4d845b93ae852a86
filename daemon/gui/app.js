// Entry point: login gate, navigation and hash routing. Pages live in their own modules.

import { html, render, useState, useEffect } from './vendor/preact-htm.js';
import { post, onAuthNeeded, meta } from './api.js';
import { S, useStore, loadAll, startLive, myName, handleEvent } from './store.js';
import { Toasts, toastError } from './util.js';
import { Dashboard } from './dashboard.js';
import { DialogHost } from './dialogs.js';
import { ConflictsPage, VersionsPage, FailedPage } from './pages.js';
import { TransfersPage, ChangesPage } from './activity.js';
import { SettingsPage, LogsPage } from './settings.js';

const ROUTES = [
  ['/', 'dashboard', 'Dashboard', Dashboard],
  ['/conflicts', 'conflicts', 'Conflicts', ConflictsPage],
  ['/versions', 'versions', 'Versions', VersionsPage],
  ['/transfers', 'transfers', 'Transfers', TransfersPage],
  ['/changes', 'changes', 'Changes', ChangesPage],
  ['/failed', 'failed', 'Failed', FailedPage],
  ['/settings', 'settings', 'Settings', SettingsPage],
  ['/logs', 'logs', 'Logs', LogsPage],
];

const currentPath = () => (location.hash.replace(/^#/, '') || '/').split('?')[0];

function useRoute() {
  const [path, setPath] = useState(currentPath());
  useEffect(() => {
    const f = () => setPath(currentPath());
    addEventListener('hashchange', f);
    return () => removeEventListener('hashchange', f);
  }, []);
  return path;
}

function Nav({ path }) {
  const s = useStore();
  const transfers = Object.keys(s.transfers).length;
  const label = (ROUTES.find(([p]) => p === path) || ROUTES[0])[2];
  useEffect(() => { document.title = (path === '/' ? '' : label + ' · ') + 'peerfold' + (myName() ? ' · ' + myName() : ''); });
  // On a narrow screen the nav scrolls sideways: keep the current page's link in sight.
  useEffect(() => {
    const a = document.querySelector('.top nav a.active');
    if (a && a.parentNode.scrollWidth > a.parentNode.clientWidth) a.scrollIntoView({ block: 'nearest', inline: 'nearest' });
  }, [path]);
  return html`<header class="top">
    <a class="brand" href="#/">peerfold${myName() ? html` <span class="muted">· ${myName()}</span>` : ''}</a>
    <nav aria-label="Pages">
      ${ROUTES.map(([p, key, label]) => html`<a href=${'#' + p} data-test=${'nav-' + key} class=${p === path ? 'active' : ''}
        aria-current=${p === path ? 'page' : undefined}>${label}${key === 'transfers' && transfers ? html` <span class="count">${transfers}</span>` : ''}</a>`)}
    </nav>
  </header>`;
}

/** The banner while the daemon does not answer (its own component: App itself does not
 * follow the store, so pages that do not use it are not re-rendered by every event). */
function Offline() {
  const s = useStore();
  return !s.online && html`<div class="offline" data-test="offline" role="status">Connection to the daemon lost; retrying…</div>`;
}

function App() {
  const path = useRoute();
  const route = ROUTES.find(([p]) => p === path) || ROUTES[0];
  const Page = route[3];
  return html`<${Nav} path=${route[0]} />
    <${Offline} />
    <main data-test=${'page-' + route[1]}><${Page} /></main>
    <${DialogHost} />
    <${Toasts} />`;
}

// ---- login --------------------------------------------------------------------------------

function Login({ message }) {
  const [hint] = useState(() => { const h = sessionStorage.getItem('peerfold.loginHint'); sessionStorage.removeItem('peerfold.loginHint'); return h; });
  const [user, setUser] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState(message || '');
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError('');
    try {
      await post('/rest/noauth/auth/password', { username: user, password });
      location.reload();
    } catch (err) {
      setError(err.status === 429 ? 'Too many attempts: ' + err.message : err.message);
      setBusy(false);
    }
  };
  return html`<form class="login card" onSubmit=${submit} data-test="login-form">
    <h1>peerfold</h1>
    <p class="muted small">${hint || 'Log in to manage this device.'}</p>
    <label>User <input data-test="login-user" autocomplete="username" value=${user} onInput=${(e) => setUser(e.target.value)} autofocus /></label>
    <label>Password <input type="password" data-test="login-password" autocomplete="current-password" value=${password} onInput=${(e) => setPassword(e.target.value)} /></label>
    ${error && html`<p class="error" data-test="login-error" role="alert">${error}</p>`}
    <button class="primary" type="submit" data-test="login-submit" disabled=${busy}>Log in</button>
  </form>`;
}

// ---- start ----------------------------------------------------------------------------------

const root = document.getElementById('app');

// For the console: the state, and a way to feed it events (e.g. a DownloadProgress).
window.peerfoldDebug = { S, handleEvent };

// Fields are controlled through `input` events; a value set without one (autofill, a test
// driver's clear()) only fires `change`. Re-announce it as input so the state follows.
document.addEventListener('change', (e) => {
  const t = e.target;
  if (t.tagName === 'TEXTAREA' || (t.tagName === 'INPUT' && t.type !== 'checkbox' && t.type !== 'radio')) {
    t.dispatchEvent(new Event('input', { bubbles: true }));
  }
}, true);
let loggedOut = false;

function showLogin(message) {
  if (loggedOut) return;
  loggedOut = true;
  render(html`<${Login} message=${message} />`, root);
}

/**
 * A call was refused: the session ended, or the user / password changed (cleared: no login
 * needed any more). meta.js says which; reload in the latter case (once, against loops).
 */
async function authLost() {
  try {
    const text = await (await fetch('meta.js', { credentials: 'same-origin', cache: 'no-store' })).text();
    const m = JSON.parse(text.slice(text.indexOf('{'), text.lastIndexOf('}') + 1));
    if (m.authenticated && !sessionStorage.getItem('peerfold.reloaded')) {
      sessionStorage.setItem('peerfold.reloaded', '1');
      location.reload();
      return;
    }
  } catch { /* the login form it is */ }
  showLogin('');
}

// A lost session (401/403 from any call) swaps the app for the login form.
onAuthNeeded(authLost);

if (!meta.authenticated) {
  showLogin('');
} else {
  render(html`<${App} />`, root);
  // Loaded fine: a later refusal may reload once more.
  setTimeout(() => sessionStorage.removeItem('peerfold.reloaded'), 10000);
  loadAll().then(startLive, (e) => {
    if (e.status !== 401 && e.status !== 403) {
      toastError(e);
      // The daemon may be starting: the event loop retries and reloads when it answers.
      S.online = false;
      startLive();
    }
  });
}
