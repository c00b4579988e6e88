// Browser checks of Natter's web UI against a running gateway.
//
//   node tests/browser/chat.mjs
//
// Environment:
//   NATTER_URL             base URL of the gateway, e.g. http://127.0.0.1:8080
//   NATTER_OPERATOR        an existing operator's user name
//   NATTER_PASSWORD        ... and password
//   NATTER_MACHINE         a machine ID with a logged-on user
//   NATTER_AGENT_URL_FILE  file into which a test agent writes the machine-user URL it was asked to open
//   NATTER_MACHINES        optional: comma-separated machine IDs with logged-on users (>= 10 runs check 5)
//   NATTER_ARTIFACTS       optional: directory for screenshots of a failed check
//   CHROMIUM               optional: browser executable (default /usr/bin/chromium)
//
// Prints one line per check; stops at the first failure (exit code 1); last line "N passed, M failed".
import fs from 'node:fs/promises';
import path from 'node:path';
import { chromium } from 'playwright-core';

const env = process.env;
const TIMEOUT = 15000;

function need(name) {
  const v = env[name];
  if (!v) {
    console.error(`missing environment variable ${name}`);
    process.exit(2);
  }
  return v;
}
const BASE = need('NATTER_URL').replace(/\/+$/, '');
const OPERATOR = need('NATTER_OPERATOR');
const PASSWORD = need('NATTER_PASSWORD');
const MACHINE = need('NATTER_MACHINE');
const AGENT_URL_FILE = need('NATTER_AGENT_URL_FILE');
const MACHINES = (env.NATTER_MACHINES || '').split(',').map((s) => s.trim()).filter(Boolean);
const ARTIFACTS = env.NATTER_ARTIFACTS || '';

let passed = 0;
let failed = 0;
let checkNo = 0;
const pageErrors = [];

