// Browser checks of the operator's options (F12): saved on the server (seen from another browser
// profile), a tone on each new message sent or received (AudioContext is stubbed in every page
// before it loads and counts the tones started), the chat window closing by itself when the
// other party ends the chat, and — with the option off — staying open, read-only, its text kept.
// A change on the Chat page reaches an open chat window at once.
//
//   node tests/browser/options.mjs
//
// Environment (and those of harness.mjs):
//   NATTER_URL             base URL of the gateway
//   NATTER_OPERATOR        an existing operator's user name
//   NATTER_PASSWORD        ... and password
//   NATTER_MACHINE         a machine ID with a logged-on user
//   NATTER_AGENT_URL_FILE  file into which a test agent writes the machine-user URL it was asked to open
import fs from 'node:fs/promises';
import {
  assert, login, need, rowOf, sleep, startBrowser, waitFor, waitForDelivered, waitForTitle, TIMEOUT, send,
} from './harness.mjs';

const BASE = need('NATTER_URL').replace(/\/+$/, '');
const OPERATOR = need('NATTER_OPERATOR');
const PASSWORD = need('NATTER_PASSWORD');
const MACHINE = need('NATTER_MACHINE');
const AGENT_URL_FILE = need('NATTER_AGENT_URL_FILE');

const run = await startBrowser({ screenshotPrefix: 'options-' });
const operator = await run.newContext();
const otherComputer = await run.newContext();
const machineUser = await run.newContext();
const check = (name, fn) => run.check(name, fn);

// Every page of the operator's profile: an AudioContext that makes no sound and counts the
// oscillators started (one per tone) in window.__tones.
await operator.addInitScript(() => {
  window.__tones = 0;
  const param = { value: 0, setValueAtTime() {}, exponentialRampToValueAtTime() {} };
  window.AudioContext = class {
    constructor() { this.currentTime = 0; this.destination = {}; }
    createOscillator() {
      return { frequency: { ...param }, connect: (n) => n, start: () => { window.__tones++; }, stop() {} };
    }
    createGain() { return { gain: { ...param }, connect: (n) => n }; }
  };
});

async function readAgentUrl() {
  const deadline = Date.now() + 10000;
  while (Date.now() < deadline) {
    const text = (await fs.readFile(AGENT_URL_FILE, 'utf8').catch(() => '')).trim();
    if (text) return text.split('\n').pop().trim();
    await sleep(100);
  }
  throw new Error(`no machine-user URL in ${AGENT_URL_FILE} after 10 s`);
}

async function startChat(chatPage, id) {
  const link = rowOf(chatPage, id).locator('button.machine-link');
  await link.waitFor({ state: 'visible' });
  const [popup] = await Promise.all([operator.waitForEvent('page'), link.click()]);
  await waitForTitle(popup, id);
  await popup.locator('#text').waitFor({ state: 'visible' });
  return popup;
}

/** Sets the Options panel's checkboxes to `want` and waits until the server saved them. */
async function setOptions(page, want) {
  if (!(await page.locator('#options').evaluate((d) => d.open))) await page.locator('#options summary').click();
  for (const [name, on] of Object.entries(want)) {
    const box = page.locator(`#options-form input[name=${name}]`);
    if ((await box.isChecked()) !== on) {
      await box.setChecked(on);
      await waitFor(page, () => document.querySelector('#options-status').textContent === 'Saved', null, TIMEOUT,
        async () => `options status: ${await page.locator('#options-status').textContent()}`);
    }
  }
}

const tones = (page) => page.evaluate(() => window.__tones);

// ---------------------------------------------------------------------------------------------
const chatPage = await operator.newPage();
let opWindow;
let muPage;

await check('options are off at first; ticking "tone" and "close" saves them', async () => {
  await login(chatPage, BASE, OPERATOR, PASSWORD);
  await chatPage.locator('#options summary').click();
  for (const name of ['play_tone', 'auto_close', 'hide_from_operators', 'hide_from_machine_users']) {
    assert(!(await chatPage.locator(`#options-form input[name=${name}]`).isChecked()), `${name} is on before any save`);
  }
  await setOptions(chatPage, { play_tone: true, auto_close: true, hide_from_machine_users: true });
});

