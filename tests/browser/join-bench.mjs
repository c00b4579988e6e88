// The browser step of the benchmark (natter-bench, phase browser-join): how long an operator's
// chat window takes from opening (navigation start) until a session's whole history is
// rendered (the frame that shows the last message has been laid out). Each run is a fresh
// browser profile, so no shared worker or cache of an earlier run helps it. Each measured run
// opens a session of its own twice: first when the gateway has not read its history yet (from
// the stream), then again (the gateway's kept copy, gateway/src/history.rs). Before each open,
// the new profile's own browser UI settles (harness.mjs, `browserSettled`). Not a test: it
// reports times, and fails only when the history does not show.
//
//   node tests/browser/join-bench.mjs
//
// Environment (and those of harness.mjs):
//   NATTER_URL      base URL of the gateway
//   NATTER_COOKIE   an operator's login cookie value (natter_op), a member of the session
//   NATTER_SESSION  the session to open (when NATTER_SESSIONS is not set)
//   NATTER_SESSIONS optional: comma-separated, one session for the warm-up and one per measured
//                   run, each opened twice (without it, NATTER_SESSION is opened every time)
//   NATTER_EXPECT   how many messages its history holds
//   NATTER_RUNS     measured runs (default 5), after one warm-up run
//
// "Shown" means the messages' text is in the page: each frame counts the `.msg` elements plus the
// messages of the blocks of older events still put in as text (`li.older-text`, whose
// `data-messages` says how many); when that reaches NATTER_EXPECT, the transcript's text of that
// moment is checked against the session's messages (their texts, in seq order, each found after
// the one before), and a run whose text lacks any fails.
//
// Prints per measured run `join-new-ms <total> first <first message> worker <SharedWorker
// started>` for the first open of its session (with NATTER_SESSIONS), then `join-ms …` for the
// open after it (ms since navigation start).
import { assert, browserSettled, list, need, startBrowser } from './harness.mjs';

const BASE = need('NATTER_URL').replace(/\/+$/, '');
const COOKIE = need('NATTER_COOKIE');
const SESSIONS = list(process.env.NATTER_SESSIONS);
const SESSION = SESSIONS[0] || need('NATTER_SESSION');
const EXPECT = Number(need('NATTER_EXPECT'));
const RUNS = Number(process.env.NATTER_RUNS || 5);

const run = await startBrowser({ screenshotPrefix: 'join-bench-' });

/** The texts of a session's messages, in seq order (its JSON transcript). */
async function textsOf(session) {
  const url = `${BASE}/api/sessions/${encodeURIComponent(session)}/transcript?format=json`;
  const res = await fetch(url, { headers: { Cookie: `natter_op=${COOKIE}` } });
  assert(res.ok, `GET ${url}: ${res.status}`);
  const texts = (await res.json()).events.filter((e) => e.type === 'message').map((e) => e.text);
  assert(texts.length === EXPECT, `session ${session} holds ${texts.length} messages, expected ${EXPECT}`);
  return texts;
}

/** Fails unless `shown` (the transcript's text) holds every text of `texts`, in order. */
function assertAllShown(shown, texts) {
  let at = 0;
  for (let i = 0; i < texts.length; i++) {
    const found = shown.indexOf(texts[i], at);
    assert(found >= 0, `message ${i + 1} of ${texts.length} is not in the page's text after the one before`);
    at = found + texts[i].length;
  }
}

/** What the page logs when it shows the whole history. */
const DONE = 'natter-join-bench: all shown';

/** Installed before the page's own scripts: watches the transcript once per frame. */
function watchTranscript({ expect, DONE }) {
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
  let list = null, msgs = null, texts = null;
  const tick = () => {
    if (!list) {
      list = document.getElementById('transcript');
      if (list) {
        msgs = list.getElementsByClassName('msg');
        texts = list.getElementsByClassName('older-text');
      }
    }
    let n = msgs ? msgs.length : 0;
    if (n && t.first === null) t.first = performance.now();
    if (texts) for (let i = 0; i < texts.length; i++) n += Number(texts[i].dataset.messages);
    if (n >= expect) {
      // This frame shows them all; a message posted now runs once its layout and paint are done.
      const ch = new MessageChannel();
      ch.port1.onmessage = () => {
        t.all = performance.now();
        t.count = n;
        t.text = list.textContent; // what the page held then, checked by the script
        // Told to the script by a console message: a script evaluated in the page while it
        // loads (polling, or awaiting a promise) costs its main thread ≈ 15 ms of its own.
        console.info(DONE);
      };
      ch.port2.postMessage(0);
      return;
    }
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}

async function openOnce(session = SESSION) {
  const ctx = await run.newContext();
  await ctx.addCookies([{ name: 'natter_op', value: COOKIE, url: BASE }]);
  await ctx.addInitScript(watchTranscript, { expect: EXPECT, DONE });
  const page = await ctx.newPage();
  await browserSettled();
  const shown = page.waitForEvent('console', { predicate: (m) => m.text() === DONE, timeout: 60000 });
  await page.goto(`${BASE}/chat/${encodeURIComponent(session)}`);
  await shown;
  const t = await page.evaluate(() => window.__natterJoin);
  assert(t.count === EXPECT, `the window shows ${t.count} messages, expected ${EXPECT}`);
  // Read after the open: the first open is the first read of the history since it was written.
  assertAllShown(t.text, await textsOf(session));
  assert(!run.pageErrors.length, `page errors: ${run.pageErrors.join('; ')}`);
  await ctx.close();
  return t;
}

await run.check('warm-up: the window shows the whole history', async () => { await openOnce(); });
const f = (x) => (x === null ? '-' : x.toFixed(1));
for (let i = 1; i <= RUNS; i++) {
  const session = SESSIONS.length ? SESSIONS[i] : SESSION;
  assert(session, `NATTER_SESSIONS names ${SESSIONS.length} sessions: one more than NATTER_RUNS needed`);
  if (SESSIONS.length) {
    await run.check(`run ${i}: the window shows the whole history at its first open`, async () => {
      const t = await openOnce(session);
      console.log(`join-new-ms ${f(t.all)} first ${f(t.first)} worker ${f(t.worker)}`);
    });
  }
  await run.check(`run ${i}: the window shows the whole history`, async () => {
    const t = await openOnce(session);
    console.log(`join-ms ${f(t.all)} first ${f(t.first)} worker ${f(t.worker)}`);
  });
}
await run.finish();
