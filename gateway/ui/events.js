// A window's side of the event hub (events-hub.js): subscribe to one session's events.

const WORKER_URL = '/static/events-worker.js';
// Also names the worker's kind: a classic worker of an older page under the old name is never
// asked to be a module worker (the browser would refuse).
const WORKER_NAME = 'natter-events-module';

/**
 * Subscribe to one session's events. With `shared` (operator windows) all windows of this
 * browser share ONE event stream through the module SharedWorker; otherwise (no SharedWorker, it
 * fails to load, or the machine user's page) the very same hub runs inside this window.
 * @param {string} sessionId
 * @param {(msg: object) => void} onMessage gets the hub's messages (see events-hub.js)
 * @param {{shared?: boolean, after?: number, urlFor?: (cursors: [string, number][]) => string}} [opts]
 *   `after`: the window already has the session's events up to this seq (from a request of
 *   its own); the hub then brings only what is newer, unless it holds more already.
 * @returns {() => void} unsubscribes (the window will not show this session)
 */
export function subscribeEvents(sessionId, onMessage, { shared = true, after = 0, urlFor } = {}) {
  let port = null;
  const attach = (p) => {
    port = p;
    port.onmessage = (e) => onMessage(e.data);
    port.postMessage({ subscribe: sessionId, after });
  };
  const worker = shared ? sharedWorker() : null;
  if (worker) {
    let heard = false;
    worker.port.addEventListener('message', () => { heard = true; });
    // A worker script that cannot load (e.g. no module workers) fails here, not in the constructor.
    worker.addEventListener('error', () => { if (!heard) attach(localHub(urlFor)); });
    attach(worker.port);
  } else {
    attach(localHub(urlFor));
  }
  let subscribed = true;
  const unsubscribe = () => port.postMessage({ unsubscribe: sessionId });
  addEventListener('pagehide', () => { if (subscribed) unsubscribe(); });
  addEventListener('pageshow', (e) => { if (e.persisted && subscribed) port.postMessage({ subscribe: sessionId }); });
  return () => {
    subscribed = false;
    unsubscribe();
  };
}

function sharedWorker() {
  if (typeof SharedWorker !== 'function') return null;
  try {
    return new SharedWorker(WORKER_URL, { type: 'module', name: WORKER_NAME });
  } catch (_) {
    return null;
  }
}

/**
 * A hub of this window's own, reached through a MessageChannel like the shared one. Its module
 * is loaded only now (an operator window with the shared worker never needs it): the window's
 * messages wait in the channel until the hub takes its end.
 */
function localHub(urlFor) {
  const channel = new MessageChannel();
  import('./events-hub.js').then(({ createEventHub }) => {
    createEventHub(urlFor ? { urlFor } : undefined).connect(channel.port1);
  });
  return channel.port2;
}
