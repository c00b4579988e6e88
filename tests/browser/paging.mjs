// Browser checks of the Chat page at fleet scale (issue 13 item 5): the server sends the machine
// list a page (200) at a time with the count; Next / Previous page through it; a status change of
// a machine on the page shows live; a filter starts again at its first page.
//
//   node tests/browser/paging.mjs
//
// Environment (and those of harness.mjs):
//   NATTER_URL       base URL of the gateway
//   NATTER_OPERATOR  an operator who sees every machine
//   NATTER_PASSWORD  ... and password
//   NATTER_MACHINES  how many machines there are: m000.paging.acme … (zero-padded, 201 … 400)
//   NATTER_CONTROL   file to ask the test to act: the script writes "suspend" (suspend
//                    m210.paging.acme), the test answers "suspended" once it is so
import fs from 'node:fs/promises';
import { assert, login, need, rowOf, sleep, startBrowser, waitFor, TIMEOUT } from './harness.mjs';

const BASE = need('NATTER_URL').replace(/\/+$/, '');
const OPERATOR = need('NATTER_OPERATOR');
const PASSWORD = need('NATTER_PASSWORD');
const COUNT = Number(need('NATTER_MACHINES'));
const CONTROL = need('NATTER_CONTROL');
const PAGE = 200;

const machine = (i) => `m${String(i).padStart(3, '0')}.paging.acme`;
const run = await startBrowser({ screenshotPrefix: 'paging-' });
const page = await (await run.newContext()).newPage();
const check = (name, fn) => run.check(name, fn);

/** Asks the test to act; waits for its answer. */
async function ask(what, answer) {
  await fs.writeFile(CONTROL, what);
  const deadline = Date.now() + 10000;
  while (Date.now() < deadline) {
    if ((await fs.readFile(CONTROL, 'utf8').catch(() => '')).trim() === answer) return;
    await sleep(50);
  }
  throw new Error(`the test did not answer "${answer}"`);
}

const rowIds = () => page.$$eval('#machines tr[data-machine]', (trs) => trs.map((t) => t.dataset.machine));
const countText = () => page.locator('#count').textContent();

/** Waits until the list shows rows `from` … `to - 1` and the count says `says`. */
async function waitForPage(from, to, says) {
  const want = [];
  for (let i = from; i < to; i++) want.push(machine(i));
  await waitFor(page, ([ids, text]) => {
    const rows = [...document.querySelectorAll('#machines tr[data-machine]')].map((t) => t.dataset.machine);
    return document.querySelector('#count').textContent === text && rows.join() === ids.join();
  }, [want, says], TIMEOUT, async () => {
    const rows = await rowIds();
    return `count ${JSON.stringify(await countText())} (want ${JSON.stringify(says)}), ${rows.length} rows ${rows[0]} … ${rows[rows.length - 1]} (want ${want[0]} … ${want[want.length - 1]})`;
  });
}

const n = (x) => x.toLocaleString('en-US');

await check(`login shows the first ${PAGE} of ${COUNT} machines with the count`, async () => {
  await login(page, BASE, OPERATOR, PASSWORD);
  await waitForPage(0, PAGE, `1–${PAGE} of ${n(COUNT)} machines`);
  assert(await page.locator('#pager').isVisible(), 'no page buttons');
  assert(await page.locator('#page-prev').isDisabled(), 'Previous is enabled on the first page');
  assert(await page.locator('#page-next').isEnabled(), 'Next is disabled with more machines');
});

await check('Next shows the rest, Previous is enabled, Next is not', async () => {
  await page.locator('#page-next').click();
  await waitForPage(PAGE, COUNT, `${PAGE + 1}–${COUNT} of ${n(COUNT)} machines`);
  await waitFor(page, () => !document.querySelector('#page-prev').disabled, null, TIMEOUT, async () => 'Previous stays disabled');
  assert(await page.locator('#page-next').isDisabled(), 'Next is enabled on the last page');
});

await check('a status change of a machine on the page shows live', async () => {
  const id = machine(210);
  const icon = rowOf(page, id).locator('.status');
  assert(await icon.getAttribute('data-status') !== 'suspended', `${id} is suspended already`);
  await ask('suspend', 'suspended');
  await waitFor(page, (mid) => document.querySelector(`#machines tr[data-machine="${mid}"] .status`)?.dataset.status === 'suspended',
    id, TIMEOUT, async () => `${id} shows ${await icon.getAttribute('data-status')}`);
});

await check('Previous goes back to the first page', async () => {
  await page.locator('#page-prev').click();
  await waitForPage(0, PAGE, `1–${PAGE} of ${n(COUNT)} machines`);
});

await check('a filter starts at its first page: m2* lists the machines from m200 alone', async () => {
  await page.locator('#page-next').click();
  await waitForPage(PAGE, COUNT, `${PAGE + 1}–${COUNT} of ${n(COUNT)} machines`);
  await page.locator('#filter').fill('m2*');
  const matching = Math.min(COUNT, 300) - 200;
  await waitForPage(200, 200 + matching, `${n(matching)} machines`);
  assert(await page.locator('#pager').isHidden(), 'page buttons for a list on one page');
});

await run.finish();
