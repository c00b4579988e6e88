// Browser checks of typing indicators and read receipts (issue 12, item 1), both ways: in the
// operator's chat window and in the machine user's, "<name> is typing…" shows while the other
// side types and goes when they clear their input or their message arrives; "Seen" (with the
// time) shows under the newest of my messages the other side's window has shown. Neither is a
// line of the transcript. "Seen" is still shown after a window is reloaded.
//
//   node tests/browser/typing.mjs
//
// Environment (and those of harness.mjs):
//   NATTER_URL             base URL of the gateway
//   NATTER_OPERATOR        an operator's user name, NATTER_PASSWORD the password
//   NATTER_MACHINE         a machine with a user logged on
//   NATTER_USER            that user's name (as the operator's window shows it)
//   NATTER_AGENT_URL_FILE  file into which the test agent writes the machine-user URL it opens
import fs from 'node:fs/promises';
import {
  assert, login, need, rowOf, send, sleep, startBrowser, waitFor, waitForDelivered, waitForTitle, TIMEOUT,
} from './harness.mjs';

const BASE = need('NATTER_URL').replace(/\/+$/, '');
const MACHINE = need('NATTER_MACHINE');
const USER = need('NATTER_USER');
const AGENT_URL_FILE = need('NATTER_AGENT_URL_FILE');
const run = await startBrowser({ screenshotPrefix: 'typing-' });
const operator = await run.newContext();
const machineUser = await run.newContext();
const check = (name, fn) => run.check(name, fn);

const chatPage = await operator.newPage();
let opWindow;
let muPage;
let operatorName;

async function readAgentUrl() {
  const deadline = Date.now() + TIMEOUT;
  while (Date.now() < deadline) {
    const text = (await fs.readFile(AGENT_URL_FILE, 'utf8').catch(() => '')).trim();
    if (text) return text.split('\n').pop().trim();
    await sleep(100);
  }
  throw new Error(`no machine-user URL in ${AGENT_URL_FILE}`);
}

/** Waits until the window's typing line reads `text` ('' = nothing shown). */
async function waitForTyping(page, text, what) {
  await waitFor(page, (t) => document.querySelector('#typing').textContent === t, text, TIMEOUT,
    async () => `${what}: the typing line is ${JSON.stringify(await page.locator('#typing').textContent())}, expected ${JSON.stringify(text)}`);
}

/** Waits until "Seen …" is under my message `text`, and under no other. */
async function waitForSeenUnder(page, text, what) {
  await waitFor(page, (t) => {
    const seen = [...document.querySelectorAll('#transcript .msg .seen')];
    return seen.length === 1 && /^Seen \S/.test(seen[0].textContent)
      && seen[0].closest('.msg').classList.contains('mine')
      && seen[0].closest('.msg').querySelector('.text').textContent === t;
  }, text, TIMEOUT, async () => `${what}: "Seen" is under ${JSON.stringify(await page.$$eval('#transcript .msg .seen',
    (els) => els.map((e) => [e.textContent, e.closest('.msg').querySelector('.text').textContent])))}, expected under ${JSON.stringify(text)}`);
}

/** No transcript line speaks of typing or seeing: signals are not chat events. */
async function assertNoSignalLines(page, what) {
  const lines = await page.$$eval('#transcript > li', (els) => els.map((e) => e.querySelector('.text, .sys-text')?.textContent || ''));
  assert(!lines.some((l) => /typing|seen/i.test(l)), `${what}'s transcript: ${JSON.stringify(lines)}`);
}

await check('an operator and the machine user have the chat open', async () => {
  await fs.writeFile(AGENT_URL_FILE, '').catch(() => {});
  await login(chatPage, BASE, need('NATTER_OPERATOR'), need('NATTER_PASSWORD'));
  operatorName = (await chatPage.locator('#me-name').textContent()).trim();
  const link = rowOf(chatPage, MACHINE).locator('button.machine-link');
  const [popup] = await Promise.all([operator.waitForEvent('page'), link.click()]);
  opWindow = popup;
  await waitForTitle(opWindow, MACHINE);
  muPage = await machineUser.newPage();
  await muPage.goto(await readAgentUrl());
  await waitForTitle(muPage, MACHINE);
  await muPage.locator('#text').waitFor({ state: 'visible' });
  await waitForTyping(muPage, '', 'machine user');
  await waitForTyping(opWindow, '', 'operator');
});

await check("the operator types: the machine user's window says so, and not the operator's own", async () => {
  await opWindow.bringToFront();
  await opWindow.locator('#text').pressSequentially('Let me ch');
  await waitForTyping(muPage, `${operatorName} is typing…`, 'machine user');
  await waitForTyping(opWindow, '', 'operator (own typing)');
});

await check('the operator empties the input: "is typing" goes away', async () => {
  await opWindow.locator('#text').fill('');
  await waitForTyping(muPage, '', 'machine user');
});

await check("the operator's message arrives: no more \"is typing\"; once the user's window shows it, \"Seen\" under it", async () => {
  await opWindow.locator('#text').pressSequentially('Let me check your printer');
  await waitForTyping(muPage, `${operatorName} is typing…`, 'machine user');
  await opWindow.locator('#text').press('Enter');
  await waitForDelivered(muPage, 'Let me check your printer', 'machine user');
  await waitForTyping(muPage, '', 'machine user after the message');
  await muPage.bringToFront();
  await waitForSeenUnder(opWindow, 'Let me check your printer', 'operator');
});

await check("the machine user types: the operator's window says so; the reply ends it and is seen", async () => {
  await muPage.bringToFront();
  await muPage.locator('#text').pressSequentially('It is the one on');
  await waitForTyping(opWindow, `${USER} is typing…`, 'operator');
  await waitForTyping(muPage, '', 'machine user (own typing)');
  await muPage.locator('#text').pressSequentially(' the second floor');
  await muPage.locator('#text').press('Enter');
  await waitForDelivered(opWindow, 'It is the one on the second floor', 'operator');
  await waitForTyping(opWindow, '', 'operator after the reply');
  await opWindow.bringToFront();
  await waitForSeenUnder(muPage, 'It is the one on the second floor', 'machine user');
});

await check('"Seen" moves to the newest message seen', async () => {
  await send(opWindow, 'Found it, fixing now');
  await waitForDelivered(muPage, 'Found it, fixing now', 'machine user');
  await muPage.bringToFront();
  await waitForSeenUnder(opWindow, 'Found it, fixing now', 'operator');
});

await check('"Seen" is still there after either window is reloaded', async () => {
  await opWindow.reload();
  await waitForTitle(opWindow, MACHINE);
  await waitForSeenUnder(opWindow, 'Found it, fixing now', 'operator after a reload');
  await muPage.reload();
  await waitForTitle(muPage, MACHINE);
  await waitForSeenUnder(muPage, 'It is the one on the second floor', 'machine user after a reload');
});

await check('"is typing" goes by itself when no more comes (the sender went quiet)', async () => {
  await muPage.locator('#text').pressSequentially('th');
  await waitForTyping(opWindow, `${USER} is typing…`, 'operator');
  await waitForTyping(opWindow, '', 'operator, a while after the last key');
});

await check('typing and seen are not lines of either transcript', async () => {
  await assertNoSignalLines(opWindow, 'operator');
  await assertNoSignalLines(muPage, 'machine user');
});

await run.finish();
