// The module SharedWorker behind every operator chat window of this browser (events.js starts
// it): all their ports join one event hub, so all windows share one event stream.
import { createEventHub } from './events-hub.js';
// events-hub.js's own imports, named here too so the worker fetches them at once with it rather
// than one import level later (the session's stream opens only once all are in).
import './event-stream.js';
import './api.js';

const hub = createEventHub();
globalThis.onconnect = (e) => hub.connect(e.ports[0]);
