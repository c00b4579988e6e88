// Shared by the operator's chat window (chat.js) and the machine user's (machine.js):
// transcript rendering, the composer (Enter sends, Shift+Enter = new line), idempotent sending
// with retries, retention pruning (F3), and the connection to the event hub.
import { sleep } from './api.js';

// ---- options (F12 seam) -----------------------------------------------------------------
// A later issue adds the settings UI and stores these per operator; until then they can be set
// by hand: localStorage.setItem('natter.options', '{"playTone":true,"autoClose":true}').
export const DEFAULT_OPTIONS = Object.freeze({
  playTone: false,   // play a tone on each new message
  autoClose: false,  // close the chat window when either party ends the chat
});

export function loadOptions() {
  let stored = {};
  try { stored = JSON.parse(localStorage.getItem('natter.options') || '{}') || {}; } catch (_) { /* ignore */ }
  return { ...DEFAULT_OPTIONS, ...stored };
}

// ---- helpers ----------------------------------------------------------------------------
/** A client message id (UUID v4); crypto.randomUUID needs a secure context, this does not. */
export function newClientId() {
  if (globalThis.crypto && crypto.randomUUID && globalThis.isSecureContext) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text; // always text, never HTML
  return e;
}

function nameOf(p) {
  if (!p) return 'Someone';
  return p.name || (p.kind === 'operator' ? 'Operator' : p.kind === 'machine_user' ? 'User' : p.id || 'Someone');
}

const SHORT_TIME = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const LONG_TIME = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
function timeEl(at) {
  const t = el('time', 'when');
  const d = new Date(at);
  t.dateTime = d.toISOString();
  t.title = LONG_TIME.format(d);
  t.textContent = SHORT_TIME.format(d);
  return t;
}

let audio = null;
function beep() {
  try {
    audio = audio || new AudioContext();
    const o = audio.createOscillator();
    const g = audio.createGain();
    o.frequency.value = 880;
    g.gain.setValueAtTime(0.08, audio.currentTime);
    g.gain.exponentialRampToValueAtTime(0.0001, audio.currentTime + 0.25);
    o.connect(g).connect(audio.destination);
    o.start();
    o.stop(audio.currentTime + 0.25);
  } catch (_) { /* no audio */ }
}

// ---- the chat window --------------------------------------------------------------------
/**
 * Drives the DOM of chat.html / machine.html.
 * @param {object} cfg
 * @param {{kind:string, id?:string}} cfg.self   who "I" am, to mark my own messages
 * @param {(body:{id:string,text:string}) => Promise<any>} cfg.send
 * @param {() => Promise<any>} cfg.end
 * @param {object} [cfg.options]                 see DEFAULT_OPTIONS
 */
export class ChatWindow {
  constructor(cfg) {
    this.self = cfg.self;
    this.sendFn = cfg.send;
    this.endFn = cfg.end;
    this.options = cfg.options || loadOptions();
    this.events = new Map();     // seq -> {ev, node}
    this.pending = new Map();    // client id -> node (sent by me, not yet seen in the stream)
    this.members = new Map();    // "kind:id" -> participant
    this.queue = Promise.resolve();
    this.offset = 0;             // server clock - local clock (ms)
    this.retention = 0;          // seconds; 0 = unknown, keep everything
    this.ended = false;
    this.machine = '';
    this.loadedAt = Date.now();

    const $ = (id) => document.getElementById(id);
    this.ui = {
      machine: $('machine'), members: $('members'), agent: $('agent'), banner: $('banner'),
      scroller: $('scroller'), list: $('transcript'), form: $('composer'), text: $('text'),
      send: $('send'), end: $('end'), endedNote: $('ended-note'),
    };
    this.bindComposer();
    // Follow new messages only while the reader is at the bottom. Tracked on scroll so that
    // adding an event never forces a layout (joining a session may replay thousands of them).
    this.stick = true;
    this.scrollQueued = false;
    const sc = this.ui.scroller;
    this.autoTop = 0;
    sc.addEventListener('scroll', () => {
      if (sc.scrollHeight - sc.scrollTop - sc.clientHeight < 48) this.stick = true;
      else if (sc.scrollTop < this.autoTop - 1) this.stick = false; // the reader scrolled up
    }, { passive: true });
    setInterval(() => this.prune(), 1000);
  }

  // -- session info --
  setSession(view) {
    this.machine = view.machine;
    document.title = view.machine; // F2: the window title is exactly the machine ID
    this.ui.machine.textContent = view.machine;
    this.members.clear();
    for (const m of view.members || []) this.members.set(m.kind + ':' + m.id, m);
    this.renderMembers();
    if (view.retention_secs) this.retention = view.retention_secs;
    this.setAgent(view.agent);
    this.setEnded(!!view.ended);
  }

