// The native API (/api/v1, see API.md) and the event stream. A 401 asks
// the page to log in (qBittorrent's /api/v2/auth/login sets a SID cookie
// the daemon accepts everywhere), then the call is made again.

export const API = '/api/v1';

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let loginHandler = null;
let loggingIn = null;

/** `handler()` shows the login form; its promise resolves once logged in. */
export function onUnauthorized(handler) {
  loginHandler = handler;
}

async function unauthorized() {
  if (!loginHandler) throw new ApiError(401, 'this daemon needs a password');
  if (!loggingIn) loggingIn = loginHandler().finally(() => { loggingIn = null; });
  return loggingIn;
}

async function call(method, path, { json, body, type } = {}, retried = false) {
  const init = { method, headers: {}, credentials: 'same-origin', cache: 'no-store' };
  if (json !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.headers['Content-Type'] = type;
    init.body = body;
  }
  let r;
  try {
    r = await fetch(API + path, init);
  } catch (e) {
    throw new ApiError(0, `the daemon does not answer (${e.message})`);
  }
  if (r.status === 401 && !retried) {
    await unauthorized();
    return call(method, path, { json, body, type }, true);
  }
  const text = await r.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!r.ok) {
    const message = (data && data.error) || `HTTP ${r.status}`;
    throw new ApiError(r.status, message);
  }
  return data;
}

export const get = (path) => call('GET', path);
export const post = (path, json = {}) => call('POST', path, { json });
export const del = (path) => call('DELETE', path);
export const upload = (path, bytes) =>
  call('POST', path, { body: bytes, type: 'application/x-bittorrent' });

/** Log in: true when the daemon said `Ok.`. */
export async function login(username, password) {
  const body = new URLSearchParams({ username, password }).toString();
  const r = await fetch('/api/v2/auth/login', {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body,
    credentials: 'same-origin',
  });
  const text = (await r.text()).trim();
  return r.ok && text === 'Ok.';
}

/**
 * The event stream, reopened when it drops. `handlers.open()` runs on
 * every (re)connection: changes may have been missed, so the caller
 * reads the list again.
 */
export function stream(handlers) {
  let es = null;
  let delay = 1000;
  let stopped = false;
  const connect = () => {
    if (stopped) return;
    es = new EventSource(`${API}/events`);
    es.addEventListener('open', () => {
      delay = 1000;
      handlers.open();
    });
    es.addEventListener('torrent', (e) => handlers.torrent(JSON.parse(e.data)));
    es.addEventListener('removed', (e) => handlers.removed(JSON.parse(e.data).id));
    es.addEventListener('resync', () => handlers.open());
    es.addEventListener('error', async () => {
      if (es.readyState !== EventSource.CLOSED) {
        handlers.status('reconnecting');
        return; // the browser retries by itself
      }
      es = null;
      handlers.status('offline');
      // Closed: a 401 (log in first) or the daemon went away.
      try {
        await get('/session');
      } catch {
        // still down: try again later
      }
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 15000);
    });
  };
  connect();
  return () => {
    stopped = true;
    if (es) es.close();
  };
}
