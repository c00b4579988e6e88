// The chat window of chat.html (operator, chat.js) and machine.html (machine user, machine.js):
// the session's header (title, members, operators asked to join, agent, ended), the banner, and
// what the event hub sends (events.js); the transcript and the composer do the rest.
import { byId, el } from './dom.js';
import { DEFAULT_OPTIONS } from './options.js';
import { Transcript, nameOf, shortTime } from './transcript.js';
import { Composer } from './composer.js';
import { beep } from './tone.js';

/** A participant's key in the maps of members and invited operators. */
const key = (p) => p.kind + ':' + p.id;

/** Shown in a window whose session found no room on the shared event stream. */
export const FULL_MESSAGE = 'Too many chat windows open: close one to receive messages here.';

/** How long "… is typing" stays without a new typing signal (the sender repeats it every 2 s). */
export const TYPING_SHOWN_MS = 5000;

/**
 * Drives the DOM of chat.html / machine.html.
 * @param {object} cfg
 * @param {{kind:string, id?:string}} cfg.self   who "I" am, to mark my own messages
 * @param {(body:{id:string,text:string}) => Promise<any>} cfg.send
 * @param {() => Promise<any>} cfg.end
 * @param {(kind: 'typing'|'seen', body: object) => Promise<any>} [cfg.signal] posts a signal
 *                                               (…/typing, …/seen); failures are ignored
 * @param {() => Promise<any>} [cfg.restart]     join again: restarts an ended chat, or asks the
 *                                               machine's agent again for a window that failed
 *                                               (operators only); resolves to a SessionView
 * @param {object} [cfg.options]                 see DEFAULT_OPTIONS in options.js (the defaults
 *                                               until the operator's own are loaded)
 */
export class ChatWindow {
  constructor(cfg) {
    this.self = cfg.self;
    this.endFn = cfg.end;
    this.restartFn = cfg.restart;
    this.options = cfg.options || { ...DEFAULT_OPTIONS };
    this.members = new Map(); // "kind:id" -> participant
    this.invited = new Map(); // "kind:id" -> operator asked to join who has not answered yet
    this.ended = false;
    this.machine = '';
    this.ui = {
      machine: byId('machine'), members: byId('members'), agent: byId('agent'), waiting: byId('waiting'),
      banner: byId('banner'),
      scroller: byId('scroller'), list: byId('transcript'), form: byId('composer'), text: byId('text'),
      send: byId('send'), end: byId('end'), endedNote: byId('ended-note'), restart: byId('restart'),
    };
    this.agentStatus = '';
    this.incoming = []; // batches of events not yet shown (see handle)
    this.showQueued = false;
    this.historyEnd = null; // the session's last seq when the window opened
    this.catchingUp = true; // its history has not all come yet
    this.catchUpTimer = 0;
    this.transcript = new Transcript(this.ui, this.self);
    // A block of older events that gets its nodes may hold my newest message seen.
    this.transcript.onUpgrade = () => { if (this.seenBy.size) this.renderSeen(); };
    this.signalFn = cfg.signal || (() => Promise.resolve());
    this.composer = new Composer(this.ui, this.transcript, cfg.send, () => this.ended,
      (typing) => this.sendSignal('typing', typing ? {} : { typing: false }));
    this.typing = new Map(); // "kind:id" -> {who, timer}: the others typing now
    this.seenBy = new Map(); // "kind:id" -> {who, seq, at}: the latest seen of each other member
    this.seenMark = null;    // the "Seen" line, under the newest of my messages seen
    this.seenSent = 0;       // the highest seq this window said it has seen
    this.unseen = false;     // a message from someone else came since
    this.ui.typing = byId('typing');
    const looked = () => this.sendSeen();
    addEventListener('focus', looked);
    document.addEventListener('visibilitychange', looked);
    this.ui.end.addEventListener('click', () => this.endChat());
    if (this.ui.restart) this.ui.restart.addEventListener('click', () => this.restartChat());
  }

  // -- session info --
  setSession(view) {
    this.machine = view.machine || '';
    this.user = view.user || null; // the one user of several this chat is with
    this.members.clear();
    for (const m of view.members || []) this.members.set(key(m), m);
    this.invited.clear();
    for (const m of view.invited || []) this.invited.set(key(m), m);
    this.renderMembers();
    if (view.retention_secs) this.transcript.retention = view.retention_secs;
    if (this.historyEnd === null) this.historyEnd = view.last_seq || 0;
    this.setAgent(view.agent);
    this.setEnded(!!view.ended);
  }

