// "Operators online" on the Chat page: the operators the server lists on the machine stream
// (`event: operators`, docs/api.md): logged on to the Chat page now, on any node, not hiding
// their name, and allowed to see every machine the current filter shows. The server sends the
// whole list each time it changes; clicking a name starts a chat with that operator.
import { el } from './dom.js';

const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });
const nameOf = (op) => op.name || op.id;

export class OperatorList {
  /**
   * @param {object} ui
   * @param {HTMLUListElement} ui.list   one <li> per operator
   * @param {HTMLElement} ui.empty       says why there is nobody (or that the list is loading)
   * @param {(operatorId: string) => void} chat  start a chat with that operator
   */
  constructor(ui, chat) {
    Object.assign(this, { ui, chat });
    this.operators = []; // as the server sent them, sorted by name
    this.clear();
  }

  /** Nothing known yet (logged out, or the stream not opened). */
  clear() {
    this.operators = [];
    this.ui.list.replaceChildren();
    this.say('Loading…');
  }

  /** The server's whole list (it replaces everything). */
  replace(list) {
    this.operators = list
      .filter((op) => op && typeof op.id === 'string')
      .sort((a, b) => collator.compare(nameOf(a), nameOf(b)) || collator.compare(a.id, b.id));
    this.ui.list.replaceChildren(...this.operators.map((op) => this.item(op)));
    this.say(this.operators.length ? '' : 'No other operator who may see these machines is online.');
  }

  item(op) {
    const li = el('li');
    li.dataset.operator = op.id;
    const b = el('button', 'link operator-link', nameOf(op));
    b.type = 'button';
    b.title = `Chat with ${nameOf(op)} (${op.id})`;
    // Synchronous inside the click: the chat window is opened at once (popup blockers).
    b.addEventListener('click', () => this.chat(op.id));
    li.append(b);
    return li;
  }

  say(text) {
    this.ui.empty.textContent = text;
    this.ui.empty.hidden = !text;
  }
}
