// A profile of one chat window join (issue 11, item 6): the benchmark's browser step
// (join-bench.mjs) with a Chromium trace of each open, boiled down to where the time goes.
// Run in its place by the benchmark:
//
//   NATTER_BENCH_BROWSER_SCRIPT=join-profile.mjs target/release/natter-bench run \
//     --phases browser-join --no-write
//
// Same environment as join-bench.mjs, plus:
//   NATTER_TRACE_DIR  optional: where to write each run's trace (trace-<n>.json, for
//                     chrome://tracing or Perfetto)
//   NATTER_UI_DIR     optional: serve /static/* from this directory instead of the gateway
//                     (to try UI changes without building the release binary again; the
//                     routing costs time of its own: compare routed runs with routed runs)
//   NATTER_NO_TRACE   optional: 1 = no trace (only the join-ms lines, as join-bench.mjs)
//
// Prints, per measured run, the `join-ms` line of join-bench.mjs (so the benchmark reads it),
// then the milestones (ms since the window's navigation start) and, for the window's main
// thread and the shared worker's thread, their busy time up to the frame that shows the whole
// history, by kind of work (self time of the trace's events). The trace costs CPU itself:
// compare profiles with profiles, not with join-bench.mjs's figures.
import fs from 'node:fs/promises';
import path from 'node:path';
import { assert, browserSettled, need, startBrowser } from './harness.mjs';

const BASE = need('NATTER_URL').replace(/\/+$/, '');
const COOKIE = need('NATTER_COOKIE');
const SESSION = need('NATTER_SESSION');
const EXPECT = Number(need('NATTER_EXPECT'));
const RUNS = Number(process.env.NATTER_RUNS || 5);
const TRACE_DIR = process.env.NATTER_TRACE_DIR || '';
const UI_DIR = process.env.NATTER_UI_DIR || '';
const TRACE = process.env.NATTER_NO_TRACE !== '1';

const run = await startBrowser({ screenshotPrefix: 'join-profile-' });

/** What the page logs when it shows the whole history (as join-bench.mjs: no polling). */
const DONE = 'natter-join-profile: all shown';

