// "Hand over" in the operator's chat window (a chat with a machine): lists the operators who
// may take it now (GET …/handoff: on the Chat page, not hidden, the machine in their scope) and
// hands it to the one clicked (POST …/handoff). The receiver gets the incoming-chat popup; the
// window shows "Waiting for … to answer" and, in the transcript, to whom it went.
import { getJSON, postJSON } from './api.js';
import { byId, el } from './dom.js';

export class HandOff {
  /**
   * @param {string} api  /api/sessions/{id}
   * @param {import('./chat-window.js').ChatWindow} chat
   */
  constructor(api, chat) {
    Object.assign(this, { api, chat });
    this.ui = {
      open: byId('handoff-open'), panel: byId('handoff'), list: byId('handoff-list'),
      note: byId('handoff-note'), cancel: byId('handoff-cancel'),
    };
  }

  start() {
    this.ui.open.addEventListener('click', () => this.show());
    this.ui.cancel.addEventListener('click', () => { this.ui.panel.hidden = true; });
    this.refresh();
    // Only a chat with a machine, in progress, can be handed on.
    setInterval(() => this.refresh(), 1000);
  }

  refresh() {
    this.ui.open.hidden = !this.chat.machine || this.chat.ended;
    if (this.ui.open.hidden) this.ui.panel.hidden = true;
  }

  async show() {
    const { panel, list, note } = this.ui;
    panel.hidden = false;
    list.replaceChildren();
    note.textContent = 'Looking for operators…';
    let who;
    try {
      who = await getJSON(this.api + '/handoff');
    } catch (e) {
      note.textContent = e.message;
      return;
    }
    note.textContent = who.length ? 'Hand this chat to:' : 'No other operator who may see this machine is on the Chat page now.';
    for (const op of who) {
      const b = el('button', 'link handoff-to', op.name);
      b.type = 'button';
      b.dataset.operator = op.id;
      b.addEventListener('click', () => this.handTo(op));
      const li = el('li');
      li.append(b);
      list.append(li);
    }
  }

  async handTo(op) {
    const { panel, note } = this.ui;
    try {
      const view = await postJSON(this.api + '/handoff', { operator: op.id });
      this.chat.setSession(view);
      panel.hidden = true;
    } catch (e) {
      note.textContent = e.message;
    }
  }
}
