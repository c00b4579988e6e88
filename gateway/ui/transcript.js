// A chat window's list of events: rendering (text only), seq order and de-duplication,
// retention pruning (F3), messages still being sent, and following the newest message.
import { el } from './dom.js';
import { clockTime, longTime } from './time-text.js';

export function nameOf(p) {
  if (!p) return 'Someone';
  return p.name || (p.kind === 'operator' ? 'Operator' : p.kind === 'machine_user' ? 'User' : p.id || 'Someone');
}

// Formatting is the slow part of a time (10k times for a long history): "12:34" and the ISO
// date up to the minute are kept per minute, and the full date (the tooltip) is made only when
// the pointer comes by.
const minutes = new Map(); // minute since the epoch -> {short: "12:34", iso: "2026-12-03T12:34:"}
function minuteOf(at) {
  const minute = Math.floor(at / 60000);
  let m = minutes.get(minute);
  if (m === undefined) {
    if (minutes.size > 10000) minutes.clear();
    const d = new Date(minute * 60000);
    m = { short: clockTime(d), iso: d.toISOString().slice(0, -7) };
    minutes.set(minute, m);
  }
  return m;
}
export function shortTime(at) {
  return minuteOf(at).short;
}
function fillTime(t, at) {
  const m = minuteOf(at);
  const ms = at - Math.floor(at / 60000) * 60000; // 0 ≤ ms < 60000, also before 1970
  const sec = Math.floor(ms / 1000), milli = Math.floor(ms % 1000);
  // The same string as new Date(at).toISOString().
  t.dateTime = m.iso + (sec < 10 ? '0' : '') + sec + '.' + String(milli).padStart(3, '0') + 'Z';
  t.textContent = m.short;
}
function timeEl(at) {
  const t = el('time', 'when');
  fillTime(t, at);
  return t;
}
/** The tooltip of a time: its full date, made on the first hover. */
function titleOnHover(e) {
  const t = e.target;
  if (t instanceof HTMLTimeElement && !t.title) t.title = longTime(new Date(t.dateTime));
}

/** A message's nodes, cloned for each one (faster than creating them one by one). */
const MESSAGE = (() => {
  const li = el('li', 'msg');
  const meta = el('div', 'meta');
  meta.append(el('span', 'who'), ' ', el('time', 'when'));
  li.append(meta, el('div', 'text'));
  return li;
})();

/** How many of a long history's newest nodes are shown at once (a screenful, and more). */
const FIRST_SCREEN = 150;
/** How many older nodes go in per task after them. */
const OLDER_CHUNK = 2500;
/**
 * How many older messages share one block (`li.older`), which the browser lays out only when
 * it comes near the screen (`content-visibility: auto`): laying out a 10k history at once took
 * most of a second here, a block of 250 takes a few ms. A block goes in as ONE text node, its
 * events' transcript lines (name, time, text: what the reader sees), and gets each event's own
 * nodes only when it first comes near the screen (`upgrade`): making 90k nodes for a 10k
 * history was most of the window's script. Either way its text stays in the page, so find in
 * page, selection and copy see the whole history.
 */
const OLDER_BLOCK = 250;
/** The height a block is given until it is first laid out (px per event: about a message). */
const EVENT_HEIGHT_GUESS = 62;
/** Whether the browser tells when a `content-visibility: auto` element is first rendered. */
const CV_EVENT = typeof ContentVisibilityAutoStateChangeEvent === 'function';

