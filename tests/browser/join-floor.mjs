// The floor under the benchmark's browser step (join-bench.mjs): the same fresh browser
// profile per open, the same gateway, but a page with nothing in it (`GET /healthz`, a two-byte
// text answer): from navigation start until its first frame has been rendered, measured as
// join-bench.mjs measures the chat window's. What no change to the chat window can take away
// on this machine (starting a renderer for a new profile, the navigation, one frame). Run in
// place of join-bench.mjs:
//
//   NATTER_BENCH_BROWSER_SCRIPT=join-floor.mjs target/release/natter-bench run \
//     --phases browser-join --no-write
//
// Prints `join-ms <ms> first <ms> worker -` per measured run, so the benchmark reports it in the
// browser-join row (whose "not met"/"met" then means nothing).
import { browserSettled, need, startBrowser } from './harness.mjs';

const BASE = need('NATTER_URL').replace(/\/+$/, '');
const RUNS = Number(process.env.NATTER_RUNS || 5);

const run = await startBrowser({ screenshotPrefix: 'join-floor-' });

/** What the page logs at its first rendered frame (as join-bench.mjs: no polling). */
const DONE = 'natter-join-floor: rendered';

/** Installed before the page loads: the time of its first rendered frame. */
function watchFirstFrame(DONE) {
  window.__natterFloor = null;
  requestAnimationFrame(() => {
    const ch = new MessageChannel();
    ch.port1.onmessage = () => {
      window.__natterFloor = performance.now();
      console.info(DONE);
    };
    ch.port2.postMessage(0);
  });
}

async function openOnce() {
  const ctx = await run.newContext();
  await ctx.addInitScript(watchFirstFrame, DONE);
  const page = await ctx.newPage();
  await browserSettled();
  const shown = page.waitForEvent('console', { predicate: (m) => m.text() === DONE, timeout: 60000 });
  await page.goto(`${BASE}/healthz`);
  await shown;
  const t = await page.evaluate(() => window.__natterFloor);
  await ctx.close();
  return t;
}

await run.check('warm-up: an empty page renders', async () => { await openOnce(); });
for (let i = 1; i <= RUNS; i++) {
  await run.check(`run ${i}: an empty page renders`, async () => {
    const t = (await openOnce()).toFixed(1);
    console.log(`join-ms ${t} first ${t} worker -`);
  });
}
await run.finish();
