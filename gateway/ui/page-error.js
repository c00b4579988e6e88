// The Chat page's error line. It remembers who showed the current error, so that the machine
// stream, once it works again, clears only its own error and not, say, a failed chat start.
export class PageError {
  constructor(element) {
    this.element = element;
    this.owner = null;
  }

  /** Shows `text` ('' hides the line). */
  show(text, owner = 'page') {
    this.element.textContent = text;
    this.element.hidden = !text;
    this.owner = text ? owner : null;
  }

  /** Shows text and links. */
  showNodes(nodes, owner = 'page') {
    this.element.replaceChildren(...nodes);
    this.element.hidden = false;
    this.owner = owner;
  }

  /** Hides the error if `owner` showed it. */
  clear(owner) {
    if (this.owner === owner) this.show('');
  }
}