await check('another browser of the same operator shows the saved options (kept on the server)', async () => {
  const page = await otherComputer.newPage();
  await login(page, BASE, OPERATOR, PASSWORD);
  await page.locator('#options summary').click();
  const box = (n) => page.locator(`#options-form input[name=${n}]`);
  await waitFor(page, () => document.querySelector('#options-form input[name=play_tone]').checked, null, TIMEOUT,
    async () => 'play_tone is not shown as on in another browser');
  assert(await box('auto_close').isChecked(), 'auto_close not saved');
  assert(await box('hide_from_machine_users').isChecked(), 'hide_from_machine_users not saved');
  assert(!(await box('hide_from_operators').isChecked()), 'hide_from_operators turned on by itself');
  await page.close();
});

await check('a tone plays for a message sent and for one received', async () => {
  await fs.writeFile(AGENT_URL_FILE, '').catch(() => {});
  opWindow = await startChat(chatPage, MACHINE);
  muPage = await machineUser.newPage();
  await muPage.goto(await readAgentUrl());
  await waitForTitle(muPage, MACHINE);
  await muPage.locator('#text').waitFor({ state: 'visible' });
  assert((await tones(opWindow)) === 0, 'a tone played before any new message');
  await send(opWindow, 'sent by the operator');
  await waitForDelivered(opWindow, 'sent by the operator', 'operator');
  await waitFor(opWindow, () => window.__tones >= 1, null, TIMEOUT, async () => `tones after sending: ${await tones(opWindow)}`);
  await send(muPage, 'sent by the machine user');
  await waitForDelivered(opWindow, 'sent by the machine user', 'operator');
  await waitFor(opWindow, () => window.__tones >= 2, null, TIMEOUT, async () => `tones after receiving: ${await tones(opWindow)}`);
  await sleep(500);
  assert((await tones(opWindow)) === 2, `expected exactly 2 tones, got ${await tones(opWindow)}`);
});

await check('with "close" on, the window closes when the machine user ends the chat', async () => {
  const closed = opWindow.waitForEvent('close', { timeout: TIMEOUT });
  await muPage.locator('#end').click();
  await closed;
  assert(opWindow.isClosed(), 'the chat window is still open');
  await muPage.close();
});

await check('with both off: no tone, and an ended chat stays open, read-only, its text kept', async () => {
  await setOptions(chatPage, { play_tone: false, auto_close: false });
  opWindow = await startChat(chatPage, MACHINE);
  await send(opWindow, 'quiet one');
  await waitForDelivered(opWindow, 'quiet one', 'operator');
  await sleep(700);
  assert((await tones(opWindow)) === 0, `a tone played with the option off (${await tones(opWindow)})`);
  await opWindow.locator('#end').click();
  await opWindow.locator('#ended-note').waitFor({ state: 'visible' });
  await sleep(2500); // the auto-close would have fired after 1.5 s
  assert(!opWindow.isClosed(), 'the chat window closed with the option off');
  assert(await opWindow.locator('#text').isDisabled(), 'the composer still accepts text');
  const texts = await opWindow.$$eval('#transcript .msg[data-seq] .text', (els) => els.map((e) => e.textContent));
  assert(texts.includes('quiet one'), `the transcript lost its text: ${JSON.stringify(texts)}`);
});

await check('turning "tone" on in the Chat page applies to an open chat window at once', async () => {
  opWindow = await startChat(chatPage, MACHINE);
  await send(opWindow, 'before');
  await waitForDelivered(opWindow, 'before', 'operator');
  await sleep(500);
  assert((await tones(opWindow)) === 0, 'a tone played with the option off');
  await setOptions(chatPage, { play_tone: true });
  await send(opWindow, 'after');
  await waitForDelivered(opWindow, 'after', 'operator');
  await waitFor(opWindow, () => window.__tones === 1, null, TIMEOUT, async () => `tones: ${await tones(opWindow)}`);
});

await run.finish();