const browser = await chromium.launch({
  executablePath: env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const operator = await browser.newContext();   // the technician's browser profile
const machineUser = await browser.newContext(); // the person at the managed machine
for (const ctx of [operator, machineUser]) {
  ctx.setDefaultTimeout(TIMEOUT);
  ctx.on('page', watch);
}
function watch(page) {
  page.on('pageerror', (e) => pageErrors.push(`${page.url()}: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(`${page.url()}: console: ${m.text()}`); });
}

function assert(cond, message) {
  if (!cond) throw new Error(message);
}
const rowOf = (page, id) => page.locator(`#machines tr[data-machine=${JSON.stringify(id)}]`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitForTitle(page, title) {
  try {
    await page.waitForFunction((t) => document.title === t, title, { timeout: TIMEOUT });
  } catch {
    throw new Error(`title is ${JSON.stringify(await page.title())}, expected ${JSON.stringify(title)}`);
  }
}

/** Texts of the messages the page received from the server (rendered from SSE events). */
function deliveredTexts(page) {
  return page.$$eval('#transcript .msg[data-seq] .text', (els) => els.map((e) => e.textContent));
}

async function waitForDelivered(page, text, what) {
  try {
    await page.waitForFunction(
      (t) => [...document.querySelectorAll('#transcript .msg[data-seq] .text')].some((e) => e.textContent === t),
      text, { timeout: TIMEOUT });
  } catch {
    throw new Error(`${what}: ${JSON.stringify(text)} never arrived; transcript: ${JSON.stringify(await deliveredTexts(page))}`);
  }
}

async function readAgentUrl() {
  const deadline = Date.now() + 10000;
  while (Date.now() < deadline) {
    const text = (await fs.readFile(AGENT_URL_FILE, 'utf8').catch(() => '')).trim();
    if (text) return text.split('\n').pop().trim();
    await sleep(100);
  }
  throw new Error(`no machine-user URL in ${AGENT_URL_FILE} after 10 s`);
}

/** Click a machine ID on the Chat page; resolve to the new window once its title is the machine ID. */
async function startChat(chatPage, id) {
  const link = rowOf(chatPage, id).locator('button.machine-link');
  const [popup] = await Promise.all([operator.waitForEvent('page'), link.click()]);
  await waitForTitle(popup, id);
  return popup;
}

async function finish() {
  console.log(`${passed} passed, ${failed} failed`);
  await browser.close().catch(() => {});
  process.exit(failed ? 1 : 0);
}

async function check(name, fn) {
  checkNo++;
  try {
    await fn();
    passed++;
    console.log(`ok ${checkNo} - ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${checkNo} - ${name}: ${e.message}`);
    for (const line of pageErrors.slice(-10)) console.log(`  page error: ${line}`);
    if (ARTIFACTS) {
      await fs.mkdir(ARTIFACTS, { recursive: true }).catch(() => {});
      const pages = [...operator.pages(), ...machineUser.pages()];
      for (const [i, p] of pages.entries()) {
        await p.screenshot({ path: path.join(ARTIFACTS, `check${checkNo}-page${i}.png`), fullPage: true }).catch(() => {});
      }
    }
    await finish();
  }
}

// ---------------------------------------------------------------------------------------------
const chatPage = await operator.newPage();
let opWindow;
let muPage;

await check('login on / shows the machine list with NATTER_MACHINE', async () => {
  await chatPage.goto(BASE + '/');
  await chatPage.locator('#username').fill(OPERATOR);
  await chatPage.locator('#password').fill(PASSWORD);
  await chatPage.locator('#login-form button[type=submit]').click();
  await chatPage.locator('#me-name').waitFor({ state: 'visible' });
  await rowOf(chatPage, MACHINE).locator('button.machine-link').waitFor({ state: 'visible' });
});

await check('clicking the machine ID opens a new window titled with the machine ID', async () => {
  await fs.writeFile(AGENT_URL_FILE, '').catch(() => {});
  const before = chatPage.url();
  const pagesBefore = operator.pages().length;
  opWindow = await startChat(chatPage, MACHINE);
  assert(opWindow !== chatPage, 'the chat opened in the Chat page itself');
  assert(operator.pages().length === pagesBefore + 1, 'expected exactly one new window');
  assert(new URL(opWindow.url()).pathname.startsWith('/chat/'), `chat window is at ${opWindow.url()}`);
  assert(chatPage.url() === before, `the Chat page moved to ${chatPage.url()}`);
  assert(await rowOf(chatPage, MACHINE).isVisible(), 'the Chat page no longer shows the machine list');
});

await check("the machine user's window loads with the machine ID as title", async () => {
  const url = await readAgentUrl();
  muPage = await machineUser.newPage();
  await muPage.goto(url);
  await waitForTitle(muPage, MACHINE);
  await muPage.locator('#text').waitFor({ state: 'visible' });
  assert(!(await muPage.evaluate(() => location.hash)).includes('t='), 'the login token stays in the address bar');
});

await check('Shift+Enter makes a line break, Enter sends; text is rendered as text', async () => {
  const box = opWindow.locator('#text');
  await box.click();
  await box.pressSequentially('hello');
  await box.press('Shift+Enter');
  await box.pressSequentially('world');
  await box.press('Enter');
  await waitForDelivered(muPage, 'hello\nworld', 'machine user');
  await sleep(700); // a duplicate would show up by now
  let texts = await deliveredTexts(muPage);
  assert(texts.filter((t) => t === 'hello\nworld').length === 1, `machine user sees ${JSON.stringify(texts)}`);
  const mine = await opWindow.$$eval('#transcript .msg .text', (els) => els.map((e) => e.textContent));
  assert(mine.filter((t) => t === 'hello\nworld').length === 1, `operator window shows ${JSON.stringify(mine)}`);

  const reply = muPage.locator('#text');
  await reply.click();
  await reply.pressSequentially('<b>hi</b>');
  await reply.press('Enter');
  await waitForDelivered(opWindow, '<b>hi</b>', 'operator');
  const bold = await opWindow.locator('#transcript b').count();
  assert(bold === 0, 'message text was rendered as HTML');
  texts = await deliveredTexts(opWindow);
  assert(texts.filter((t) => t === '<b>hi</b>').length === 1, `operator sees ${JSON.stringify(texts)}`);
});

if (MACHINES.length >= 10) {
  await check('10 chat windows at once all keep receiving (one shared event stream)', async () => {
    await opWindow.close({ runBeforeUnload: true });
    const ids = MACHINES.slice(0, 10);
    const windows = [];
    for (const id of ids) windows.push(await startChat(chatPage, id));
    // Every window is subscribed before anything is sent.
    await Promise.all(windows.map((w) => w.locator('#text').waitFor({ state: 'visible' })));
    const stamp = Date.now().toString(36);
    const texts = ids.map((id, i) => `window ${i + 1} (${id}) ${stamp}`);
    for (const [i, w] of windows.entries()) {
      const box = w.locator('#text');
      await box.fill(texts[i]);
      await box.press('Enter');
    }
    for (const [i, w] of windows.entries()) await waitForDelivered(w, texts[i], `window ${i + 1}`);
  });
} else {
  console.log('skip: 10 windows');
}

await finish();