export class Transcript {
  /**
   * @param {{list: HTMLOListElement, scroller: HTMLElement}} ui
   * @param {{kind: string, id?: string}} self who "I" am (the id may be filled in later)
   */
  constructor(ui, self) {
    this.ui = ui;
    this.self = self;
    this.events = new Map();  // seq -> {ev, node, block}: node, or the text block it is in
    this.blocks = new WeakMap(); // a text block (li.older) -> the entries whose lines it holds
    this.onUpgrade = null;    // called after a block got its events' own nodes
    this.lastSeq = 0;         // the highest seq in `events`
    this.pending = new Map(); // client id -> node (sent by me, not yet seen in the stream)
    this.older = null;        // the part of a long history still to go in (see appendTail)
    this.headTop = 0;         // the highest seq put in above the events shown (see putHead)
    this.offset = 0;          // server clock - local clock (ms)
    this.retention = 0;       // seconds; 0 = unknown, keep everything
    this.loadedAt = Date.now();
    // Follow new messages only while the reader is at the bottom. Tracked on scroll so that
    // adding an event never forces a layout (joining a session may replay thousands of them).
    this.stick = true;
    this.scrollQueued = false;
    this.autoTop = 0;
    const sc = ui.scroller;
    sc.addEventListener('scroll', () => {
      if (sc.scrollHeight - sc.scrollTop - sc.clientHeight < 48) this.stick = true;
      else if (sc.scrollTop < this.autoTop - 1) this.stick = false; // the reader scrolled up
    }, { passive: true });
    ui.list.addEventListener('mouseover', titleOnHover, { passive: true });
    // Browsers without the event: a text block gets its nodes when it comes within a screen.
    this.nearScreen = CV_EVENT || typeof IntersectionObserver !== 'function' ? null
      : new IntersectionObserver((seen) => {
        for (const s of seen) if (s.isIntersecting) this.upgrade(s.target);
      }, { root: ui.scroller, rootMargin: '100% 0px' });
    setInterval(() => this.prune(), 1000);
  }

  /** The server's clock and retention, from the stream's hello. */
  setClock(serverTime, retentionSecs) {
    this.offset = serverTime - Date.now();
    if (retentionSecs) this.retention = retentionSecs;
    this.prune();
  }

  now() {
    return Date.now() + this.offset;
  }

  cutoff() {
    return this.retention ? this.now() - this.retention * 1000 : -Infinity;
  }

  /**
   * Adds what is new in `list`; returns the events added, in order. Events after every one
   * shown (all of them, normally) go into the list in one DocumentFragment: one insertion for
   * a batch of thousands.
   */
  add(list) {
    const cutoff = this.cutoff();
    const added = [];
    if (list.length > 1) this.ui.list.setAttribute('aria-busy', 'true');
    let tail = []; // entries of events that go after every event shown
    const head = []; // entries of events that go before every event shown (see putHead)
    const first = this.older ? -Infinity : this.firstShownSeq();
    for (const ev of list) {
      if (this.events.has(ev.seq) || ev.at < cutoff) continue; // dedupe by seq; F3
      if (ev.seq > this.lastSeq) {
        this.lastSeq = ev.seq;
        const entry = { ev, node: null }; // its node is made when it goes in
        this.events.set(ev.seq, entry);
        tail.push(entry);
      } else if (ev.seq < first && ev.seq > (head.length ? head[head.length - 1].ev.seq : this.headTop)) {
        const entry = { ev, node: null };
        this.events.set(ev.seq, entry);
        head.push(entry);
        continue; // older than what the window has taken in: not "added"
      } else {
        // An older event (the hub sends a session's events in order, so only defensively):
        // what is collected goes in first, then it takes its place by seq.
        const node = this.render(ev);
        this.events.set(ev.seq, { ev, node });
        if (node) {
          this.finishOlder();
          this.appendTail(tail);
          tail = [];
          this.insert(node, ev.seq);
        }
      }
      added.push(ev);
    }
    this.appendTail(tail);
    this.putHead(head);
    if (!this.older) this.ui.list.removeAttribute('aria-busy');
    this.scrollToEnd();
    return added;
  }

  /**
   * The first of the list's children that is not a block of older events put in by putHead
   * (the events shown before the rest of the history came), or null.
   */
  firstAfterHead() {
    let n = this.ui.list.firstElementChild;
    while (n && n.classList.contains('older') && Number(n.dataset.seq) <= this.headTop) n = n.nextElementSibling;
    return n;
  }

  /**
   * The seq of the first event shown after the blocks put in by putHead (what an older event
   * must go before to go in as head), or -Infinity when there is none.
   */
  firstShownSeq() {
    let n = this.firstAfterHead();
    if (n && n.classList.contains('older')) {
      const entries = this.blocks.get(n);
      if (entries) return entries.length ? entries[0].ev.seq : -Infinity;
      n = n.firstElementChild.firstElementChild;
    }
    return n && n.dataset.seq !== undefined ? Number(n.dataset.seq) : -Infinity;
  }

