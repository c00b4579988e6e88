// Browser notifications of incoming chats (the Notification API). Permission is asked only
// when the operator clicks "Notify me of incoming chats", never unasked; a notification is
// shown only while the Chat page is in the background (hidden or not focused), since the page's
// own popup says the same thing otherwise. Clicking one brings the page forward and answers.

const supported = () => typeof Notification === 'function';

export class IncomingNotifier {
  /**
   * @param {object} ui
   * @param {HTMLButtonElement} ui.button  "Notify me of incoming chats"
   * @param {HTMLElement} ui.status        what the browser allows
   */
  constructor(ui) {
    this.ui = ui;
    this.shown = new Map(); // session id -> Notification
    ui.button.addEventListener('click', () => this.ask());
    // The permission may be changed in the browser's settings meanwhile.
    document.addEventListener('visibilitychange', () => this.render());
    this.render();
  }

  async ask() {
    if (!supported()) return;
    try {
      await Notification.requestPermission();
    } catch (_) { /* an old callback-only browser: the permission is read below */ }
    this.render();
  }

  render() {
    const { button, status } = this.ui;
    const permission = supported() ? Notification.permission : 'unsupported';
    button.hidden = permission !== 'default';
    status.textContent =
      permission === 'granted' ? 'Notifications of incoming chats are on while this page is in the background.'
      : permission === 'denied' ? 'Your browser blocks notifications from this site; allow them in its site settings to be notified of incoming chats.'
      : permission === 'unsupported' ? 'This browser cannot show notifications; keep this page in view to see incoming chats.'
      : '';
    status.hidden = !status.textContent;
  }

  /** Shows a notification for a chat unless the page is in front; `onClick` answers it. */
  notify(sessionId, title, body, onClick) {
    if (!supported() || Notification.permission !== 'granted') return;
    if (document.visibilityState === 'visible' && document.hasFocus()) return;
    let n;
    try {
      n = new Notification(title, { body, tag: 'natter-incoming-' + sessionId, requireInteraction: true });
    } catch (_) {
      return; // e.g. a browser that allows them only from a service worker
    }
    this.shown.set(sessionId, n);
    n.onclick = () => {
      window.focus();
      n.close();
      onClick();
    };
    n.onclose = () => { if (this.shown.get(sessionId) === n) this.shown.delete(sessionId); };
  }

  /** The chat no longer waits: its notification goes. */
  close(sessionId) {
    const n = this.shown.get(sessionId);
    if (n) n.close();
    this.shown.delete(sessionId);
  }
}