  /**
   * F2: a machine chat's title is exactly the machine ID; a chat with one of a machine's several
   * users has that user beside it ("ts1.sales.acme — dave"). A chat between operators has none:
   * it is titled with the other operators' names ("Chat with Bob Builder").
   */
  renderTitle() {
    let title = this.machine && this.user ? `${this.machine} — ${this.user.name}` : this.machine;
    if (!title) {
      const others = new Map([...this.members, ...this.invited]);
      const names = [...others.values()]
        .filter((p) => p.kind === 'operator' && !this.transcript.isMine(p))
        .map(nameOf);
      title = names.length ? 'Chat with ' + names.join(', ') : 'Chat between operators';
    }
    document.title = title;
    this.ui.machine.textContent = title;
  }

  renderMembers() {
    this.renderTitle();
    this.renderWaiting();
    const ops = [], users = [];
    for (const m of this.members.values()) (m.kind === 'machine_user' ? users : ops).push(nameOf(m));
    const parts = [];
    if (users.length) parts.push('User: ' + users.join(', '));
    if (ops.length) parts.push((ops.length > 1 ? 'Operators: ' : 'Operator: ') + ops.join(', '));
    this.ui.members.textContent = parts.join(' · ');
  }

  /** "Waiting for Bob Builder to answer…" while an operator asked to join has not. */
  renderWaiting() {
    const w = this.ui.waiting;
    if (!w) return;
    const names = [...this.invited.values()].map(nameOf);
    w.textContent = names.length && !this.ended ? `Waiting for ${names.join(', ')} to answer…` : '';
    w.hidden = !w.textContent;
  }

  setAgent(status, detail) {
    const a = this.ui.agent;
    if (!a) return;
    if (!this.machine) status = ''; // a chat between operators: no machine, no agent to ask
    a.dataset.state = status || '';
    a.textContent =
      status === 'pending' ? 'Waiting for the chat window to open on the machine…'
      // An ended chat waits for nothing: it opens no window when the machine comes back.
      : status === 'waiting' ? (this.ended ? '' : 'Waiting for the machine — the chat opens when it checks in again')
      : status === 'opened' ? 'Chat window open on the machine'
      : status === 'failed' ? 'The chat window could not be opened on the machine' + (detail ? ': ' + detail : '')
      : '';
    a.hidden = !a.textContent;
    this.agentStatus = status || '';
    this.agentDetail = detail;
    this.renderRestart();
  }

  /** "Restart chat" once it ended; "Ask again" while the machine's window failed to open. */
  renderRestart() {
    const r = this.ui.restart;
    if (!r) return;
    const failed = !this.ended && this.agentStatus === 'failed';
    r.textContent = this.ended ? 'Restart chat' : 'Ask the machine again';
    r.hidden = !this.restartFn || !(this.ended || failed);
  }

  setEnded(ended) {
    this.ended = ended;
    this.ui.text.disabled = ended;
    this.ui.send.disabled = ended;
    this.ui.end.hidden = ended;
    if (this.ui.endedNote) this.ui.endedNote.hidden = !ended;
    if (this.agentStatus === 'waiting') this.setAgent(this.agentStatus, this.agentDetail);
    this.renderRestart();
    this.renderWaiting();
  }

  showBanner(text, kind = 'info') {
    const b = this.ui.banner;
    b.textContent = text || '';
    b.dataset.kind = kind;
    b.hidden = !text;
  }

  /** The chat could not be loaded: say why, and offer nothing to type into. */
  showUnavailable(message) {
    this.ui.machine.textContent = 'Chat unavailable';
    this.invited.clear();
    document.title = 'Chat unavailable';
    this.showBanner(message, 'error');
    this.setEnded(true);
    this.ui.endedNote.hidden = true;
  }

  /**
   * The newest events of the session, fetched when the window opens: shown at once, before
   * the hub brings the whole history (whose older part then goes in above them).
   */
  showRecent(events) {
    if (events.length) this.addEvents(events);
  }