  renderMembers() {
    const ops = [], users = [];
    for (const m of this.members.values()) (m.kind === 'machine_user' ? users : ops).push(nameOf(m));
    const parts = [];
    if (users.length) parts.push('User: ' + users.join(', '));
    if (ops.length) parts.push((ops.length > 1 ? 'Operators: ' : 'Operator: ') + ops.join(', '));
    this.ui.members.textContent = parts.join(' · ');
  }

  setAgent(status, detail) {
    const a = this.ui.agent;
    if (!a) return;
    a.dataset.state = status || '';
    a.textContent =
      status === 'pending' ? 'Waiting for the chat window to open on the machine…'
      : status === 'opened' ? 'Chat window open on the machine'
      : status === 'failed' ? 'The chat window could not be opened on the machine' + (detail ? ': ' + detail : '')
      : '';
    a.hidden = !a.textContent;
  }

  setEnded(ended) {
    this.ended = ended;
    this.ui.text.disabled = ended;
    this.ui.send.disabled = ended;
    this.ui.end.hidden = ended;
    if (this.ui.endedNote) this.ui.endedNote.hidden = !ended;
  }

  showBanner(text, kind = 'info') {
    const b = this.ui.banner;
    b.textContent = text || '';
    b.dataset.kind = kind;
    b.hidden = !text;
  }

  // -- messages from the event hub --
  handle(m) {
    switch (m.type) {
      case 'hello':
        this.offset = m.server_time - Date.now();
        if (m.retention_secs) this.retention = m.retention_secs;
        this.prune();
        break;
      case 'events':
        this.addEvents(m.events);
        break;
      case 'reset':
        for (const { node } of this.events.values()) if (node) node.remove();
        this.events.clear();
        break;
      case 'status':
        if (m.state === 'open') this.showBanner('');
        else if (m.state === 'connecting') this.showBanner('Connecting…');
        else this.showBanner('Disconnected from the server. Retrying…', 'error');
        break;
      case 'error':
        this.showBanner(m.message || 'The connection to the server failed.', 'error');
        break;
    }
  }

  cutoff() {
    return this.retention ? Date.now() + this.offset - this.retention * 1000 : -Infinity;
  }

  scrollToEnd(force = false) {
    if (!(this.stick || force) || this.scrollQueued) return;
    this.scrollQueued = true;
    requestAnimationFrame(() => {
      this.scrollQueued = false;
      const sc = this.ui.scroller;
      sc.scrollTop = sc.scrollHeight;
      this.autoTop = sc.scrollTop;
    });
  }

  addEvents(list) {
    const cutoff = this.cutoff();
    let newMessage = false;
    if (list.length > 1) this.ui.list.setAttribute('aria-busy', 'true');
    for (const ev of list) {
      if (this.events.has(ev.seq) || ev.at < cutoff) continue; // dedupe by seq; F3
      const node = this.render(ev);
      this.events.set(ev.seq, { ev, node });
      if (node) this.insert(node, ev.seq);
      if (ev.type === 'message' && this.isLive(ev) && !this.isMine(ev.from)) newMessage = true;
      this.apply(ev);
    }
    this.ui.list.removeAttribute('aria-busy');
    if (newMessage && this.options.playTone) beep();
    this.scrollToEnd();
  }

  /** State changes carried by events. */
  apply(ev) {
    const key = (p) => p && p.kind + ':' + p.id;
    switch (ev.type) {
      case 'joined': this.members.set(key(ev.who), ev.who); this.renderMembers(); break;
      case 'left': this.members.delete(key(ev.who)); this.renderMembers(); break;
      case 'agent': this.setAgent(ev.status, ev.detail); break;
      case 'ended':
        this.setEnded(true);
        if (this.options.autoClose && this.isLive(ev)) setTimeout(() => window.close(), 1500);
        break;
      case 'restarted': this.setEnded(false); break;
    }
  }

  /** Happened after this window opened (not part of the history replay). */
  isLive(ev) {
    return ev.at >= this.loadedAt + this.offset;
  }

  isMine(p) {
    return !!p && p.kind === this.self.kind && (this.self.id == null || p.id === this.self.id);
  }

  render(ev) {
    if (ev.type === 'message') {
      const mine = this.isMine(ev.from);
      if (ev.client_id && this.pending.has(ev.client_id)) {
        this.pending.get(ev.client_id).remove();
        this.pending.delete(ev.client_id);
      }
      return this.messageNode(mine ? 'You' : nameOf(ev.from), ev.text, ev.at, mine, ev.seq);
    }
    const by = (p) => nameOf(p);
    let text;
    switch (ev.type) {
      case 'opened': text = `${by(ev.by)} started the chat`; break;
      case 'joined': text = `${by(ev.who)} joined the chat`; break;
      case 'left': text = `${by(ev.who)} left the chat`; break;
      case 'ended': text = `${by(ev.by)} ended the chat`; break;
      case 'restarted': text = `${by(ev.by)} restarted the chat`; break;
      case 'agent':
        if (this.self.kind === 'machine_user') return null; // only operators need this
        text = ev.status === 'opened' ? 'Chat window opened on the machine'
          : 'The chat window could not be opened on the machine: ' + (ev.detail || 'unknown error');
        break;
      default: return null; // unknown types still count as seen
    }
    const li = el('li', 'sys' + (ev.type === 'agent' && ev.status !== 'opened' ? ' sys-error' : ''));
    li.dataset.seq = ev.seq;
    li.append(el('span', 'sys-text', text), ' ', timeEl(ev.at));
    return li;
  }

