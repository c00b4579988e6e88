// The operator's chat window for one session: GET /chat/{id}.
import { getJSON, postJSON } from './api.js';
import { ChatWindow } from './chat-window.js';
import { subscribeEvents } from './events.js';
import { loadOptions, onOptionsChanged } from './options.js';

const sessionId = decodeURIComponent(location.pathname.replace(/\/+$/, '').split('/').pop());
const api = '/api/sessions/' + encodeURIComponent(sessionId);

async function main() {
  const chat = new ChatWindow({
    self: { kind: 'operator' },
    send: (body) => postJSON(api + '/messages', body),
    end: () => postJSON(api + '/end'),
    restart: () => postJSON(api + '/join'),
  });
  try {
    const me = await getJSON('/api/me');
    chat.self.id = me.id;
    chat.options = await loadOptions(); // before any event: they decide the tone and auto-close
    onOptionsChanged((o) => { chat.options = o; });
    chat.setSession(await getJSON(api));
  } catch (e) {
    chat.showUnavailable(e.status === 401 ? 'You are not logged in. Log in on the Chat page, then open this chat again.' : e.message);
    return;
  }
  chat.ui.text.focus();
  subscribeEvents(sessionId, (m) => chat.handle(m), { shared: true });
}

main();