  // -- messages from the event hub (events-hub.js) --
  handle(m) {
    if (m.type === 'events') {
      // The hub sends a stream's events as the JSON text of their array (events-hub.js).
      if (!m.events) m = { ...m, events: JSON.parse(m.json) };
      // The history is shown at once when its last event has come (the browser then lays it
      // out in one pass, not once per batch; or 300 ms after the last batch, should its end
      // never come), later events once per frame, all that came meanwhile together. The timer
      // covers a hidden window, which gets no frames (its tone still plays).
      // Once the window shows the chat's newest events (fetched when it opened), the older
      // ones go in above them batch by batch as they come (Transcript.putHead: blocks laid
      // out only near the screen), so making them overlaps the rest of the history coming.
      const last = m.events.length ? m.events[m.events.length - 1].seq : 0;
      if (this.catchingUp && !this.incoming.length && this.transcript.lastSeq > 0) {
        this.addEvents(m.events);
        if (this.historyEnd === null || last >= this.historyEnd) {
          this.catchingUp = false;
          clearTimeout(this.catchUpTimer);
        }
        return;
      }
      this.incoming.push(m.events);
      if (this.catchingUp) {
        clearTimeout(this.catchUpTimer);
        if (this.historyEnd !== null && last < this.historyEnd) {
          this.catchUpTimer = setTimeout(() => this.showIncoming(true), 300);
          return;
        }
        this.catchingUp = false;
      }
      if (!this.showQueued) {
        this.showQueued = true;
        requestAnimationFrame(() => this.showIncoming());
        setTimeout(() => this.showIncoming(), 100);
      }
      return;
    }
    this.showIncoming(m.type === 'reset'); // what came before this message first
    switch (m.type) {
      case 'hello':
        this.transcript.setClock(m.server_time, m.retention_secs);
        break;
      case 'reset':
        this.transcript.clear();
        break;
      case 'status':
        if (m.state === 'open') this.showBanner('');
        else if (m.state === 'connecting') this.showBanner('Connecting…');
        else this.showBanner('Disconnected from the server. Retrying…', 'error');
        break;
      case 'full':
        this.showBanner(FULL_MESSAGE, 'error');
        break;
      case 'error':
        this.showBanner(m.message || 'The connection to the server failed.', 'error');
        break;
      case 'typing':
        this.showTyping(m);
        break;
      case 'seen':
        this.noteSeen(m);
        break;
    }
  }

  // -- signals: "… is typing" and "Seen" (docs/api.md, "Typing and seen") --
  sendSignal(kind, body) {
    this.signalFn(kind, body).catch(() => {}); // a lost signal is only not shown
  }

  /** Tells the others what this window shows, when it is seen: visible and focused. */
  sendSeen() {
    if (!this.unseen || document.visibilityState !== 'visible' || !document.hasFocus()) return;
    const seq = this.transcript.lastSeq;
    if (seq <= this.seenSent) return;
    this.unseen = false;
    this.seenSent = seq;
    this.sendSignal('seen', { seq });
  }

  /** What the others had seen when this window opened (kept a while on the server). */
  async loadSeen(fetchSeen) {
    try {
      for (const m of await fetchSeen()) this.noteSeen(m);
    } catch (_) { /* "Seen" then comes with the next one */ }
  }

  showTyping(m) {
    if (!m.who || this.transcript.isMine(m.who)) return; // my own (another of my windows)
    const k = key(m.who);
    const was = this.typing.get(k);
    if (was) clearTimeout(was.timer);
    if (m.typing === false) this.typing.delete(k);
    else this.typing.set(k, { who: m.who, timer: setTimeout(() => this.stopTyping(k), TYPING_SHOWN_MS) });
    this.renderTyping();
  }

  stopTyping(k) {
    const was = this.typing.get(k);
    if (!was) return;
    clearTimeout(was.timer);
    this.typing.delete(k);
    this.renderTyping();
  }

  renderTyping() {
    const t = this.ui.typing;
    if (!t) return;
    const names = [...this.typing.values()].map((x) => nameOf(x.who));
    t.textContent = !names.length ? ''
      : names.length === 1 ? `${names[0]} is typing…`
      : `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]} are typing…`;
  }

