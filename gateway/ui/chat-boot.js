// The operator's chat window, first thing: starts the requests the window needs before it can
// show anything, while the browser still loads its modules (chat.js and a dozen more), and
// leaves the responses for api.js's getJSON (`takeEarly`) and chat.js (`natterHistory`); starts
// the shared event worker, which it subscribes to the session once the history is in
// (events.js takes the worker over); and has the browser load its date formatting meanwhile.
// A classic script, not a module: it runs as soon as it has come, not once the page's modules
// have (chat.js keeps the URLs in step).
(() => {
  const sessionId = decodeURIComponent(location.pathname.replace(/\/+$/, '').split('/').pop());
  const api = '/api/sessions/' + encodeURIComponent(sessionId);
  const get = (url) => fetch(url, { credentials: 'same-origin', headers: { Accept: 'application/json' } });

  const early = new Map();
  // The newest events (a few screens, shown first), who I am, my options, the session.
  for (const url of [api + '/events?last=200', '/api/me', '/api/me/options', api]) {
    const res = get(url);
    res.catch(() => {}); // not unhandled: getJSON reports it when it takes this one
    early.set(url, res);
  }
  globalThis.natterEarly = early;

  // The session's whole retained history (up to HISTORY_MAX events, the stored JSON as it is)
  // in one response: it comes long before the shared worker could start, open the event stream
  // and bring it; the stream then carries only what is newer. Its events (seq order), or null
  // when it could not be had (the stream brings it).
  const HISTORY_MAX = 20000;
  const history = get(api + '/events?last=' + HISTORY_MAX)
    .then((res) => (res.ok ? res.json() : null))
    .then((h) => (h && Array.isArray(h.events) ? h.events : null), () => null);
  globalThis.natterHistory = history;

  // As events.js starts it (the same script and name, so it is the same shared worker). Its
  // messages wait in the port until events.js listens (a port delivers only once started).
  if (typeof SharedWorker === 'function') {
    try {
      const worker = new SharedWorker('/static/events-worker.js', { type: 'module', name: 'natter-events-module' });
      const w = { worker, session: sessionId, failed: false, subscribed: null };
      worker.addEventListener('error', () => { w.failed = true; });
      // After the history's last event (all of it without one, or when the history may lack
      // older events: as many as asked for came): the worker starts meanwhile.
      w.subscribed = history.then((events) => {
        const whole = events && events.length && events.length < HISTORY_MAX;
        const after = whole ? events[events.length - 1].seq : 0;
        worker.port.postMessage({ subscribe: sessionId, after });
      });
      globalThis.natterEarlyWorker = w;
    } catch (_) { /* events.js falls back to a hub in the window */ }
  }

  // The first date format of a page loads the browser's locale data (30–40 ms here): done now,
  // while the requests are out, rather than on the way to the first screen.
  setTimeout(() => new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' }).format(0), 0);
})();
