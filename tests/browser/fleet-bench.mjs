// The browser step of the benchmark (natter-bench, phase fleet-page): how long the Chat page
// takes from pressing "Log in" until the first screen of the machine list shows, its rows and
// the count of every machine in scope ("1–200 of 100,000 machines"). Each run is a fresh browser
// profile. Not a test: it reports times, and fails only when the list does not show.
//
//   node tests/browser/fleet-bench.mjs
//
// Environment (and those of harness.mjs):
//   NATTER_URL           base URL of the gateway
//   NATTER_OPERATOR      an operator who sees every machine
//   NATTER_PASSWORD      ... and password
//   NATTER_EXPECT_TOTAL  how many machines are in scope (the count must say at least that)
//   NATTER_RUNS          measured runs (default 5), after one warm-up run
//
// Prints per measured run `first-screen-ms <ms> login <ms>`: the first screen and the login's
// answer, both in ms from pressing "Log in".
import { need, startBrowser } from './harness.mjs';

const BASE = need('NATTER_URL').replace(/\/+$/, '');
const OPERATOR = need('NATTER_OPERATOR');
const PASSWORD = need('NATTER_PASSWORD');
const TOTAL = Number(need('NATTER_EXPECT_TOTAL'));
const RUNS = Number(process.env.NATTER_RUNS || 5);

const run = await startBrowser({ screenshotPrefix: 'fleet-bench-' });

async function loginOnce() {
  const ctx = await run.newContext();
  const page = await ctx.newPage();
  await page.goto(BASE + '/');
  await page.evaluate(() => localStorage.removeItem('natter.filter'));
  await page.locator('#username').fill(OPERATOR);
  await page.locator('#password').fill(PASSWORD);
  const started = await page.evaluate(() => performance.now());
  await page.locator('#login-form button[type=submit]').click();
  // Polled once per frame in the page: the frame with rows and the count is the first screen.
  const shown = await page.waitForFunction((total) => {
    const rows = document.querySelectorAll('#machines tr[data-machine]').length;
    const m = /of ([\d,]+) machines/.exec(document.querySelector('#count')?.textContent || '');
    return rows > 0 && m && Number(m[1].replace(/,/g, '')) >= total ? performance.now() : false;
  }, TOTAL, { timeout: 60000, polling: 'raf' });
  const at = (await shown.jsonValue()) - started;
  // The login's answer (resource timing): the password hash before it is not the list's time.
  const login = await page.evaluate((t0) => {
    const e = performance.getEntriesByType('resource').find((r) => r.name.includes('/api/login'));
    return e ? e.responseEnd - t0 : NaN;
  }, started);
  await ctx.close();
  return `${at.toFixed(1)} login ${login.toFixed(1)}`;
}

// The warm-up is Chromium's first start of the page's code.
await run.check('warm-up: the first screen shows', async () => { await loginOnce(); });
for (let i = 1; i <= RUNS; i++) {
  await run.check(`run ${i}: the first screen shows`, async () => {
    console.log(`first-screen-ms ${await loginOnce()}`);
  });
}
await run.finish();