/** Installed before the page's own scripts: marks the window's milestones in the trace. */
function instrument({ expect, DONE }) {
  const t = { worker: null, first: null, all: null, count: 0, port: [] };
  window.__natterJoin = t;
  const SW = window.SharedWorker;
  if (SW) {
    window.SharedWorker = class extends SW {
      constructor(...args) {
        super(...args);
        if (t.worker === null) { t.worker = performance.now(); performance.mark('natter:worker-constructed'); }
        // Every message of the hub, as the window receives it (before the page's handler).
        this.port.addEventListener('message', (e) => {
          const m = e.data || {};
          const n = m.events ? m.events.length : m.json ? `${(m.json.length / 1024).toFixed(0)}KiB` : 0;
          t.port.push([performance.now(), m.type || '?', n]);
          performance.mark(`natter:port ${m.type} ${n}`);
        });
      }
    };
  }
  // Counted as join-bench.mjs counts (its text is checked there, not here).
  let msgs = null, texts = null;
  const tick = () => {
    const list = document.getElementById('transcript');
    if (list && !msgs) {
      msgs = list.getElementsByClassName('msg');
      texts = list.getElementsByClassName('older-text');
    }
    let n = msgs ? msgs.length : 0;
    if (n && t.first === null) { t.first = performance.now(); performance.mark('natter:first-frame'); }
    if (texts) for (let i = 0; i < texts.length; i++) n += Number(texts[i].dataset.messages);
    if (n >= expect) {
      performance.mark('natter:all-in-page');
      const ch = new MessageChannel();
      ch.port1.onmessage = () => { t.all = performance.now(); t.count = n; performance.mark('natter:all-rendered'); console.info(DONE); };
      ch.port2.postMessage(0);
      return;
    }
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}

const CATEGORIES = [
  'devtools.timeline', 'disabled-by-default-devtools.timeline', 'blink.user_timing', 'v8.execute',
  'loading', 'toplevel', 'v8', 'blink', 'disabled-by-default-v8.gc',
  ...(process.env.NATTER_JS_PROFILE === '1' ? ['disabled-by-default-v8.cpu_profiler'] : []),
].join(',');

async function openOnce(i) {
  const ctx = await run.newContext();
  await ctx.addCookies([{ name: 'natter_op', value: COOKIE, url: BASE }]);
  await ctx.addInitScript(instrument, { expect: EXPECT, DONE });
  if (UI_DIR) {
    await ctx.route(`${BASE}/static/**`, async (route) => {
      const name = new URL(route.request().url()).pathname.split('/').pop();
      const body = await fs.readFile(path.join(UI_DIR, name)).catch(() => null);
      if (!body) return route.continue();
      const type = name.endsWith('.js') ? 'text/javascript' : name.endsWith('.css') ? 'text/css' : 'text/html';
      return route.fulfill({ status: 200, body, headers: { 'content-type': type, 'cache-control': 'no-cache' } });
    });
  }
  const page = await ctx.newPage();
  await browserSettled();
  if (TRACE) await run.browser.startTracing(page, { categories: CATEGORIES.split(',') });
  const shown = page.waitForEvent('console', { predicate: (m) => m.text() === DONE, timeout: 60000 });
  await page.goto(`${BASE}/chat/${encodeURIComponent(SESSION)}`);
  await shown;
  const buf = TRACE ? await run.browser.stopTracing() : null;
  const t = await page.evaluate(() => window.__natterJoin);
  assert(t.count === EXPECT, `the window shows ${t.count} messages, expected ${EXPECT}`);
  assert(!run.pageErrors.length, `page errors: ${run.pageErrors.join('; ')}`);
  await ctx.close();
  if (!buf) return { t, trace: null };
  if (TRACE_DIR) {
    await fs.mkdir(TRACE_DIR, { recursive: true });
    await fs.writeFile(path.join(TRACE_DIR, `trace-${i}.json`), buf);
  }
  return { t, trace: JSON.parse(buf.toString()) };
}

/** The milestones and busy times of one trace. */
function analyse(trace) {
  const events = trace.traceEvents || trace;
  const threadName = new Map(); // "pid:tid" -> name
  for (const e of events) if (e.ph === 'M' && e.name === 'thread_name') threadName.set(`${e.pid}:${e.tid}`, e.args.name);
  const nav = events.filter((e) => e.name === 'navigationStart' && String(e.args?.data?.documentLoaderURL || '').includes('/chat/')).pop();
  if (!nav) return 'no navigationStart in the trace';
  const t0 = nav.ts;
  const ms = (ts) => ((ts - t0) / 1000).toFixed(1);
  const page = `${nav.pid}:${nav.tid}`;
  const marks = events.filter((e) => e.cat === 'blink.user_timing' && e.name.startsWith('natter:') && `${e.pid}:${e.tid}` === page)
    .sort((a, b) => a.ts - b.ts);
  const end = marks.find((m) => m.name === 'natter:all-rendered');
  const tEnd = end ? end.ts : Infinity;
  const lines = [];
  const milestone = (what, ts) => lines.push(`  ${String(ms(ts)).padStart(7)} ms  ${what}`);

  // Requests (network side: the window's and the worker's alike).
  const requests = new Map(); // requestId -> {url, send, response, first, last, bytes}
  for (const e of events) {
    const d = e.args?.data;
    if (!d || !d.requestId) continue;
    if (e.name === 'ResourceSendRequest' && String(d.url).startsWith(BASE)) requests.set(d.requestId, { url: d.url, send: e.ts, bytes: 0 });
    const r = requests.get(d.requestId);
    if (!r) continue;
    if (e.name === 'ResourceReceiveResponse') r.response = e.ts;
    if (e.name === 'ResourceReceivedData' && e.ts <= tEnd) {
      if (r.first === undefined) r.first = e.ts;
      r.last = e.ts;
      r.bytes += d.encodedDataLength || 0;
    }
    if (e.name === 'ResourceFinish') r.finish = e.ts;
  }
  const all = [
    ...[...requests.values()].flatMap((r) => {
      const name = r.url.replace(BASE, '').replace(/sessions\/[^/?]+/, 'sessions/ID').replace(/sessions=[^&]+/, 'sessions=ID');
      const out = [[r.send, `request ${name}`]];
      if (r.response) out.push([r.response, `  response ${name}`]);
      if (r.first !== undefined && r.last !== r.first) out.push([r.first, `  first bytes ${name}`], [r.last, `  last bytes before the end ${name} (${(r.bytes / 1024).toFixed(0)} KiB)`]);
      else if (r.finish) out.push([r.finish, `  finished ${name}`]);
      return out;
    }),
    ...marks.map((m) => [m.ts, m.name.slice(7)]),
  ];
  // Threads: the window's main thread, and the thread that ran the shared worker's script.
  const byThread = new Map();
  for (const e of events) {
    if (e.ph !== 'X' || e.dur === undefined) continue;
    const k = `${e.pid}:${e.tid}`;
    if (!byThread.has(k)) byThread.set(k, []);
    byThread.get(k).push(e);
  }
  const workerThread = [...byThread.keys()].find((k) => /SharedWorker|DedicatedWorker/.test(threadName.get(k) || '')
    && byThread.get(k).some((e) => e.ts > t0 && JSON.stringify(e.args || {}).includes('events-worker')));
  if (workerThread) {
    const first = byThread.get(workerThread).filter((e) => e.ts > t0).sort((a, b) => a.ts - b.ts)[0];
    if (first) all.push([first.ts, `worker thread: first task (${threadName.get(workerThread)})`]);
  }
  for (const [ts, what] of all.filter(([ts]) => ts >= t0 && ts <= tEnd).sort((a, b) => a[0] - b[0])) milestone(what, ts);

  for (const [label, k] of [['window main thread', page], ['shared worker thread', workerThread]]) {
    if (!k) { lines.push(`  ${label}: not found`); continue; }
    const list = byThread.get(k).filter((e) => e.ts >= t0 && e.ts + e.dur <= tEnd).sort((a, b) => a.ts - b.ts || b.dur - a.dur);
    // Self time per event name: an event's duration less that of the events nested in it.
    const self = new Map();
    const stack = [];
    let busy = 0;
    const tasks = new Set(['ThreadControllerImpl::RunTask', 'RunTask']);
    for (const e of list) {
      while (stack.length && stack[stack.length - 1].ts + stack[stack.length - 1].dur <= e.ts) stack.pop();
      const parent = stack[stack.length - 1];
      if (parent) self.set(parent.name, (self.get(parent.name) || 0) - e.dur);
      else if (tasks.has(e.name)) busy += e.dur;
      self.set(e.name, (self.get(e.name) || 0) + e.dur);
      stack.push(e);
    }
    const top = [...self.entries()].filter(([, d]) => d > 2000).sort((a, b) => b[1] - a[1]).slice(0, 14);
    lines.push(`  ${label}: busy ${(busy / 1000).toFixed(0)} ms in tasks; self time: ` +
      top.map(([n, d]) => `${n} ${(d / 1000).toFixed(0)}`).join(' · '));
  }
  return lines.join('\n');
}

await run.check('warm-up: the window shows the whole history', async () => { await openOnce(0); });
for (let i = 1; i <= RUNS; i++) {
  await run.check(`run ${i}: the window shows the whole history`, async () => {
    const { t, trace } = await openOnce(i);
    const f = (x) => (x === null ? '-' : x.toFixed(1));
    console.log(`join-ms ${f(t.all)} first ${f(t.first)} worker ${f(t.worker)}`);
    if (trace) console.log(analyse(trace));
  });
}
await run.finish();
