// "Your open chats" on the Chat page (B7): the chats this operator had a window open for, kept
// on the server per operator (GET /api/me/chats), so after a browser crash, a reboot or on
// another device each is one click from its window again, with its whole retained history.
// "Forget" takes one off the list (DELETE); a window opened again puts it back.
import { deleteJSON, getJSON } from './api.js';
import { el } from './dom.js';
import { nameOf } from './transcript.js';

export class OpenChats {
  /**
   * @param {object} ui
   * @param {HTMLElement} ui.section  hidden while the list is empty
   * @param {HTMLUListElement} ui.list
   * @param {(sessionId: string) => void} open  show the chat's window (a new one if needed)
   */
  constructor(ui, open) {
    Object.assign(this, { ui, open });
  }

  /** Loads the list of operator `me` (whose own name is left out of titles). */
  async load(me) {
    this.me = me;
    let views;
    try {
      views = await getJSON('/api/me/chats');
    } catch (_) {
      return; // the list is a convenience: the page works without it
    }
    this.ui.list.replaceChildren(...views.map((v) => this.item(v)));
    this.ui.section.hidden = views.length === 0;
  }

  clear() {
    this.ui.list.replaceChildren();
    this.ui.section.hidden = true;
  }

  item(view) {
    const li = el('li', 'open-chat');
    li.dataset.session = view.id;
    const others = [...(view.members || []), ...(view.invited || [])].filter((p) => p.kind === 'operator' && p.id !== this.me);
    // As the chat window's title: the machine ID (with the user, of several), or the operators.
    const machine = view.machine && view.user ? `${view.machine} — ${view.user.name}` : view.machine;
    const title = machine || ('Chat with ' + others.map(nameOf).join(', '));
    const open = el('button', 'link open-chat-open', title);
    open.type = 'button';
    // Synchronous inside the click: the window opens at once (popup blockers).
    open.addEventListener('click', () => this.open(view.id));
    const forget = el('button', 'link open-chat-forget', 'Forget');
    forget.type = 'button';
    forget.addEventListener('click', async () => {
      try {
        await deleteJSON('/api/me/chats/' + encodeURIComponent(view.id));
        li.remove();
        this.ui.section.hidden = this.ui.list.children.length === 0;
      } catch (_) { /* stays listed; try again */ }
    });
    li.append(open, view.ended ? ' (ended) ' : ' ', forget);
    return li;
  }
}