  /**
   * Puts the events of `entries` (in order, all newer than what putHead put in before) before
   * the events shown: the rest of a long history that comes after its newest part (the window
   * shows the newest events it fetched first). They go in at once, each batch as it comes,
   * after the blocks of the batches before: as blocks (`li.older`), they are laid out only
   * near the screen, so this costs making their nodes, not laying out the history again.
   */
  putHead(entries) {
    if (!entries.length) return;
    const lines = this.linesOf(entries, 0, entries.length);
    this.headTop = entries[entries.length - 1].ev.seq;
    if (!lines.length) return;
    const f = document.createDocumentFragment();
    for (let start = 0; start < lines.length; start += OLDER_BLOCK) {
      f.append(this.textBlock(lines.slice(start, start + OLDER_BLOCK)));
    }
    // Its last block ends at headTop even if that event has no node (firstAfterHead).
    f.lastElementChild.dataset.seq = this.headTop;
    this.ui.list.insertBefore(f, this.firstAfterHead());
    this.scrollToEnd();
  }

  /**
   * Puts the events of `entries` (in order) after every event shown. A long history (a join)
   * shows its newest screenful at once and puts the older part in above it in chunks, newest
   * first, one per task, making their nodes only then: making and laying out 10k messages at
   * once kept the window blank for a second here, while a screenful takes a few ms. The reader
   * sees the end of the chat at once, and the whole history (for scrolling up, find and copy)
   * follows within about a second.
   */
  appendTail(entries) {
    if (!entries.length) return;
    const split = entries.length > FIRST_SCREEN * 2 ? entries.length - FIRST_SCREEN : 0;
    const shown = this.nodesOf(entries, split, entries.length);
    const f = document.createDocumentFragment();
    f.append(...shown);
    this.appendEvents(f);
    if (!split) return;
    this.finishOlder();
    this.older = { entries, end: split, anchor: shown[0] || null };
    setTimeout(() => this.putOlder(), 0);
  }

  /**
   * The entries of `entries[start..end]` still wanted (not pruned or cleared since) that show a
   * line, each with its `line` (transcript text) set.
   */
  linesOf(entries, start, end) {
    const shown = [];
    for (const entry of this.wanted(entries, start, end)) {
      entry.line = this.lineOf(entry.ev);
      if (entry.line !== null) shown.push(entry);
    }
    return shown;
  }

  /**
   * A block of older events as text (`li.older`, see OLDER_BLOCK), one line or more per
   * event, given its nodes (`upgrade`) when it first comes near the screen.
   */
  textBlock(entries) {
    const block = el('li', 'older older-text');
    let text = '', messages = 0;
    for (const entry of entries) {
      entry.block = block;
      text += entry.line;
      if (entry.ev.type === 'message') messages++;
      entry.line = undefined;
    }
    block.textContent = text;
    block.dataset.seq = entries[entries.length - 1].ev.seq;
    // How many messages its text holds (the benchmark counts them without reading the text).
    block.dataset.messages = messages;
    block.style.containIntrinsicSize = `auto ${entries.length * EVENT_HEIGHT_GUESS}px`;
    this.blocks.set(block, entries);
    if (this.nearScreen) this.nearScreen.observe(block);
    else block.addEventListener('contentvisibilityautostatechange', (e) => { if (!e.skipped) this.upgrade(block); });
    return block;
  }

  /** A text block gets its events' own nodes (time, names, styles): it came near the screen. */
  upgrade(block) {
    const entries = this.blocks.get(block);
    if (!entries) return;
    this.blocks.delete(block);
    if (this.nearScreen) this.nearScreen.unobserve(block);
    const inner = el('ol', 'older-events');
    for (const entry of entries) {
      entry.block = null;
      if (this.events.get(entry.ev.seq) !== entry) continue;
      entry.node = this.render(entry.ev);
      if (entry.node) inner.append(entry.node);
    }
    block.className = 'older';
    delete block.dataset.messages;
    block.replaceChildren(inner);
    if (this.onUpgrade) this.onUpgrade();
  }