  noteSeen(m) {
    if (!m.who || this.transcript.isMine(m.who) || typeof m.seq !== 'number') return;
    const k = key(m.who);
    const was = this.seenBy.get(k);
    if (was && was.seq >= m.seq) return;
    this.seenBy.set(k, { who: m.who, seq: m.seq, at: m.at });
    this.renderSeen();
  }

  /** "Seen" and its time under the newest of my messages someone else has seen. */
  renderSeen() {
    let upTo = 0;
    for (const s of this.seenBy.values()) upTo = Math.max(upTo, s.seq);
    let mine = null;
    for (const [seq, { ev, node }] of this.transcript.events) {
      if (seq <= upTo && node && ev.type === 'message' && this.transcript.isMine(ev.from)
          && (!mine || seq > mine.seq)) mine = { seq, node };
    }
    if (!mine) {
      if (this.seenMark) this.seenMark.remove();
      return;
    }
    const by = [...this.seenBy.values()].filter((s) => s.seq >= mine.seq);
    const at = Math.max(...by.map((s) => s.at || 0));
    // Named when others could have seen it too (several members besides me).
    const others = [...this.members.values()].filter((p) => !this.transcript.isMine(p));
    const names = others.length > 1 ? ' by ' + by.map((s) => nameOf(s.who)).join(', ') : '';
    if (!this.seenMark) this.seenMark = el('div', 'seen');
    this.seenMark.textContent = `Seen${names}` + (at ? ' ' + shortTime(at) : '');
    if (this.seenMark.parentNode !== mine.node) mine.node.append(this.seenMark);
  }

  /** Shows the events that came; during the history's catch-up only when `now`. */
  showIncoming(now = false) {
    if (this.catchingUp && !now) return;
    if (now) {
      this.catchingUp = false;
      clearTimeout(this.catchUpTimer);
    }
    this.showQueued = false;
    if (!this.incoming.length) return;
    const batches = this.incoming;
    this.incoming = [];
    this.addEvents(batches.length === 1 ? batches[0] : batches.flat());
  }

  addEvents(list) {
    let newMessage = false;
    for (const ev of this.transcript.add(list)) {
      const live = this.transcript.isLive(ev);
      if (ev.type === 'message' && live) newMessage = true; // sent or received
      if (ev.type === 'message' && !this.transcript.isMine(ev.from)) {
        this.unseen = true;
        if (ev.from) this.stopTyping(key(ev.from)); // their message is what they typed
      }
      this.apply(ev, live);
    }
    if (newMessage && this.options.play_tone) beep();
    if (this.seenBy.size) this.renderSeen();
    this.sendSeen();
  }

  /** State changes carried by events. */
  apply(ev, live) {
    switch (ev.type) {
      case 'joined':
        if (!ev.who) break;
        this.members.set(key(ev.who), ev.who);
        this.invited.delete(key(ev.who));
        this.renderMembers();
        break;
      case 'invited':
      case 'handed_off': {
        const who = ev.type === 'invited' ? ev.who : ev.to;
        if (!who || this.members.has(key(who))) break;
        this.invited.set(key(who), who);
        this.renderMembers();
        break;
      }
      case 'left': if (ev.who) { this.members.delete(key(ev.who)); this.renderMembers(); } break;
      case 'agent': this.setAgent(ev.status, ev.detail); this.agentAnswered = true; break;
      case 'ended':
        this.setEnded(true);
        for (const k of [...this.typing.keys()]) this.stopTyping(k); // nobody types in it now
        // A short pause lets the reader see why the window goes away.
        if (this.options.auto_close && live) setTimeout(() => window.close(), 1500);
        break;
      case 'restarted': this.setEnded(false); this.setAgent('pending'); break;
    }
  }

  async restartChat() {
    this.ui.restart.disabled = true;
    this.showBanner('');
    this.agentAnswered = false;
    try {
      const view = await this.restartFn();
      // The agent's answer may come on the stream before this reply: keep it, not "pending".
      const answer = this.agentAnswered && [this.agentStatus, this.agentDetail];
      this.setSession(view);
      if (answer) this.setAgent(...answer);
      this.ui.text.focus();
    } catch (e) {
      this.showBanner(e.message, 'error');
    } finally {
      this.ui.restart.disabled = false;
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
