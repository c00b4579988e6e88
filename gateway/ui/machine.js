// The machine user's chat window: the agent opens /m/{id}/#t=<token>.
import { getJSON, postJSON } from './api.js';
import { ChatWindow } from './chat-window.js';
import { subscribeEvents } from './events.js';

const sessionId = decodeURIComponent(location.pathname.split('/')[2] || '');
const base = '/m/' + encodeURIComponent(sessionId) + '/api';

async function login() {
  const token = new URLSearchParams(location.hash.slice(1)).get('t');
  if (token) {
    // The token is the chat link's secret: never leave it in the address bar or history.
    history.replaceState(null, '', location.pathname + location.search);
    try {
      return await postJSON(base + '/login', { token });
    } catch (e) {
      // A link works once: opened again (a restored tab), the cookie carries the login.
      if (e.status !== 401) throw e;
    }
  }
  return getJSON(base + '/session'); // the cookie of the first login (reload)
}

async function main() {
  const chat = new ChatWindow({
    self: { kind: 'machine_user' },
    send: (body) => postJSON(base + '/messages', body),
    end: () => postJSON(base + '/end'),
    signal: (kind, body) => postJSON(base + '/' + kind, body),
  });
  try {
    chat.setSession(await login());
  } catch (e) {
    chat.showUnavailable(e.status === 401 ? 'This chat link is no longer valid. Ask your IT support to start a new chat.' : e.message);
    return;
  }
  chat.ui.text.focus();
  // One session, one event stream: the hub runs in this window (no SharedWorker needed).
  subscribeEvents(sessionId, (m) => chat.handle(m), {
    shared: false,
    urlFor: ([[, seq]]) => base + '/events' + (seq > 0 ? '?since=' + seq : ''), // resume after a failure
  });
  chat.loadSeen(() => getJSON(base + '/seen'));
}

main();