  /** Gives every text block its nodes (before an event goes in among them). */
  upgradeAll() {
    for (const block of [...this.ui.list.getElementsByClassName('older-text')]) this.upgrade(block);
  }

  /** The entries of `entries[start..end]` still wanted (not pruned or cleared since). */
  *wanted(entries, start, end) {
    for (let i = start; i < end; i++) {
      if (this.events.get(entries[i].ev.seq) === entries[i]) yield entries[i];
    }
  }

  /** Makes the nodes of `entries[start..end]` still wanted (not pruned or cleared since). */
  nodesOf(entries, start, end) {
    const nodes = [];
    for (const entry of this.wanted(entries, start, end)) {
      entry.node = this.render(entry.ev);
      if (entry.node) nodes.push(entry.node);
    }
    return nodes;
  }

  /** Puts the next chunk of the older part of a history in, above what is shown. */
  putOlder() {
    const o = this.older;
    if (!o) return;
    const start = Math.max(0, o.end - OLDER_CHUNK);
    this.putOlderRange(o, start);
    if (start > 0) setTimeout(() => this.putOlder(), 0);
    else {
      this.older = null;
      this.ui.list.removeAttribute('aria-busy');
    }
  }

  /** Puts the events of `o.entries[start..o.end]` in, above `o.anchor`, in blocks. */
  putOlderRange(o, start) {
    const lines = this.linesOf(o.entries, start, o.end);
    o.end = start;
    if (!lines.length) return;
    const f = document.createDocumentFragment();
    // Blocks end where the part shown begins, so the first (oldest) one may be short.
    for (let end = lines.length; end > 0; end -= OLDER_BLOCK) {
      f.prepend(this.textBlock(lines.slice(Math.max(0, end - OLDER_BLOCK), end)));
    }
    const oldest = f.firstElementChild;
    if (o.anchor && o.anchor.isConnected) o.anchor.before(f); else this.appendEvents(f);
    o.anchor = oldest;
    this.scrollToEnd();
  }

  /** Whatever of a history is still to go in goes in now (before anything changes order). */
  finishOlder() {
    const o = this.older;
    if (!o) return;
    this.older = null;
    this.putOlderRange(o, 0);
  }

  /** Puts `nodes` after every event shown, before my messages still being sent. */
  appendEvents(nodes) {
    const list = this.ui.list;
    let before = null;
    for (let n = list.lastElementChild; n && n.dataset.pending !== undefined; n = n.previousElementSibling) before = n;
    list.insertBefore(nodes, before);
  }

  /** The stream starts over (a reset): its history follows. */
  clear() {
    this.older = null;
    this.headTop = 0;
    for (const { node } of this.events.values()) if (node) node.remove();
    for (const block of [...this.ui.list.getElementsByClassName('older')]) block.remove();
    this.events.clear();
    this.lastSeq = 0;
  }

  /** Happened after this window opened (not part of the history replay). */
  isLive(ev) {
    return ev.at >= this.loadedAt + this.offset;
  }

  isMine(p) {
    return !!p && p.kind === this.self.kind && (this.self.id == null || p.id === this.self.id);
  }

