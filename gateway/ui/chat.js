// The operator's chat window for one session: GET /chat/{id}.
import { getJSON, postJSON } from './api.js';
import { ChatWindow, subscribeEvents } from './chat-common.js';

const sessionId = decodeURIComponent(location.pathname.replace(/\/+$/, '').split('/').pop());
const api = '/api/sessions/' + encodeURIComponent(sessionId);

async function main() {
  let me;
  const chat = new ChatWindow({
    self: { kind: 'operator' },
    send: (body) => postJSON(api + '/messages', body),
    end: () => postJSON(api + '/end'),
  });
  try {
    me = await getJSON('/api/me');
    chat.self.id = me.id;
    chat.setSession(await getJSON(api));
  } catch (e) {
    chat.ui.machine.textContent = 'Chat unavailable';
    document.title = 'Chat unavailable';
    chat.showBanner(e.status === 401 ? 'You are not logged in. Log in on the Chat page, then open this chat again.' : e.message, 'error');
    chat.setEnded(true);
    chat.ui.endedNote.hidden = true;
    return;
  }
  chat.ui.text.focus();
  await subscribeEvents(sessionId, (m) => chat.handle(m), { shared: true });
}

main();
