// The operator's chat window for one session: GET /chat/{id}.
import { getJSON, postJSON, putJSON } from './api.js';
import { ChatWindow } from './chat-window.js';
import { byId } from './dom.js';
import { subscribeEvents } from './events.js';
import { loadOptions, onOptionsChanged } from './options.js';
import { HandOff } from './handoff.js';

const sessionId = decodeURIComponent(location.pathname.replace(/\/+$/, '').split('/').pop());
const api = '/api/sessions/' + encodeURIComponent(sessionId);
/** The newest events, shown first (a few screens); chat.html's boot script asks for the same URL early. */
const RECENT_URL = api + '/events?last=100';

async function main() {
  const chat = new ChatWindow({
    self: { kind: 'operator' },
    send: (body) => postJSON(api + '/messages', body),
    end: () => postJSON(api + '/end'),
    restart: () => postJSON(api + '/join'),
    signal: (kind, body) => postJSON(api + '/' + kind, body),
  });
  // Every request the window needs went out from chat.html's boot script while the page was
  // parsed; here their answers are taken in turn.
  try {
    // The newest events come in one small request, so a long chat shows its end at once;
    // without them (an error) the window waits for the whole history.
    const recent = getJSON(RECENT_URL).catch(() => ({ events: [] }));
    const [me, options, view] = await Promise.all([getJSON('/api/me'), loadOptions(), getJSON(api)]);
    chat.self.id = me.id;
    chat.options = options;
    onOptionsChanged((o) => { chat.options = o; });
    // Before the view: the view's state (members, agent, ended) is newer than these events.
    chat.showRecent((await recent).events || []);
    chat.setSession(view);
  } catch (e) {
    chat.showUnavailable(e.status === 401 ? 'You are not logged in. Log in on the Chat page, then open this chat again.' : e.message);
    return;
  }
  byId('save-text').href = api + '/transcript?format=text';
  byId('save-json').href = api + '/transcript?format=json';
  new HandOff(api, chat).start();
  // The composer has the focus from the start (`autofocus` in chat.html): focus() here would
  // lay the page out once more before the history goes in.
  // The whole history (chat.html's boot script) goes in above the newest events (blocks of
  // text, see Transcript.putHead); events in both are told apart by seq. Only after the frame
  // that shows it does the window join the shared event stream, from the history's last event:
  // the stream carries what is newer (from the start when the history could not be had), and
  // starting the worker and its stream does not compete with showing the history.
  const past = await globalThis.natterHistory;
  if (past) chat.showRecent(past.events);
  afterNextFrame(() => {
    subscribeEvents(sessionId, (m) => chat.handle(m), { shared: true, after: past ? past.after : 0 });
    chat.loadSeen(() => getJSON(api + '/seen'));
    // Remembered for this operator (not this browser): the Chat page offers it again after a
    // crash, a reboot or on another device (best effort: the chat works without it).
    putJSON('/api/me/chats/' + encodeURIComponent(sessionId)).catch(() => {});
  });
}

/**
 * Runs `fn` once the next frame has been rendered, or after 100 ms in a window that gets no
 * frames (opened in the background).
 */
function afterNextFrame(fn) {
  let done = false;
  const run = () => {
    if (!done) {
      done = true;
      fn();
    }
  };
  requestAnimationFrame(() => setTimeout(run, 0));
  setTimeout(run, 100);
}

main();
