// Browser check of delivery at the next check-in (issue 12 item 2): a chat opened while the
// machine's agent is stopped says "Waiting for the machine" in the operator's window; a message
// written meanwhile is kept; when the agent starts again and checks in, the machine user's
// window opens (the agent's opener gets the link) and shows that message.
//
//   node tests/browser/checkin.mjs
//
// Environment (and those of harness.mjs):
//   NATTER_URL             base URL of the gateway
//   NATTER_OPERATOR        an existing operator's user name
//   NATTER_PASSWORD        ... and password
//   NATTER_MACHINE         a machine ID with a logged-on user
//   NATTER_AGENT_URL_FILE  file into which the test writes the machine-user URL the agent was asked to open
//   NATTER_AGENT_CONTROL   file to ask the test to stop or start the machine's agent: the script
//                          writes "stop" or "start", the test answers "stopped" / "started"
import fs from 'node:fs/promises';
import {
  assert, login, need, rowOf, send, sleep, startBrowser, waitFor, waitForDelivered, waitForTitle, TIMEOUT,
} from './harness.mjs';

const BASE = need('NATTER_URL').replace(/\/+$/, '');
const OPERATOR = need('NATTER_OPERATOR');
const PASSWORD = need('NATTER_PASSWORD');
const MACHINE = need('NATTER_MACHINE');
const AGENT_URL_FILE = need('NATTER_AGENT_URL_FILE');
const AGENT_CONTROL = need('NATTER_AGENT_CONTROL');

const run = await startBrowser({ screenshotPrefix: 'checkin-' });
const operator = await run.newContext();
const machineUser = await run.newContext();
const check = (name, fn) => run.check(name, fn);

/** Asks the test to `stop` or `start` the machine's agent; waits until it is so. */
async function agent(what) {
  await fs.writeFile(AGENT_CONTROL, what);
  const want = what === 'stop' ? 'stopped' : 'started';
  const deadline = Date.now() + 20000;
  while (Date.now() < deadline) {
    if ((await fs.readFile(AGENT_CONTROL, 'utf8').catch(() => '')).trim() === want) return;
    await sleep(50);
  }
  throw new Error(`the test did not confirm "${want}"`);
}

/** The machine-user URL the agent was asked to open, waiting up to 10 s for one. */
async function agentUrl() {
  const deadline = Date.now() + 10000;
  while (Date.now() < deadline) {
    const text = (await fs.readFile(AGENT_URL_FILE, 'utf8').catch(() => '')).trim();
    if (text) return text;
    await sleep(100);
  }
  throw new Error(`no machine-user URL in ${AGENT_URL_FILE} after 10 s`);
}

const agentState = (page) => page.locator('#agent').getAttribute('data-state');

async function waitForAgent(page, state) {
  await waitFor(page, (s) => document.querySelector('#agent').dataset.state === s, state, TIMEOUT,
    async () => `agent state ${await agentState(page)}, expected ${state}; says ${JSON.stringify(await page.locator('#agent').textContent())}`);
}

// ---------------------------------------------------------------------------------------------
const chatPage = await operator.newPage();
let opWindow;
const WRITTEN = 'Hello, I will fix your printer when your machine is back';

await check('the agent is stopped: a chat opened now says it waits for the machine', async () => {
  await login(chatPage, BASE, OPERATOR, PASSWORD);
  await agent('stop');
  const link = rowOf(chatPage, MACHINE).locator('button.machine-link');
  await link.waitFor({ state: 'visible' });
  [opWindow] = await Promise.all([operator.waitForEvent('page'), link.click()]);
  await waitForTitle(opWindow, MACHINE);
  await waitForAgent(opWindow, 'waiting');
  const says = await opWindow.locator('#agent').textContent();
  assert(/Waiting for the machine/.test(says) && /checks in again/.test(says), `the window says ${JSON.stringify(says)}`);
  assert(await opWindow.locator('#restart').isHidden(), '"Ask the machine again" offered while waiting');
});

await check('a message written while waiting is sent and shown', async () => {
  await send(opWindow, WRITTEN);
  await waitForDelivered(opWindow, WRITTEN, 'operator while waiting');
  assert(await agentState(opWindow) === 'waiting', `agent state ${await agentState(opWindow)}`);
});

await check('the agent starts again: the user\'s window opens and shows the message', async () => {
  await agent('start');
  const url = await agentUrl();
  await waitForAgent(opWindow, 'opened');
  const muPage = await machineUser.newPage();
  await muPage.goto(url);
  await waitForTitle(muPage, MACHINE);
  await waitForDelivered(muPage, WRITTEN, 'machine user after the check-in');
  await send(muPage, 'Thanks, I am here now');
  await waitForDelivered(opWindow, 'Thanks, I am here now', 'operator after the check-in');
});

await run.finish();
