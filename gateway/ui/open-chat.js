// Starting and joining chats from the Chat page: each chat in a NEW window (F13), never
// reusing another one; a chat that already has its window is brought forward.
import { postJSON } from './api.js';
import { el } from './dom.js';

const CHAT_FEATURES = 'popup,width=480,height=640';

export class ChatOpener {
  /**
   * @param {import('./page-error.js').PageError} errors
   * @param {(view: object) => void} chatStarted      the server answered with the session: e.g.
   *                                                  fetch its machine to show Join Session
   * @param {() => void} loggedOut                    the login is gone
   */
  constructor(errors, chatStarted, loggedOut) {
    Object.assign(this, { errors, chatStarted, loggedOut });
    this.windows = new Map(); // session id -> the window this page opened for it
  }

  /**
   * Start a chat with the user logged on to `machineId`: of several users, the one whose OS
   * session is `userSession` (omitted: the first).
   */
  start(machineId, userSession) {
    const body = userSession === undefined ? { machine: machineId } : { machine: machineId, user_session: userSession };
    this.open(() => postJSON('/api/chats', body).then((r) => r.session));
  }

  /** Start a chat with operator `operatorId` (they get an incoming chat to answer). */
  startWithOperator(operatorId) {
    this.open(() => postJSON('/api/chats', { operator: operatorId }).then((r) => r.session));
  }

  /** Join the running session `sessionId` (also how an incoming chat is answered). */
  join(sessionId) {
    this.open(() => postJSON('/api/sessions/' + encodeURIComponent(sessionId) + '/join'));
  }

  /**
   * The window is opened synchronously inside the click (so popup blockers allow it) and
   * pointed at /chat/{id} once the server answered with the session.
   * @param {() => Promise<{id: string, machine: string}>} request resolves to a SessionView
   *   (`machine` is '' for a chat between operators)
   */
  open(request) {
    this.errors.show('');
    const w = window.open('about:blank', '', CHAT_FEATURES);
    if (w) {
      try { w.document.title = 'Starting chat…'; w.document.body.textContent = 'Starting chat…'; } catch (_) { /* ignore */ }
    }
    request().then((view) => {
      this.show(view.id, w);
      this.chatStarted(view);
    }).catch((e) => {
      if (w) w.close();
      if (e.status === 401) return this.loggedOut();
      this.errors.show(e.message);
    });
  }

  /** Shows session `id` in its window: the one it has, `w` (opened for it), or a new one. */
  show(id, w) {
    const url = new URL('/chat/' + encodeURIComponent(id), location.href).href;
    const open = this.windows.get(id);
    if (open && !open.closed) {
      if (w) w.close();
      open.focus();
    } else if (w && !w.closed) {
      w.name = windowName(id);
      w.location.href = url;
      this.windows.set(id, w);
    } else if (!this.openWindow(url, id)) {
      this.popupBlocked(url, id);
    }
  }

  openWindow(url, id) {
    const w = window.open(url, windowName(id), CHAT_FEATURES);
    if (w) this.windows.set(id, w);
    return w;
  }

  popupBlocked(url, id) {
    const a = el('a', null, 'Open the chat window');
    a.href = url;
    a.addEventListener('click', (e) => {
      e.preventDefault();
      if (this.openWindow(url, id)) this.errors.show('');
    });
    this.errors.showNodes(['Your browser blocked the chat window. ', a]);
  }
}

const windowName = (id) => 'natter-chat-' + id;
