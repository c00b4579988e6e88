// Browser checks of machines with several users (issue 12, item 6): the Chat page lists every
// user of a terminal server under the machine (active / idle); the operator picks the second of
// two users, the chat window is titled with the machine and that user, the link goes to that
// user's desktop session only, and the two talk; the Quick View picks the other user likewise.
//
//   node tests/browser/users.mjs
//
// Environment (and those of harness.mjs):
//   NATTER_URL             base URL of the gateway
//   NATTER_OPERATOR        an existing operator's user name
//   NATTER_PASSWORD        ... and password
//   NATTER_MACHINE         a machine ID whose agent reports two users
//   NATTER_USERS           their names, in the agent's order: "carol,dave"
//   NATTER_URL_FILES       for each user, the file into which the test agent writes the URL it was
//                          asked to open in that user's session (comma-separated, same order)
import fs from 'node:fs/promises';
import {
  assert, list, login, need, rowOf, sleep, startBrowser, waitFor, waitForDelivered, waitForTitle, send,
} from './harness.mjs';

const BASE = need('NATTER_URL').replace(/\/+$/, '');
const OPERATOR = need('NATTER_OPERATOR');
const PASSWORD = need('NATTER_PASSWORD');
const MACHINE = need('NATTER_MACHINE');
const [FIRST, SECOND] = list(need('NATTER_USERS'));
const [FIRST_URLS, SECOND_URLS] = list(need('NATTER_URL_FILES'));

const run = await startBrowser({ screenshotPrefix: 'users-' });
const operator = await run.newContext();
const machineUsers = await run.newContext();
const check = (name, fn) => run.check(name, fn);

const urlIn = async (file) => (await fs.readFile(file, 'utf8').catch(() => '')).trim();

/** Waits for the URL the agent opened in one user's session. */
async function agentUrl(file, who) {
  const deadline = Date.now() + 10000;
  while (Date.now() < deadline) {
    const text = await urlIn(file);
    if (text) return text;
    await sleep(100);
  }
  throw new Error(`the agent opened nothing in ${who}'s session after 10 s`);
}

const page = await operator.newPage();
const row = () => rowOf(page, MACHINE);
const userItem = (scope, name) => scope.locator('li.machine-user').filter({ has: page.locator('.user-name', { hasText: name }) });

await check('the Chat page lists both users under the machine, each active, each with Chat', async () => {
  await login(page, BASE, OPERATOR, PASSWORD);
  await row().locator('li.machine-user').nth(1).waitFor({ state: 'visible' });
  const users = await row().locator('li.machine-user').evaluateAll((lis) => lis.map((li) => ({
    name: li.querySelector('.user-name').textContent,
    active: li.querySelector('.user-mark').dataset.active,
    chat: !!li.querySelector('button.user-chat'),
  })));
  assert(JSON.stringify(users) === JSON.stringify([
    { name: FIRST, active: 'true', chat: true }, { name: SECOND, active: 'true', chat: true },
  ]), `the row lists ${JSON.stringify(users)}`);
});

let opWindow;
let secondPage;
await check(`Chat with ${SECOND}: the window is titled with the machine and ${SECOND}`, async () => {
  const chat = userItem(row(), SECOND).locator('button.user-chat');
  [opWindow] = await Promise.all([operator.waitForEvent('page'), chat.click()]);
  await waitForTitle(opWindow, `${MACHINE} — ${SECOND}`);
  await waitFor(opWindow, () => document.querySelector('#agent').dataset.state === 'opened', null, 15000,
    async () => `the agent says ${JSON.stringify(await opWindow.locator('#agent').textContent())}`);
});

await check(`only ${SECOND}'s session got the link; ${SECOND} and the operator talk`, async () => {
  const url = await agentUrl(SECOND_URLS, SECOND);
  assert(await urlIn(FIRST_URLS) === '', `${FIRST}'s session got a link too: ${await urlIn(FIRST_URLS)}`);
  secondPage = await machineUsers.newPage();
  await secondPage.goto(url);
  await waitForTitle(secondPage, `${MACHINE} — ${SECOND}`);
  await secondPage.locator('#text').waitFor({ state: 'visible' });
  await send(opWindow, `hello ${SECOND}`);
  await waitForDelivered(secondPage, `hello ${SECOND}`, SECOND);
  await send(secondPage, `hi from ${SECOND}`);
  await waitForDelivered(opWindow, `hi from ${SECOND}`, 'the operator');
  const members = await opWindow.locator('#members').textContent();
  assert(members.includes(`User: ${SECOND}`), `the window's members say ${JSON.stringify(members)}`);
});

await check(`the row offers Join for ${SECOND}'s chat and still Chat for ${FIRST}`, async () => {
  await userItem(row(), SECOND).locator('a.user-join').waitFor({ state: 'visible' });
  await userItem(row(), FIRST).locator('button.user-chat').waitFor({ state: 'visible' });
  assert(await urlIn(FIRST_URLS) === '', `${FIRST}'s session got a link: ${await urlIn(FIRST_URLS)}`);
});

await check(`the Quick View lists both users; its Chat with ${FIRST} opens ${FIRST}'s own chat`, async () => {
  const qv = page.locator('#quickview');
  await row().locator('.status').hover();
  await qv.waitFor({ state: 'visible', timeout: 5000 });
  const chat = userItem(qv, FIRST).locator('button.user-chat');
  await chat.waitFor({ state: 'visible' });
  await userItem(qv, SECOND).locator('a.user-join').waitFor({ state: 'visible' });
  const [w] = await Promise.all([operator.waitForEvent('page'), chat.click()]);
  await waitForTitle(w, `${MACHINE} — ${FIRST}`);
  const url = await agentUrl(FIRST_URLS, FIRST);
  const firstPage = await machineUsers.newPage();
  await firstPage.goto(url);
  await waitForTitle(firstPage, `${MACHINE} — ${FIRST}`);
  await firstPage.locator('#text').waitFor({ state: 'visible' });
  await send(w, `hello ${FIRST}`);
  await waitForDelivered(firstPage, `hello ${FIRST}`, FIRST);
  const onSecond = await secondPage.$$eval('#transcript .msg .text', (els) => els.map((e) => e.textContent));
  assert(!onSecond.includes(`hello ${FIRST}`), `${SECOND} sees ${FIRST}'s chat: ${JSON.stringify(onSecond)}`);
});

await run.finish();
