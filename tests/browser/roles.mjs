// Browser checks of machine roles and "a machine user starts a chat" (issue 11, item 3): an
// admin manages the role in the Chat page's "Machine roles" section; with the right off, the
// machine user's request (the agent's control socket, as `natter-agent chat` uses it) is refused;
// with it on, the agent opens the start page, which lists the present operator by name; the
// machine user clicks them, lands in the chat window, and the operator is invited to the chat
// (their Chat page pops the incoming chat up).
//
//   node tests/browser/roles.mjs
//
// Environment (and those of harness.mjs):
//   NATTER_URL             base URL of the gateway
//   NATTER_OPERATOR        an existing admin operator's user name
//   NATTER_PASSWORD        ... and password
//   NATTER_OPERATOR_NAME   ... and display name
//   NATTER_MACHINE         a machine ID with a logged-on user
//   NATTER_CONTROL_SOCKET  the control socket of that machine's running agent
//   NATTER_AGENT_URL_FILE  file into which the agent writes the URL it was asked to open
import fs from 'node:fs/promises';
import net from 'node:net';
import {
  assert, login, need, sleep, startBrowser, waitFor, waitForTitle, TIMEOUT,
} from './harness.mjs';

const BASE = need('NATTER_URL').replace(/\/+$/, '');
const OPERATOR = need('NATTER_OPERATOR');
const PASSWORD = need('NATTER_PASSWORD');
const OPERATOR_NAME = need('NATTER_OPERATOR_NAME');
const MACHINE = need('NATTER_MACHINE');
const SOCKET = need('NATTER_CONTROL_SOCKET');
const AGENT_URL_FILE = need('NATTER_AGENT_URL_FILE');

const run = await startBrowser({ screenshotPrefix: 'roles-' });
const operator = await run.newContext();
const machineUser = await run.newContext();
const check = (name, fn) => run.check(name, fn);

/** What `natter-agent chat` does: one line to the agent's control socket, one line back. */
function askForChat() {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(SOCKET, () => socket.write('chat\n'));
    let answer = '';
    socket.setEncoding('utf8');
    socket.on('data', (d) => { answer += d; });
    socket.on('end', () => resolve(answer.trim()));
    socket.on('error', reject);
  });
}

const agentUrl = async () => (await fs.readFile(AGENT_URL_FILE, 'utf8').catch(() => '')).trim();

/** The URL the agent opened (the test writes it to the file a moment after it is opened). */
async function openedUrl() {
  const deadline = Date.now() + TIMEOUT;
  while (Date.now() < deadline) {
    const url = await agentUrl();
    if (url) return url;
    await sleep(50);
  }
  throw new Error(`the agent opened nothing (${AGENT_URL_FILE} stays empty)`);
}

async function rolesStatus(page, text) {
  await waitFor(page, (t) => document.querySelector('#roles-status').textContent === t, text, TIMEOUT,
    async () => `roles status: ${JSON.stringify(await page.locator('#roles-status').textContent())}, expected ${JSON.stringify(text)}`);
}

const chatPage = await operator.newPage();
let startPage;
let sessionId;

await check('an admin sees the Machine roles section and creates a role without the right', async () => {
  await login(chatPage, BASE, OPERATOR, PASSWORD);
  const section = chatPage.locator('#roles');
  await section.waitFor({ state: 'attached' });
  await waitFor(chatPage, () => !document.querySelector('#roles').hidden, null, TIMEOUT, async () => 'the roles section stays hidden for an admin');
  await chatPage.locator('#roles summary').click();
  await chatPage.locator('#roles-empty').waitFor({ state: 'visible' });
  await chatPage.locator('#role-name').fill('kiosk');
  await chatPage.locator('#role-create button[type=submit]').click();
  await rolesStatus(chatPage, 'role kiosk created');
  const row = chatPage.locator('#roles-list tr[data-role=kiosk]');
  await row.waitFor({ state: 'visible' });
  assert(!(await row.locator('input[type=checkbox]').isChecked()), 'a new role has the right unless asked');
});

await check('a bad role name is refused with a clear message', async () => {
  await chatPage.locator('#role-name').fill('Kiosk Users');
  await chatPage.locator('#role-create button[type=submit]').click();
  await waitFor(chatPage, () => document.querySelector('#roles-status').textContent.includes('not a role name'), null, TIMEOUT,
    async () => `roles status: ${await chatPage.locator('#roles-status').textContent()}`);
  assert((await chatPage.locator('#roles-list tr').count()) === 1, 'a role was created from a bad name');
});