  messageNode(who, text, at, mine, seq) {
    const li = el('li', 'msg ' + (mine ? 'mine' : 'theirs'));
    if (seq != null) li.dataset.seq = seq;
    const meta = el('div', 'meta');
    meta.append(el('span', 'who', who), ' ', timeEl(at));
    li.append(meta, el('div', 'text', text));
    return li;
  }

  /** Keep the list in seq order; unsent messages stay at the end. */
  insert(node, seq) {
    const list = this.ui.list;
    let after = list.lastElementChild;
    while (after && (after.dataset.seq === undefined || Number(after.dataset.seq) > seq)) {
      after = after.previousElementSibling;
    }
    if (after) after.after(node); else list.prepend(node);
  }

  /** F3: events older than the retention disappear from open windows. */
  prune() {
    const cutoff = this.cutoff();
    if (cutoff === -Infinity) return;
    for (const [seq, { ev, node }] of this.events) {
      if (ev.at >= cutoff) continue;
      if (node) node.remove();
      this.events.delete(seq); // a replayed copy is dropped by the age check in addEvents
    }
  }

  // -- composer --
  bindComposer() {
    const { form, text, end } = this.ui;
    text.addEventListener('keydown', (e) => {
      if (e.key !== 'Enter' || e.isComposing || e.keyCode === 229) return; // IME in progress
      if (e.shiftKey) return; // Shift+Enter: the textarea inserts the line break
      e.preventDefault();
      this.submit();
    });
    form.addEventListener('submit', (e) => { e.preventDefault(); this.submit(); });
    end.addEventListener('click', () => this.endChat());
  }

  submit() {
    const t = this.ui.text;
    const value = t.value;
    if (this.ended || !value.trim()) return;
    t.value = '';
    t.focus();
    this.send(value);
  }

  send(text) {
    const id = newClientId();
    const node = this.messageNode('You', text, Date.now() + this.offset, true, null);
    node.classList.add('pending');
    node.dataset.pending = id;
    const state = el('div', 'state', 'Sending…');
    node.append(state);
    this.pending.set(id, node);
    this.ui.list.append(node);
    this.scrollToEnd(true);
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
        if (e.retryable && attempt < 4) {
          state.textContent = 'Retrying…';
          await sleep(500 * 2 ** attempt);
          continue;
        }
        node.classList.add('failed');
        state.textContent = '';
        state.append(el('span', null, 'Not sent: ' + e.message + ' '));
        const retry = el('button', 'link', 'Retry');
        retry.type = 'button';
        retry.addEventListener('click', () => {
          state.textContent = 'Sending…';
          this.queue = this.queue.then(() => this.deliver(id, text, node, state));
        });
        state.append(retry);
        return;
      }
    }
  }

  async endChat() {
    this.ui.end.disabled = true;
    try {
      await this.endFn();
      this.setEnded(true);
    } catch (e) {
      if (e.status === 409) this.setEnded(true);
      else this.showBanner(e.message, 'error');
    } finally {
      this.ui.end.disabled = false;
    }
  }
}

// ---- the event hub ----------------------------------------------------------------------
/**
 * Subscribe to one session's events. With `shared` (operator windows) all windows of this
 * browser share ONE EventSource through the SharedWorker; otherwise (no SharedWorker, or the
 * machine user's page) the very same hub code runs inside this window.
 * @returns {Promise<void>}
 */
export async function subscribeEvents(sessionId, onMessage, { shared = true, urlFor } = {}) {
  let port;
  if (shared && typeof SharedWorker === 'function') {
    try {
      port = new SharedWorker('/static/events-worker.js', { name: 'natter-events' }).port;
    } catch (_) { port = null; }
  }
  if (!port) {
    await import('/static/events-worker.js'); // defines globalThis.NatterEvents
    const hub = globalThis.NatterEvents.createEventHub(urlFor ? { urlFor } : undefined);
    const ch = new MessageChannel();
    hub.connect(ch.port1);
    port = ch.port2;
  }
  port.onmessage = (e) => onMessage(e.data);
  port.postMessage({ subscribe: sessionId });
  addEventListener('pagehide', () => port.postMessage({ unsubscribe: sessionId }));
  addEventListener('pageshow', (e) => { if (e.persisted) port.postMessage({ subscribe: sessionId }); });
}
