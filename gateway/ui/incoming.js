// Incoming chats on the Chat page: chats waiting for this operator to answer (a machine user or
// another operator started them), from the machine stream's `incoming` / `incoming_gone` events
// (docs/api.md). Shown in a popup panel until answered or ended — in any window or browser of
// this operator — and announced once per chat: a browser notification while the page is in the
// background (notifications.js), and the tone if the operator's `play_tone` option is on.
import { el } from './dom.js';
import { clockTime, longTime } from './time-text.js';
import { nameOf } from './transcript.js';

/**
 * "Carol on pc1.sales.acme wants to chat" / "Bob Builder wants to chat" / "Alice Admin hands
 * you the chat with pc1.sales.acme".
 */
export function incomingText(inc) {
  const who = nameOf(inc.from);
  if (inc.handoff) return `${who} hands you the chat with ${inc.machine}`;
  return inc.machine ? `${who} on ${inc.machine} wants to chat` : `${who} wants to chat`;
}

export class IncomingChats {
  /**
   * @param {object} ui
   * @param {HTMLElement} ui.panel      the popup, shown while a chat waits
   * @param {HTMLUListElement} ui.list  one <li> per waiting chat
   * @param {object} actions
   * @param {(sessionId: string) => void} actions.answer   join the chat and open its window
   * @param {(inc: object) => void} actions.announce       a chat this page has not seen before
   * @param {(sessionId: string) => void} actions.gone     it no longer waits
   */
  constructor(ui, actions) {
    Object.assign(this, { ui, actions });
    this.waiting = new Map(); // session id -> <li>
    this.pageTitle = document.title;
    this.announced = new Set(); // session ids announced by this page (a reconnect resends them)
  }

  /** Forget everything (logged out). */
  clear() {
    for (const id of this.waiting.keys()) this.actions.gone(id);
    this.waiting.clear();
    this.announced.clear();
    this.render();
  }

  /**
   * The stream (re)connected: the server resends every waiting chat right after, so what is
   * shown now is dropped (a chat answered meanwhile elsewhere must not stay).
   */
  resync() {
    this.waiting.clear();
    this.render();
  }

  /** A chat waiting for this operator (new, or resent after a reconnect). */
  add(inc) {
    if (!inc || typeof inc.session !== 'string' || !inc.session) return;
    this.waiting.set(inc.session, this.item(inc));
    this.render();
    if (!this.announced.has(inc.session)) {
      this.announced.add(inc.session);
      this.actions.announce(inc);
    }
  }

  /** The chat no longer waits (answered or ended). */
  remove(sessionId) {
    this.actions.gone(sessionId);
    if (this.waiting.delete(sessionId)) this.render();
  }

  item(inc) {
    const li = el('li', 'incoming-item');
    li.dataset.session = inc.session;
    const text = el('span', 'incoming-text', incomingText(inc));
    li.append(text);
    if (Number.isFinite(inc.at)) {
      const t = el('time', 'when');
      const d = new Date(inc.at);
      t.dateTime = d.toISOString();
      t.title = longTime(d);
      t.textContent = 'since ' + clockTime(d);
      li.append(' ', t);
    }
    const answer = el('button', 'primary incoming-answer', 'Answer');
    answer.type = 'button';
    // Synchronous inside the click: the chat window is opened at once (popup blockers).
    answer.addEventListener('click', () => this.actions.answer(inc.session));
    li.append(answer);
    return li;
  }

  render() {
    const items = [...this.waiting.values()];
    this.ui.list.replaceChildren(...items);
    this.ui.panel.hidden = items.length === 0;
    // Seen on the browser's tab while the page is in the background.
    document.title = items.length ? `(${items.length}) ${this.pageTitle}` : this.pageTitle;
  }
}
