// Talking to the daemon: every /rest call goes through `api()` so the CSRF header,
// JSON handling and the "not logged in" case live in one place.

/* global metadata */
const meta = window.metadata || {};
// Syncthing's names: the device ID's first 5 characters (so its own GUI works too).
const csrfName = 'CSRF-Token-' + (meta.deviceID || '').slice(0, 5);

function csrfToken() {
  for (const part of document.cookie.split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === csrfName) return decodeURIComponent(v.join('='));
  }
  return '';
}

/** An error the server explained: `message` is its `{"error"}` text, shown to the user. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// Listeners told when the server says we are not logged in (the app shows the login form).
const authListeners = new Set();
export const onAuthNeeded = (f) => authListeners.add(f);

/**
 * `api(path, {method, body, query})` → parsed JSON (or null for empty bodies).
 * Throws ApiError with the server's message; 401/403 also switch to the login form.
 */
export async function api(path, opts = {}) {
  let url = path;
  if (opts.query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(opts.query)) if (v !== undefined && v !== null) q.set(k, v);
    url += (url.includes('?') ? '&' : '?') + q;
  }
  const headers = { ['X-' + csrfName]: csrfToken() };
  const init = { method: opts.method || 'GET', credentials: 'same-origin', headers, signal: opts.signal };
  if (opts.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(opts.body);
    // `keepalive` lets a save finish when the page is left right after the click; browsers
    // take it for bodies under 64 KiB only.
    if (opts.keepalive && init.body.length < 60000) init.keepalive = true;
  }
  let res;
  try {
    res = await fetch(url, init);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'cannot reach the daemon: ' + e.message);
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!res.ok) {
    const message = (data && data.error) || text.trim() || res.statusText || ('HTTP ' + res.status);
    // A login attempt's own 403 is a wrong password, not a lost session.
    if ((res.status === 401 || res.status === 403) && !path.startsWith('/rest/noauth/')) {
      authListeners.forEach((f) => f(message));
    }
    throw new ApiError(res.status, message);
  }
  return data;
}

export const get = (path, query) => api(path, { query });
export const post = (path, body, query) => api(path, { method: 'POST', body, query });
export const put = (path, body) => api(path, { method: 'PUT', body });
export const patch = (path, body) => api(path, { method: 'PATCH', body });
export const del = (path, query) => api(path, { method: 'DELETE', query });

/** Path segment of an ID (device and folder IDs may hold characters a URL reserves). */
export const seg = (s) => encodeURIComponent(s);

/**
 * Runs at most `n` tasks at once: with hundreds of folders the dashboard would otherwise
 * start hundreds of requests at the same moment. `run(key, f)` drops a task whose key is
 * already queued (a burst of events for one folder makes one fetch).
 */
export function limiter(n) {
  let active = 0;
  const queue = [];
  const queued = new Set();
  const next = () => {
    while (active < n && queue.length) {
      const { key, f } = queue.shift();
      queued.delete(key);
      active++;
      Promise.resolve().then(f).catch(() => {}).finally(() => { active--; next(); });
    }
  };
  return {
    run(key, f) {
      if (key && queued.has(key)) return;
      if (key) queued.add(key);
      queue.push({ key, f });
      next();
    },
  };
}

/**
 * Long-polls /rest/events forever and hands every batch to `handle`. Starts after the newest
 * event (old ones are history the first fetches already cover); backs off on errors.
 */
export async function pollEvents(handle, onState) {
  let since = null;
  let delay = 1000;
  for (;;) {
    try {
      if (since === null) {
        const last = await get('/rest/events', { since: 0, limit: 1, timeout: 0 });
        since = last && last.length ? last[last.length - 1].id : 0;
      }
      const batch = await get('/rest/events', { since, timeout: 60 });
      onState && onState(true);
      delay = 1000;
      if (batch && batch.length) {
        since = batch[batch.length - 1].id;
        handle(batch);
      }
    } catch (e) {
      onState && onState(false, e);
      since = null; // the daemon may have restarted and numbers from 1 again
      if (e.status === 401 || e.status === 403) return; // the login form takes over
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 30000);
    }
  }
}

export { meta };
