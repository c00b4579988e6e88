// A window's side of the event hub (events-hub.js): subscribe to one session's events.
import { createEventHub } from './events-hub.js';

// chat.html's boot script starts the same worker: keep both in step.
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
 * @param {{shared?: boolean, urlFor?: (cursors: [string, number][]) => string}} [opts]
 * @returns {() => void} unsubscribes (the window will not show this session)
 */
export function subscribeEvents(sessionId, onMessage, { shared = true, urlFor } = {}) {
  let port = null;
  const attach = (p) => {
    port = p;
    port.onmessage = (e) => onMessage(e.data);
    port.postMessage({ subscribe: sessionId });
  };
  const early = shared ? takeEarlyWorker(sessionId) : null;
  const worker = early ? early.worker : shared ? sharedWorker() : null;
  if (early && early.failed) {
    attach(localHub(urlFor));
  } else if (worker) {
    let heard = false;
    worker.port.addEventListener('message', () => { heard = true; });
    // A worker script that cannot load (e.g. no module workers) fails here, not in the constructor.
    worker.addEventListener('error', () => { if (!heard) attach(localHub(urlFor)); });
    if (early) {
      // Subscribed by chat.html's boot script (once its history request is answered): listening starts
      // the port, whose messages waited.
      port = worker.port;
      port.onmessage = (e) => onMessage(e.data);
    } else {
      attach(worker.port);
    }
  } else {
    attach(localHub(urlFor));
  }
  let subscribed = true;
  // Not before the boot script's subscription, which would undo it.
  const unsubscribe = () => Promise.resolve(early && early.subscribed).then(() => port.postMessage({ unsubscribe: sessionId }));
  addEventListener('pagehide', () => { if (subscribed) unsubscribe(); });
  addEventListener('pageshow', (e) => { if (e.persisted && subscribed) port.postMessage({ subscribe: sessionId }); });
  return () => {
    subscribed = false;
    unsubscribe();
  };
}

/**
 * The shared worker chat.html's boot script started for `sessionId`, already subscribed to it (once; null
 * if there is none).
 */
function takeEarlyWorker(sessionId) {
  const early = globalThis.natterEarlyWorker;
  if (!early || early.session !== sessionId) return null;
  globalThis.natterEarlyWorker = null;
  return early;
}

function sharedWorker() {
  if (typeof SharedWorker !== 'function') return null;
  try {
    return new SharedWorker(WORKER_URL, { type: 'module', name: WORKER_NAME });
  } catch (_) {
    return null;
  }
}

/** A hub of this window's own, reached through a MessageChannel like the shared one. */
function localHub(urlFor) {
  const hub = createEventHub(urlFor ? { urlFor } : undefined);
  const channel = new MessageChannel();
  hub.connect(channel.port1);
  return channel.port2;
}
