// Browser checks of restarting a chat (issue 11 item 5): the operator's window of an ended chat
// offers "Restart chat", which asks the machine's agent to open the user's window again with a
// fresh link and shows the agent's answer: opened, or failed (then "Ask the machine again").
//
//   node tests/browser/restart.mjs
//
// Environment (and those of harness.mjs):
//   NATTER_URL             base URL of the gateway
//   NATTER_OPERATOR        an existing operator's user name
//   NATTER_PASSWORD        ... and password
//   NATTER_MACHINE         a machine ID with a logged-on user
//   NATTER_AGENT_URL_FILE  file into which a test agent writes the machine-user URL it was asked to open
//   NATTER_AGENT_CONTROL   file to ask the test for the agent's next answers: the script writes
//                          "fail" or "open", the test answers "failing" / "opening" when it is so
import fs from 'node:fs/promises';
import {
  assert, login, need, rowOf, sleep, startBrowser, waitFor, waitForDelivered, waitForTitle, TIMEOUT,
} from './harness.mjs';

const BASE = need('NATTER_URL').replace(/\/+$/, '');
const OPERATOR = need('NATTER_OPERATOR');
const PASSWORD = need('NATTER_PASSWORD');
const MACHINE = need('NATTER_MACHINE');
const AGENT_URL_FILE = need('NATTER_AGENT_URL_FILE');
const AGENT_CONTROL = need('NATTER_AGENT_CONTROL');

const run = await startBrowser({ screenshotPrefix: 'restart-' });
const operator = await run.newContext();
const machineUser = await run.newContext();
const check = (name, fn) => run.check(name, fn);

/** Waits for a machine-user URL other than `previous` in the agent's URL file. */
async function nextAgentUrl(previous) {
  const deadline = Date.now() + 10000;
  while (Date.now() < deadline) {
    const text = (await fs.readFile(AGENT_URL_FILE, 'utf8').catch(() => '')).trim();
    if (text && text !== previous) return text;
    await sleep(100);
  }
  throw new Error(`no new machine-user URL in ${AGENT_URL_FILE} after 10 s`);
}

/** Asks the test to make the agent `fail` or `open` from now on; waits until it is so. */
async function agentWill(what) {
  await fs.writeFile(AGENT_CONTROL, what);
  const want = what === 'fail' ? 'failing' : 'opening';
  const deadline = Date.now() + 10000;
  while (Date.now() < deadline) {
    if ((await fs.readFile(AGENT_CONTROL, 'utf8').catch(() => '')).trim() === want) return;
    await sleep(50);
  }
  throw new Error(`the test did not confirm "${want}"`);
}

const agentState = (page) => page.locator('#agent').getAttribute('data-state');

async function waitForAgent(page, state) {
  await waitFor(page, (s) => document.querySelector('#agent').dataset.state === s, state, TIMEOUT,
    async () => `agent state ${await agentState(page)}, expected ${state}; says ${JSON.stringify(await page.locator('#agent').textContent())}`);
}

async function openAsMachineUser(url) {
  const page = await machineUser.newPage();
  await page.goto(url);
  await waitForTitle(page, MACHINE);
  await page.locator('#text').waitFor({ state: 'visible' });
  return page;
}

// ---------------------------------------------------------------------------------------------
const chatPage = await operator.newPage();
let opWindow;
let muPage;
let url = '';

await check('a chat starts and the window says it opened on the machine; no Restart while it runs', async () => {
  await login(chatPage, BASE, OPERATOR, PASSWORD);
  const link = rowOf(chatPage, MACHINE).locator('button.machine-link');
  await link.waitFor({ state: 'visible' });
  [opWindow] = await Promise.all([operator.waitForEvent('page'), link.click()]);
  await waitForTitle(opWindow, MACHINE);
  url = await nextAgentUrl('');
  muPage = await openAsMachineUser(url);
  await waitForAgent(opWindow, 'opened');
  assert(await opWindow.locator('#restart').isHidden(), 'Restart is offered for a chat in progress');
});

await check('ended by the machine user: Restart chat asks the agent, the window says "opened"', async () => {
  await muPage.locator('#end').click();
  await opWindow.locator('#ended-note').waitFor({ state: 'visible' });
  const restart = opWindow.locator('#restart');
  await restart.waitFor({ state: 'visible' });
  assert((await restart.textContent()) === 'Restart chat', `button says ${await restart.textContent()}`);
  await restart.click();
  url = await nextAgentUrl(url); // the agent was asked again, with a fresh link
  await waitForAgent(opWindow, 'opened');
  await opWindow.locator('#ended-note').waitFor({ state: 'hidden' });
  assert(await restart.isHidden(), 'Restart still offered after the restart');
  await muPage.close();
  muPage = await openAsMachineUser(url);
  const box = muPage.locator('#text');
  await box.fill('back again');
  await box.press('Enter');
  await waitForDelivered(opWindow, 'back again', 'operator after the restart');
});

await check('when the agent cannot open the window, the operator sees "failed" and can ask again', async () => {
  await agentWill('fail');
  await opWindow.locator('#end').click();
  await opWindow.locator('#restart').waitFor({ state: 'visible' });
  await opWindow.locator('#restart').click();
  await waitForAgent(opWindow, 'failed');
  const says = await opWindow.locator('#agent').textContent();
  assert(/could not be opened/.test(says), `the window says ${JSON.stringify(says)}`);
  const again = opWindow.locator('#restart');
  await again.waitFor({ state: 'visible' });
  assert((await again.textContent()) === 'Ask the machine again', `button says ${await again.textContent()}`);
  await agentWill('open');
  await again.click();
  url = await nextAgentUrl(url);
  await waitForAgent(opWindow, 'opened');
  await muPage.close();
  muPage = await openAsMachineUser(url);
  const box = muPage.locator('#text');
  await box.fill('third time');
  await box.press('Enter');
  await waitForDelivered(opWindow, 'third time', 'operator after asking again');
});

await run.finish();
