// Natter event hub: ONE event stream for every chat session this browser has open.
//
// Runs in the module SharedWorker (events-worker.js), so 10 operator windows use 1 HTTP
// connection (HTTP/1.1 allows 6 per host); or inside one window (events.js) when there is no
// SharedWorker, and for the machine user's single session. Either way a window talks to it
// through a MessagePort:
//
// Window -> hub:  {subscribe: id, after?: seq} | {unsubscribe: id}
//                 (`after`: the window has the session's events up to seq from a request of
//                 its own; a session new to the hub is then streamed from there)
// Hub -> window:  {type:'hello', server_time, retention_secs}
//                 {type:'events', session, events:[...]}   (seq order, each seq at most once)
//                 {type:'events', session, json:'[...]'}   (the same, as the JSON text of the
//                                                           array: what the stream brings)
//                 {type:'reset', session}                  (clear the transcript; history follows)
//                 {type:'status', state:'connecting'|'open'|'closed'}
//                 {type:'full', session, limit}            (no room on the stream: no events
//                                                           until another session is closed)
//                 {type:'error', error, message}
//                 {type:'typing', session, who, at, typing}  (signals: no seq, not kept, except
//                 {type:'seen', session, who, at, seq}        the latest `seen` of each member,
//                                                            repeated to a window that subscribes)
//
// Cursors: for each session the hub remembers the last seq it delivered. When the set of
// sessions changes it opens a new stream with `sessions=ID:lastseq,...`, and closes the
// old one only once the new one said `hello`; events seen twice meanwhile are dropped by seq.
//
// The stream is read with fetch (event-stream.js, EventSource's behaviour), and the events of
// each chunk read from the network go to each window in ONE message: a 10k-event history then
// costs some tens of messages, not 10k. The message carries the events' JSON text as it came
// (one string: copied, not cloned object by object), which the window parses.
import { parseJSON } from './api.js';
import { EventStream, CLOSED } from './event-stream.js';

/** The gateway's per-connection limit (docs/api.md, `GET /api/events`). */
export const MAX_SESSIONS = 32;
const FATAL = new Set(['unauthenticated', 'forbidden']);

export function operatorUrl(cursors) {
  const list = cursors.map(([id, seq]) => encodeURIComponent(id) + (seq > 0 ? ':' + seq : ''));
  return '/api/events?sessions=' + list.join(',');
}

/**
 * @param {object} [opts]
 * @param {(cursors: [string, number][]) => string} [opts.urlFor] the stream's URL for the cursors
 * @param {typeof EventStream} [opts.EventStream] for tests
 * @returns {{connect(port: MessagePort): void}}
 */
