// A chat window's composer: Enter sends, Shift+Enter = new line; sending is idempotent (one
// client id per message, kept on every retry) and in the order the messages were typed.
import { sleep } from './api.js';
import { el } from './dom.js';

const MAX_RETRIES = 4;
/** At most one "is typing" per this interval (the server drops more anyway: docs/api.md). */
export const TYPING_EVERY_MS = 2000;

/** A client message id (UUID v4); crypto.randomUUID needs a secure context, this does not. */
export function newClientId() {
  if (globalThis.crypto && crypto.randomUUID && globalThis.isSecureContext) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export class Composer {
  /**
   * @param {{form: HTMLFormElement, text: HTMLTextAreaElement}} ui
   * @param {import('./transcript.js').Transcript} transcript shows what is being sent
   * @param {(body: {id: string, text: string}) => Promise<any>} sendFn
   * @param {() => boolean} isEnded nothing is sent once the chat ended
   * @param {(typing: boolean) => void} [onTyping] told `true` at most once per
   *   TYPING_EVERY_MS while text is typed, `false` when the input is emptied again
   */
  constructor(ui, transcript, sendFn, isEnded, onTyping = () => {}) {
    this.ui = ui;
    this.transcript = transcript;
    this.sendFn = sendFn;
    this.isEnded = isEnded;
    this.queue = Promise.resolve();
    this.onTyping = onTyping;
    this.typingSentAt = 0; // when onTyping(true) was last called; 0: not typing
    ui.text.addEventListener('input', () => this.typed());
    ui.text.addEventListener('keydown', (e) => {
      if (e.key !== 'Enter' || e.isComposing || e.keyCode === 229) return; // IME in progress
      if (e.shiftKey) return; // Shift+Enter: the textarea inserts the line break
      e.preventDefault();
      this.submit();
    });
    ui.form.addEventListener('submit', (e) => { e.preventDefault(); this.submit(); });
  }

  /** Typing shown to the others: throttled here as on the server; cleared when emptied. */
  typed() {
    if (this.isEnded()) return;
    const typing = this.ui.text.value.trim() !== '';
    const now = Date.now();
    if (typing && now - this.typingSentAt >= TYPING_EVERY_MS) {
      this.typingSentAt = now;
      this.onTyping(true);
    } else if (!typing && this.typingSentAt) {
      this.typingSentAt = 0;
      this.onTyping(false);
    }
  }

  submit() {
    const t = this.ui.text;
    const value = t.value;
    if (this.isEnded() || !value.trim()) return;
    // Sent: no longer typing (the message also ends "is typing" where it arrives).
    if (this.typingSentAt) {
      this.typingSentAt = 0;
      this.onTyping(false);
    }
    t.value = '';
    t.focus();
    this.send(value);
  }

  send(text) {
    const id = newClientId();
    const node = this.transcript.addPending(id, text);
    const state = el('div', 'state', 'Sending…');
    node.append(state);
    this.enqueue(id, text, node, state);
  }

  enqueue(id, text, node, state) {
    this.queue = this.queue.then(() => this.deliver(id, text, node, state)); // keep send order
  }

  async deliver(id, text, node, state) {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.sendFn({ id, text }); // same client id on every try: the server dedupes
        if (node.isConnected) state.textContent = 'Sent';
        node.classList.remove('failed');
        return;
      } catch (e) {
        if (e.retryable && attempt < MAX_RETRIES) {
          state.textContent = 'Retrying…';
          await sleep(500 * 2 ** attempt);
          continue;
        }
        this.showFailed(e, id, text, node, state);
        return;
      }
    }
  }

  showFailed(error, id, text, node, state) {
    node.classList.add('failed');
    state.textContent = '';
    state.append(el('span', null, 'Not sent: ' + error.message + ' '));
    const retry = el('button', 'link', 'Retry');
    retry.type = 'button';
    retry.addEventListener('click', () => {
      state.textContent = 'Sending…';
      this.enqueue(id, text, node, state);
    });
    state.append(retry);
  }
}
