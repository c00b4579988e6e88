// The browser step of the benchmark (natter-bench, phase browser-join): how long an operator's
// chat window takes from opening (navigation start) until a session's whole history is
// rendered (the frame that shows the last message has been laid out). Each run is a fresh
// browser profile, so no shared worker or cache of an earlier run helps it. Not a test: it
// reports times, and fails only when the history does not show.
//
//   node tests/browser/join-bench.mjs
//
// Environment (and those of harness.mjs):
//   NATTER_URL      base URL of the gateway
//   NATTER_COOKIE   an operator's login cookie value (natter_op), a member of the session
//   NATTER_SESSION  the session to open
//   NATTER_EXPECT   how many messages its history holds
//   NATTER_RUNS     measured runs (default 5), after one warm-up run
//
// Prints per measured run `join-ms <total> first <first message> worker <SharedWorker started>`
// (ms since navigation start).
import { assert, need, startBrowser } from './harness.mjs';

const BASE = need('NATTER_URL').replace(/\/+$/, '');
const COOKIE = need('NATTER_COOKIE');
const SESSION = need('NATTER_SESSION');
const EXPECT = Number(need('NATTER_EXPECT'));
const RUNS = Number(process.env.NATTER_RUNS || 5);

const run = await startBrowser({ screenshotPrefix: 'join-bench-' });

/** Installed before the page's own scripts: watches the transcript once per frame. */
function watchTranscript(expect) {
  const t = { worker: null, first: null, all: null, count: 0 };
  window.__natterJoin = t;
  const SW = window.SharedWorker;
  if (SW) {
    window.SharedWorker = class extends SW {
      constructor(...args) {
        super(...args);
        if (t.worker === null) t.worker = performance.now();
      }
    };
  }
  let msgs = null;
  const tick = () => {
    const list = document.getElementById('transcript');
    if (list && !msgs) msgs = list.getElementsByClassName('msg');
    const n = msgs ? msgs.length : 0;
    if (n && t.first === null) t.first = performance.now();
    if (n >= expect) {
      // This frame shows them all; a message posted now runs once its layout and paint are done.
      const ch = new MessageChannel();
      ch.port1.onmessage = () => { t.all = performance.now(); t.count = msgs.length; };
      ch.port2.postMessage(0);
      return;
    }
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}

async function openOnce() {
  const ctx = await run.newContext();
  await ctx.addCookies([{ name: 'natter_op', value: COOKIE, url: BASE }]);
  await ctx.addInitScript(watchTranscript, EXPECT);
  const page = await ctx.newPage();
  await page.goto(`${BASE}/chat/${encodeURIComponent(SESSION)}`);
  await page.waitForFunction(() => window.__natterJoin.all !== null, null, { timeout: 60000, polling: 50 });
  const t = await page.evaluate(() => window.__natterJoin);
  assert(t.count === EXPECT, `the window shows ${t.count} messages, expected ${EXPECT}`);
  assert(!run.pageErrors.length, `page errors: ${run.pageErrors.join('; ')}`);
  await ctx.close();
  return t;
}

await run.check('warm-up: the window shows the whole history', async () => { await openOnce(); });
for (let i = 1; i <= RUNS; i++) {
  await run.check(`run ${i}: the window shows the whole history`, async () => {
    const t = await openOnce();
    const f = (x) => (x === null ? '-' : x.toFixed(1));
    console.log(`join-ms ${f(t.all)} first ${f(t.first)} worker ${f(t.worker)}`);
  });
}
await run.finish();