export function createEventHub(opts = {}) {
  const urlFor = opts.urlFor || operatorUrl;
  const EventStreamImpl = opts.EventStream || EventStream;

  /** id -> {ports: Set<MessagePort>, last: number, events: object[], waiting: boolean} */
  const sessions = new Map();
  let current = null;  // {es, key} — the stream in use
  let pending = null;  // {es, key} — replacement waiting for its hello
  let hello = null;    // {server_time, retention_secs, received}
  let stopped = false; // a fatal `event: error` (login gone): wait for a new subscribe
  let retryTimer = 0;
  let retryDelay = 1000;
  let reconfigTimer = 0;
  let reopen = false;  // the next reconfigure opens a new stream even for the same sessions

  function post(port, msg) {
    try { port.postMessage(msg); } catch (_) { /* window gone */ }
  }
  /** To every window, or (`everyone` false) only to those whose session is on the stream. */
  function broadcast(msg, everyone = false) {
    const ports = new Set();
    for (const s of sessions.values()) if (everyone || !s.waiting) for (const p of s.ports) ports.add(p);
    for (const p of ports) post(p, msg);
  }
  function helloMsg() {
    return {
      type: 'hello',
      server_time: hello.server_time + (Date.now() - hello.received),
      retention_secs: hello.retention_secs,
    };
  }
  function fullMsg(id) {
    return { type: 'full', session: id, limit: MAX_SESSIONS };
  }
  function prune(s) {
    if (!hello || !hello.retention_secs) return;
    const cutoff = hello.server_time + (Date.now() - hello.received) - hello.retention_secs * 1000;
    let i = 0;
    while (i < s.events.length && s.events[i].at < cutoff) i++;
    if (i) s.events.splice(0, i);
  }

  // Events are handed to windows in batches, one per chunk read from the network (flushed
  // at its end): a replay of thousands of events costs a few postMessage calls, not one each.
  const outbox = new Map(); // session -> the JSON texts of its events not yet posted
  function queue(ev, data) {
    const list = outbox.get(ev.session);
    if (list) list.push(data); else outbox.set(ev.session, [data]);
  }
  function flush() {
    for (const [id, texts] of outbox) {
      const s = sessions.get(id);
      if (!s) continue;
      prune(s);
      const json = '[' + texts.join(',') + ']';
      for (const p of s.ports) post(p, { type: 'events', session: id, json });
    }
    outbox.clear();
  }

  // ---- the stream(s) --------------------------------------------------------------------
  /**
   * The sessions the stream carries: the first MAX_SESSIONS in the order they were opened, so a
   * window that receives events never loses its place to a newer one.
   */
  function wanted() {
    const ids = [];
    for (const [id, s] of sessions) if (s.ports.size && ids.length < MAX_SESSIONS) ids.push(id);
    return ids;
  }

  /** Tell the windows whose session lost or got its place on the stream. */
  function markWaiting(carried) {
    for (const [id, s] of sessions) {
      const waiting = !carried.has(id);
      if (waiting === s.waiting) continue;
      s.waiting = waiting;
      for (const p of s.ports) post(p, waiting ? fullMsg(id) : { type: 'status', state: 'connecting' });
    }
  }

  function scheduleReconfigure(fresh = false) {
    if (fresh) reopen = true;
    // Debounced while a stream is open: a window that reloads unsubscribes and subscribes again
    // in quick succession. The first stream opens at once (a window waits for its history).
    clearTimeout(reconfigTimer);
    reconfigTimer = setTimeout(reconfigure, current || pending ? 50 : 0);
  }

  function reconfigure() {
    for (const [id, s] of sessions) if (!s.ports.size) sessions.delete(id);
    const ids = wanted();
    markWaiting(new Set(ids));
    const key = [...ids].sort().join(',');
    if (!ids.length) { close(current); close(pending); current = pending = null; return; }
    if (stopped) return;
    if (reopen) {
      // A session starts over from an earlier seq: the stream in use must not deliver newer
      // events first (they would move the cursor past what the new stream replays).
      reopen = false;
      close(current); close(pending); current = pending = null;
    }
    if (pending && pending.key === key) return;
    close(pending);
    pending = null;
    if (current && current.key === key) return;
    pending = open(ids, key);
  }

  function close(conn) {
    if (conn) conn.es.close();
  }

  function open(ids, key) {
    clearTimeout(retryTimer);
    const cursors = ids.map((id) => [id, sessions.get(id).last]);
    const conn = { es: null, key };
    const live = () => conn === current || conn === pending;
    if (!current) broadcast({ type: 'status', state: 'connecting' });
    conn.es = new EventStreamImpl(urlFor(cursors), {
      events(list) {
        for (const e of list) {
          if (!live()) break;
          if (e.type === 'message') { received(parseJSON(e.data), e.data); continue; }
          flush(); // windows get everything in the stream's order
          if (e.type === 'hello') helloReceived(conn, e.data);
          else if (e.type === 'reset') reset(parseJSON(e.data) || {});
          else if (e.type === 'error') failed(conn, e);
          else if (e.type === 'typing' || e.type === 'seen') signal(e.type, e.data);
        }
        flush();
      },
      error(e) { if (live()) failed(conn, e); },
    });
    return conn;
  }

  function helloReceived(conn, data) {
    const d = parseJSON(data) || {};
    hello = { server_time: d.server_time || Date.now(), retention_secs: d.retention_secs || 0, received: Date.now() };
    retryDelay = 1000;
    if (conn === pending) { close(current); current = conn; pending = null; }
    broadcast(helloMsg(), true);
    broadcast({ type: 'status', state: 'open' });
  }

  /** A chat event: `ev` parsed from `data`, its JSON text. */
  function received(ev, data) {
    if (!ev || typeof ev !== 'object' || typeof ev.seq !== 'number') return;
    const s = sessions.get(ev.session);
    if (!s || ev.seq <= s.last) return; // not ours any more, or a duplicate
    s.last = ev.seq;
    s.events.push(ev);
    queue(ev, data);
  }

  /** A typing or seen signal: to the session's windows as it comes. */
  function signal(type, data) {
    const d = parseJSON(data);
    if (!d || !d.who || typeof d.session !== 'string') return;
    const s = sessions.get(d.session);
    if (!s) return;
    const msg = { ...d, type };
    if (type === 'seen') {
      const who = d.who.kind + ':' + d.who.id;
      const before = s.seen.get(who);
      if (before && before.seq >= d.seq) return;
      s.seen.set(who, msg);
    }
    for (const p of s.ports) post(p, msg);
  }

  function reset(d) {
    const s = sessions.get(d.session);
    if (!s) return;
    s.last = s.base = 0;
    s.events = [];
    for (const p of s.ports) post(p, { type: 'reset', session: d.session });
  }

  // A server-sent `event: error` has data; a connection failure (`error` of event-stream.js,
  // as EventSource's) has none.
  function failed(conn, e) {
    if (typeof e.data === 'string') {
      const d = parseJSON(e.data) || {};
      broadcast({ type: 'error', error: d.error || 'error', message: d.message || 'The event stream failed.' }, true);
      if (FATAL.has(d.error)) {
        stopped = true;
        close(current); close(pending); current = pending = null; // windows keep the error shown
      }
      return; // otherwise the stream ends and reconnects with Last-Event-ID
    }
    if (conn.es.readyState === CLOSED /* an HTTP error: it gave up */) {
      if (conn === pending) pending = null; else current = null;
      if (!current) broadcast({ type: 'status', state: 'closed' });
      retryTimer = setTimeout(reconfigure, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 30000);
    } else if (conn === current) {
      broadcast({ type: 'status', state: 'connecting' });
    }
  }

  // ---- windows --------------------------------------------------------------------------
  function subscribe(port, id, after) {
    flush();
    let s = sessions.get(id);
    let fresh = false;
    // `base`: the seq after which `events` holds every event (a window that had the ones
    // before from a request of its own asked the stream only for what is newer).
    if (!s) sessions.set(id, (s = { ports: new Set(), last: after, base: after, events: [], waiting: false, seen: new Map() }));
    else if (after < s.base) {
      // This window lacks events the hub never kept: stream the session again from its point.
      s.last = s.base = after;
      s.events = [];
      fresh = true;
    }
    s.ports.add(port);
    stopped = false;
    if (hello) post(port, helloMsg());
    prune(s);
    if (s.events.length) post(port, { type: 'events', session: id, events: s.events.slice() });
    for (const seen of s.seen.values()) post(port, seen);
    if (s.waiting) post(port, fullMsg(id));
    else if (current && current.key.split(',').includes(id) && !fresh) post(port, { type: 'status', state: 'open' });
    scheduleReconfigure(fresh);
  }

  function connect(port) {
    const mine = new Set();
    const unsubscribe = (id) => {
      const s = sessions.get(id);
      if (s) s.ports.delete(port);
      mine.delete(id);
      scheduleReconfigure();
    };
    port.onmessage = (e) => {
      const m = e.data || {};
      if (m.subscribe) {
        const id = String(m.subscribe);
        mine.add(id);
        const after = Number.isSafeInteger(m.after) && m.after > 0 ? m.after : 0;
        subscribe(port, id, after);
      } else if (m.unsubscribe) {
        unsubscribe(String(m.unsubscribe));
      }
    };
    // Newer browsers tell us when the other side of a port is gone.
    if (port.addEventListener) port.addEventListener('close', () => { for (const id of [...mine]) unsubscribe(id); });
  }

  return { connect };
}
