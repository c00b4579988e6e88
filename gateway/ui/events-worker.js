// Natter event hub: ONE EventSource for every chat session this browser has open.
//
// Loaded two ways (so there is a single code path):
//  * as a SharedWorker: `new SharedWorker('/static/events-worker.js')` — every chat window
//    connects to the same hub, so 10 windows use 1 HTTP connection (HTTP/1.1 allows 6 per host);
//  * as a plain script/module inside a window when SharedWorker is unavailable (or for the machine
//    user's single session): `globalThis.NatterEvents.createEventHub(...)` + a MessageChannel.
//
// Window -> hub:  {subscribe: id} | {unsubscribe: id}
// Hub -> window:  {type:'hello', server_time, retention_secs}
//                 {type:'events', session, events:[...]}   (seq order, each seq at most once)
//                 {type:'reset', session}                  (clear the transcript; history follows)
//                 {type:'status', state:'connecting'|'open'|'closed'}
//                 {type:'error', error, message}
//
// Cursors: for each session the hub remembers the last seq it delivered. When the set of
// sessions changes it opens a new EventSource with `sessions=ID:lastseq,...`, and closes the
// old one only once the new one said `hello`; events seen twice meanwhile are dropped by seq.
(function () {
  'use strict';

  const MAX_SESSIONS = 32;   // the gateway's per-connection limit (docs/api.md)
  const FATAL = new Set(['unauthenticated', 'forbidden']);

  function operatorUrl(cursors) {
    const list = cursors.map(([id, seq]) => encodeURIComponent(id) + (seq > 0 ? ':' + seq : ''));
    return '/api/events?sessions=' + list.join(',');
  }

  function createEventHub(opts) {
    const urlFor = (opts && opts.urlFor) || operatorUrl;
    const EventSourceImpl = (opts && opts.EventSource) || EventSource;

    /** id -> {ports: Set<MessagePort>, last: number, events: object[]} */
    const sessions = new Map();
    let current = null;  // {es, key} — the connection in use
    let pending = null;  // {es, key} — replacement waiting for its hello
    let hello = null;    // {server_time, retention_secs, received}
    let stopped = false; // a fatal `event: error` (login gone): wait for a new subscribe
    let retryTimer = 0;
    let retryDelay = 1000;
    let reconfigTimer = 0;

    function post(port, msg) {
      try { port.postMessage(msg); } catch (_) { /* window gone */ }
    }
    function broadcast(msg) {
      const ports = new Set();
      for (const s of sessions.values()) for (const p of s.ports) ports.add(p);
      for (const p of ports) post(p, msg);
    }
    function helloMsg() {
      return {
        type: 'hello',
        server_time: hello.server_time + (Date.now() - hello.received),
        retention_secs: hello.retention_secs,
      };
    }
    function prune(s) {
      if (!hello || !hello.retention_secs) return;
      const cutoff = hello.server_time + (Date.now() - hello.received) - hello.retention_secs * 1000;
      let i = 0;
      while (i < s.events.length && s.events[i].at < cutoff) i++;
      if (i) s.events.splice(0, i);
    }

    // Events are handed to windows in batches: a replay of thousands of events then costs a
    // few postMessage calls instead of one per event (live events wait at most one task).
    const outbox = new Map(); // session -> events not yet posted
    let flushQueued = false;
    function queue(ev) {
      const list = outbox.get(ev.session);
      if (list) list.push(ev); else outbox.set(ev.session, [ev]);
      if (!flushQueued) { flushQueued = true; setTimeout(flush, 0); }
    }
    function flush() {
      flushQueued = false;
      for (const [id, events] of outbox) {
        const s = sessions.get(id);
        if (!s) continue;
        prune(s);
        for (const p of s.ports) post(p, { type: 'events', session: id, events });
      }
      outbox.clear();
    }

    // ---- the EventSource(s) -------------------------------------------------------------
    function wanted() {
      const ids = [];
      for (const [id, s] of sessions) if (s.ports.size) ids.push(id);
      ids.sort();
      return ids.slice(0, MAX_SESSIONS);
    }

    function scheduleReconfigure() {
      // Debounced: a window that reloads unsubscribes and subscribes again in quick succession.
      clearTimeout(reconfigTimer);
      reconfigTimer = setTimeout(reconfigure, 50);
    }

    function reconfigure() {
      for (const [id, s] of sessions) if (!s.ports.size) sessions.delete(id);
      const ids = wanted();
      const key = ids.join(',');
      if (!ids.length) { close(current); close(pending); current = pending = null; return; }
      if (stopped) return;
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
      const conn = { es: new EventSourceImpl(urlFor(cursors)), key };
      const live = () => conn === current || conn === pending;
      if (!current) broadcast({ type: 'status', state: 'connecting' });

      conn.es.addEventListener('hello', (e) => {
        if (!live()) return;
        const d = parse(e.data) || {};
        hello = { server_time: d.server_time || Date.now(), retention_secs: d.retention_secs || 0, received: Date.now() };
        retryDelay = 1000;
        if (conn === pending) { close(current); current = conn; pending = null; }
        broadcast(helloMsg());
        broadcast({ type: 'status', state: 'open' });
      });

      conn.es.addEventListener('message', (e) => {
        if (!live()) return;
        const ev = parse(e.data);
        if (!ev || typeof ev.seq !== 'number') return;
        const s = sessions.get(ev.session);
        if (!s || ev.seq <= s.last) return; // not ours any more, or a duplicate
        s.last = ev.seq;
        s.events.push(ev);
        queue(ev);
      });

      conn.es.addEventListener('reset', (e) => {
        if (!live()) return;
        const d = parse(e.data) || {};
        const s = sessions.get(d.session);
        if (!s) return;
        flush(); // what came before the reset goes out before it
        s.last = 0;
        s.events = [];
        for (const p of s.ports) post(p, { type: 'reset', session: d.session });
      });

      // NB: a server-sent `event: error` and a connection failure both fire 'error';
      // only the former is a MessageEvent with data.
      conn.es.addEventListener('error', (e) => {
        if (!live()) return;
        if (typeof e.data === 'string') {
          const d = parse(e.data) || {};
          broadcast({ type: 'error', error: d.error || 'error', message: d.message || 'The event stream failed.' });
          if (FATAL.has(d.error)) {
            stopped = true;
            close(current); close(pending); current = pending = null; // windows keep the error shown
          }
          return; // otherwise the stream ends and EventSource reconnects with Last-Event-ID
        }
        if (conn.es.readyState === 2 /* CLOSED: the browser gave up (HTTP error) */) {
          if (conn === pending) pending = null; else current = null;
          if (!current) broadcast({ type: 'status', state: 'closed' });
          retryTimer = setTimeout(reconfigure, retryDelay);
          retryDelay = Math.min(retryDelay * 2, 30000);
        } else if (conn === current) {
          broadcast({ type: 'status', state: 'connecting' });
        }
      });
      return conn;
    }

    // ---- windows ----------------------------------------------------------------------
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
          flush();
          let s = sessions.get(id);
          if (!s) sessions.set(id, (s = { ports: new Set(), last: 0, events: [] }));
          s.ports.add(port);
          mine.add(id);
          stopped = false;
          if (hello) post(port, helloMsg());
          prune(s);
          if (s.events.length) post(port, { type: 'events', session: id, events: s.events.slice() });
          if (current && current.key.split(',').includes(id)) post(port, { type: 'status', state: 'open' });
          scheduleReconfigure();
        } else if (m.unsubscribe) {
          unsubscribe(String(m.unsubscribe));
        }
      };
      // Newer browsers tell us when the other side of a port is gone.
      if (port.addEventListener) port.addEventListener('close', () => { for (const id of [...mine]) unsubscribe(id); });
    }

    return { connect };
  }

  function parse(text) {
    try { return JSON.parse(text); } catch (_) { return null; }
  }

  globalThis.NatterEvents = { createEventHub, operatorUrl };

  // Running as a SharedWorker: every window's port joins the one hub.
  if (typeof SharedWorkerGlobalScope !== 'undefined' && globalThis instanceof SharedWorkerGlobalScope) {
    const hub = createEventHub();
    globalThis.onconnect = (e) => hub.connect(e.ports[0]);
  }
})();
