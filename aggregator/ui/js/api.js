// The API client: the same routes, tokens and grants as every other client. The token lives
// in sessionStorage (this tab only, gone when it closes), and is sent as a bearer header,
// never in a URL.

const TOKEN = 'calipso.token';
const USER = 'calipso.user';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const session = {
  get token() { return sessionStorage.getItem(TOKEN); },
  get user() {
    try { return JSON.parse(sessionStorage.getItem(USER) || 'null'); } catch { return null; }
  },
  start(token, user) {
    sessionStorage.setItem(TOKEN, token);
    sessionStorage.setItem(USER, JSON.stringify(user));
  },
  end() {
    sessionStorage.removeItem(TOKEN);
    sessionStorage.removeItem(USER);
  },
};

/** `/api/v1` + `path` with `params` (arrays repeat the parameter; empty values are left out). */
export function apiUrl(path, params = {}) {
  const url = new URL(`/api/v1${path}`, window.location.origin);
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === '') continue;
    for (const item of Array.isArray(value) ? value : [value]) url.searchParams.append(key, item);
  }
  return url;
}

function headers(extra = {}) {
  const all = { Accept: 'application/json', ...extra };
  if (session.token) all.Authorization = `Bearer ${session.token}`;
  return all;
}

/** Calls the API; rejects with an ApiError carrying the API's own message. A 401 ends the
 *  session (the token expired or was revoked) and sends the user to the login page. */
export async function api(path, params = {}, { method = 'GET', body, signal } = {}) {
  const init = { method, headers: headers(body === undefined ? {} : { 'Content-Type': 'application/json' }), signal };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(apiUrl(path, params), init);
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = new ApiError(response.status, data?.error?.code ?? 'error',
      data?.error?.message ?? `${response.status} ${response.statusText}`);
    if (response.status === 401 && path !== '/auth/tokens') {
      session.end();
      window.dispatchEvent(new CustomEvent('calipso:logged-out', { detail: error.message }));
    }
    throw error;
  }
  return data;
}

/** The path of an object route: ids hold `:` and may hold `/`. */
export function idPath(prefix, id) {
  return `${prefix}/${encodeURIComponent(id)}`;
}

/** Reads a Server-Sent Events response (fetch, so the token goes in a header, not the URL),
 *  calling `onOpen()` once connected and `onEvent(type, data, id)` for each event; resolves
 *  when the stream ends. */
export async function readEvents(path, params, onEvent, signal, onOpen = () => {}) {
  const response = await fetch(apiUrl(path, params), { headers: headers({ Accept: 'text/event-stream' }), signal });
  if (!response.ok || !response.body) {
    const data = await response.json().catch(() => null);
    throw new ApiError(response.status, data?.error?.code ?? 'error', data?.error?.message ?? response.statusText);
  }
  onOpen();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let type = 'message';
      let id = null;
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'event') type = text;
        else if (field === 'data') data.push(text);
        else if (field === 'id') id = text;
      }
      if (data.length) onEvent(type, data.join('\n'), id);
    }
  }
}