await check('the admin assigns the machine to the role', async () => {
  await chatPage.locator('#assign-machine').fill(MACHINE);
  await chatPage.locator('#assign-role').selectOption('kiosk');
  await chatPage.locator('#role-assign button[type=submit]').click();
  await rolesStatus(chatPage, `${MACHINE}: role kiosk`);
  await waitFor(chatPage, (m) => document.querySelector('#roles-list tr[data-role=kiosk] .role-machines').textContent === m, MACHINE, TIMEOUT,
    async () => `machines of kiosk: ${await chatPage.locator('#roles-list tr[data-role=kiosk] .role-machines').textContent()}`);
});

await check('with the right off, the machine user\'s request is refused with its reason', async () => {
  const answer = await askForChat();
  assert(answer.startsWith('refused (not_allowed)'), `the agent answered ${JSON.stringify(answer)}`);
  assert((await agentUrl()) === '', 'the agent opened a page although refused');
});

await check('with the right on, the agent opens the start page, which lists the present operator', async () => {
  await chatPage.locator('#roles-list tr[data-role=kiosk] input[type=checkbox]').check();
  await rolesStatus(chatPage, 'kiosk: may start a chat');
  const answer = await askForChat();
  assert(answer === 'opened', `the agent answered ${JSON.stringify(answer)}`);
  const url = await openedUrl();
  assert(url.startsWith(BASE + '/start/#t='), `the agent opened ${url}`);
  startPage = await machineUser.newPage();
  await startPage.goto(url);
  const button = startPage.locator('#operators button', { hasText: OPERATOR_NAME });
  await button.waitFor({ state: 'visible' });
  assert(!startPage.url().includes('#t='), 'the token stays in the address bar');
  const ids = await startPage.$$eval('#operators button', (bs) => bs.map((b) => b.dataset.operator));
  assert(!ids.includes(OPERATOR), `the page shows a login ID: ${JSON.stringify(ids)}`);
});

await check('the start link works once', async () => {
  const other = await (await run.newContext()).newPage();
  await other.goto(await agentUrl());
  await waitFor(other, () => document.querySelector('#start-error').textContent.includes('not valid'), null, TIMEOUT,
    async () => `second use: ${await other.locator('#start-error').textContent()}`);
  await other.close();
});

await check('clicking the operator starts the chat and opens its window; the operator is invited', async () => {
  await startPage.locator('#operators button', { hasText: OPERATOR_NAME }).click();
  await startPage.waitForURL(/\/m\/[0-9A-Z]{26}\/$/);
  sessionId = new URL(startPage.url()).pathname.split('/')[2];
  await startPage.locator('#text').waitFor({ state: 'visible' });
  await waitFor(startPage, (m) => document.querySelector('#machine').textContent.includes(m), MACHINE, TIMEOUT,
    async () => `chat window heading: ${await startPage.locator('#machine').textContent()}`);
  // The operator's side: the session exists with them invited.
  const seen = await chatPage.evaluate(async (id) => {
    const r = await fetch('/api/sessions/' + id);
    return { status: r.status, body: await r.text() };
  }, sessionId);
  assert(seen.status === 200, `the operator cannot see the session: ${seen.status} ${seen.body}`);
  assert(seen.body.includes(MACHINE), `the session is not with the machine: ${seen.body}`);
});

await check('the operator\'s Chat page pops up the incoming chat from the machine user', async () => {
  const want = `carol on ${MACHINE} wants to chat`;
  await waitFor(chatPage,
    (w) => [...document.querySelectorAll('#incoming:not([hidden]) #incoming-list .incoming-text')].some((e) => e.textContent === w),
    want, TIMEOUT,
    async () => `incoming chats: ${JSON.stringify(await chatPage.$$eval('#incoming-list .incoming-text', (els) => els.map((e) => e.textContent)))}`);
});

await check('the right switched off: the machine user is refused again', async () => {
  await chatPage.locator('#roles-list tr[data-role=kiosk] input[type=checkbox]').uncheck();
  await rolesStatus(chatPage, 'kiosk: may not start a chat');
  const answer = await askForChat();
  assert(answer.startsWith('refused (not_allowed)'), `the agent answered ${JSON.stringify(answer)}`);
});

await run.finish();
