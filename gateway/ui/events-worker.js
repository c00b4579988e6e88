// The module SharedWorker behind every operator chat window of this browser (events.js starts
// it): all their ports join one event hub, so all windows share one event stream.
import { createEventHub } from './events-hub.js';

const hub = createEventHub();
globalThis.onconnect = (e) => hub.connect(e.ports[0]);