  /** A message of mine on its way: shown at the end until the stream brings it. */
  addPending(clientId, text) {
    const node = this.messageNode('You', text, this.now(), true, null);
    node.classList.add('pending');
    node.dataset.pending = clientId;
    this.pending.set(clientId, node);
    this.ui.list.append(node);
    this.scrollToEnd(true);
    return node;
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

  /** My message being sent has come back: its pending node goes. */
  takePending(ev) {
    if (ev.client_id && this.pending.has(ev.client_id)) {
      this.pending.get(ev.client_id).remove();
      this.pending.delete(ev.client_id);
    }
  }

  /**
   * An event's transcript text as a text block holds it (null: not shown): "Name 12:34", a
   * line break and its text for a message; "what happened 12:34" for the others.
   */
  lineOf(ev) {
    if (ev.type === 'message') {
      this.takePending(ev);
      return `${this.isMine(ev.from) ? 'You' : nameOf(ev.from)} ${shortTime(ev.at)}\n${ev.text}\n`;
    }
    const text = this.systemText(ev);
    return text == null ? null : `${text} ${shortTime(ev.at)}\n`;
  }

  render(ev) {
    if (ev.type === 'message') {
      const mine = this.isMine(ev.from);
      this.takePending(ev);
      return this.messageNode(mine ? 'You' : nameOf(ev.from), ev.text, ev.at, mine, ev.seq);
    }
    const text = this.systemText(ev);
    if (text == null) return null;
    const li = el('li', 'sys' + (ev.type === 'agent' && ev.status === 'failed' ? ' sys-error' : ''));
    li.dataset.seq = ev.seq;
    li.append(el('span', 'sys-text', text), ' ', timeEl(ev.at));
    return li;
  }

  /** The line shown for a non-message event (null: not shown, yet it counts as seen). */
  systemText(ev) {
    switch (ev.type) {
      case 'opened': return `${nameOf(ev.by)} started the chat`;
      case 'joined': return `${nameOf(ev.who)} joined the chat`;
      case 'invited': return `${nameOf(ev.by)} asked ${nameOf(ev.who)} to join`;
      case 'handed_off': return `${nameOf(ev.by)} handed the chat to ${nameOf(ev.to)}`;
      case 'left': return `${nameOf(ev.who)} left the chat`;
      case 'ended': return `${nameOf(ev.by)} ended the chat`;
      case 'restarted': return `${nameOf(ev.by)} restarted the chat`;
      case 'agent':
        if (this.self.kind === 'machine_user') return null; // only operators need this
        if (ev.status === 'opened') return 'Chat window opened on the machine';
        if (ev.status === 'waiting') {
          return `Waiting for the machine (${ev.detail || 'its agent is offline'}): the chat opens when it checks in again`;
        }
        return 'The chat window could not be opened on the machine: ' + (ev.detail || 'unknown error');
      default: return null;
    }
  }

  messageNode(who, text, at, mine, seq) {
    const li = MESSAGE.cloneNode(true);
    li.className = mine ? 'msg mine' : 'msg theirs';
    if (seq != null) li.dataset.seq = seq;
    const meta = li.firstChild;
    meta.firstChild.textContent = who;
    fillTime(meta.lastChild, at);
    li.lastChild.textContent = text;
    return li;
  }

  /** Keep the list in seq order; unsent messages stay at the end. */
  insert(node, seq) {
    const list = this.ui.list;
    this.upgradeAll(); // rare (see add): a block's events then have nodes to go between
    let after = list.lastElementChild;
    while (after && (after.dataset.seq === undefined || Number(after.dataset.seq) > seq)) {
      if (after.classList.contains('older')) {
        // A block of older events: the node goes in it, after the last one before it.
        const inner = after.firstElementChild;
        let n = inner.lastElementChild;
        while (n && Number(n.dataset.seq) > seq) n = n.previousElementSibling;
        if (n || !after.previousElementSibling) {
          if (n) n.after(node); else inner.prepend(node);
          return;
        }
      }
      after = after.previousElementSibling;
    }
    if (after) after.after(node); else list.prepend(node);
  }

  /** F3: events older than the retention disappear from open windows. */
  prune() {
    const cutoff = this.cutoff();
    if (cutoff === -Infinity) return;
    const blocks = new Set(); // text blocks that lost lines
    for (const [seq, { ev, node, block }] of this.events) {
      if (ev.at >= cutoff) continue;
      if (block) blocks.add(block);
      if (node) {
        const block = node.parentElement.parentElement;
        node.remove();
        // An emptied block would keep the height it had (content-visibility remembers it).
        if (block.classList.contains('older') && !block.firstElementChild.firstElementChild) block.remove();
      }
      this.events.delete(seq); // a replayed copy is dropped by the age check in add()
    }
    for (const block of blocks) {
      const entries = (this.blocks.get(block) || []).filter((e) => this.events.get(e.ev.seq) === e);
      this.blocks.delete(block);
      if (!entries.length) { block.remove(); continue; }
      for (const e of entries) e.line = this.lineOf(e.ev);
      block.replaceWith(this.textBlock(entries));
    }
  }
}
