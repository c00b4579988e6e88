// Small fetch helpers for the Natter HTTP API (docs/api.md).
// Every POST and PUT carries `X-Natter: 1` (CSRF check) and a JSON body; errors are
// `{error, message}` and become an ApiError whose `message` is shown to the user.

export class ApiError extends Error {
  constructor(status, kind, message) {
    super(message || `Request failed (${status})`);
    this.status = status; // HTTP status, 0 for a network error
    this.kind = kind;     // the API's `error` field, or 'network'
  }
  /** True when the same request may simply be sent again (sends are idempotent). */
  get retryable() {
    return this.status === 0 || this.status === 503 || this.status === 429;
  }
}

async function request(method, url, body) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (method !== 'GET') {
    init.headers['Content-Type'] = 'application/json';
    init.headers['X-Natter'] = '1';
    init.body = JSON.stringify(body === undefined ? {} : body);
  }
  let res;
  try {
    res = await (takeEarly(method, url) || fetch(url, init));
  } catch (e) {
    throw new ApiError(0, 'network', 'Cannot reach the server. Check your connection.');
  }
  if (res.status === 204) return null;
  const data = parseJSON(await res.text().catch(() => ''));
  if (!res.ok) {
    const kind = data && data.error ? data.error : 'http_' + res.status;
    const message = data && data.message ? data.message : defaultMessage(res.status);
    throw new ApiError(res.status, kind, message);
  }
  return data;
}

/**
 * A GET the page started before its modules loaded (chat.html's boot script puts them in
 * `globalThis.natterEarly`): its response, once; null for any other request.
 */
function takeEarly(method, url) {
  const early = method === 'GET' && globalThis.natterEarly;
  if (!early || !early.has(url)) return null;
  const res = early.get(url);
  early.delete(url);
  return res;
}

function defaultMessage(status) {
  switch (status) {
    case 401: return 'You are not logged in (or your login expired).';
    case 403: return 'You are not allowed to do that.';
    case 404: return 'Not found.';
    case 409: return 'This chat has already ended.';
    case 413: return 'The message is too long.';
    case 429: return 'Too many requests. Please wait a moment.';
    case 503: return 'The server is busy. Please try again.';
    default: return `Request failed (${status}).`;
  }
}

export const getJSON = (url) => request('GET', url);
export const postJSON = (url, body) => request('POST', url, body);
export const putJSON = (url, body) => request('PUT', url, body);
export const deleteJSON = (url) => request('DELETE', url);

/** The JSON value of `text` (a response body, an SSE event's data); null if it is none. */
export function parseJSON(text) {
  if (!text) return null;
  try { return JSON.parse(text); } catch (_) { return null; }
}

/** Resolve after `ms` milliseconds. */
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
