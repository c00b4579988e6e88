// The operator's chat window, first thing: starts the requests the window needs before it can
// show anything, while the browser still loads its modules (chat.js and a dozen more), and
// leaves the responses for api.js's getJSON (`takeEarly`); and starts the shared event worker
// with this window's subscription, so the session's stream opens meanwhile too (events.js
// takes the worker over). No imports, so it runs at once.
const sessionId = decodeURIComponent(location.pathname.replace(/\/+$/, '').split('/').pop());
const api = '/api/sessions/' + encodeURIComponent(sessionId);
/** How many of the newest events the window shows before the stream's history (a few screens). */
export const RECENT = 200;
export const RECENT_URL = api + '/events?last=' + RECENT;

const early = new Map();
for (const url of [RECENT_URL, '/api/me', '/api/me/options', api]) {
  const res = fetch(url, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
  res.catch(() => {}); // not unhandled: getJSON reports it when it takes this one
  early.set(url, res);
}
globalThis.natterEarly = early;

// As events.js starts it (the same script and name, so it is the same shared worker). Its
// messages wait in the port until events.js listens (a port delivers only once started).
if (typeof SharedWorker === 'function') {
  try {
    const worker = new SharedWorker('/static/events-worker.js', { type: 'module', name: 'natter-events-module' });
    const early = { worker, session: sessionId, failed: false };
    worker.addEventListener('error', () => { early.failed = true; });
    worker.port.postMessage({ subscribe: sessionId });
    globalThis.natterEarlyWorker = early;
  } catch (_) { /* events.js falls back to a hub in the window */ }
}
