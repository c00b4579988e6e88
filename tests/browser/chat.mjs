// Browser checks of Natter's chat windows against a running gateway.
//
//   node tests/browser/chat.mjs
//
// Environment (and those of harness.mjs):
//   NATTER_URL             base URL of the gateway, e.g. http://127.0.0.1:8080
//   NATTER_OPERATOR        an existing operator's user name
//   NATTER_PASSWORD        ... and password
//   NATTER_MACHINE         a machine ID with a logged-on user
//   NATTER_AGENT_URL_FILE  file into which a test agent writes the machine-user URL it was asked to open
//   NATTER_MACHINES        optional: comma-separated machine IDs with logged-on users (>= 10 runs check 5)
import fs from 'node:fs/promises';
import {
  assert, deliveredTexts, list, login, need, rowOf, sleep, startBrowser, waitFor, waitForDelivered,
  waitForTitle,
} from './harness.mjs';

const BASE = need('NATTER_URL').replace(/\/+$/, '');
const OPERATOR = need('NATTER_OPERATOR');
const PASSWORD = need('NATTER_PASSWORD');
const MACHINE = need('NATTER_MACHINE');
const AGENT_URL_FILE = need('NATTER_AGENT_URL_FILE');
const MACHINES = list(process.env.NATTER_MACHINES);

const run = await startBrowser();
const operator = await run.newContext();    // the technician's browser profile
const machineUser = await run.newContext(); // the person at the managed machine
const check = (name, fn) => run.check(name, fn);

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

// ---------------------------------------------------------------------------------------------
const chatPage = await operator.newPage();
let opWindow;
let muPage;
let sessionId; // the session of the first chat

await check('login on / shows the machine list with NATTER_MACHINE', async () => {
  await login(chatPage, BASE, OPERATOR, PASSWORD);
  await rowOf(chatPage, MACHINE).locator('button.machine-link').waitFor({ state: 'visible' });
});

await check('clicking the machine ID opens a new window titled with the machine ID', async () => {
  await fs.writeFile(AGENT_URL_FILE, '').catch(() => {});
  const before = chatPage.url();
  const pagesBefore = operator.pages().length;
  opWindow = await startChat(chatPage, MACHINE);
  assert(opWindow !== chatPage, 'the chat opened in the Chat page itself');
  assert(operator.pages().length === pagesBefore + 1, 'expected exactly one new window');
  const chatPath = new URL(opWindow.url()).pathname;
  assert(chatPath.startsWith('/chat/'), `chat window is at ${opWindow.url()}`);
  sessionId = decodeURIComponent(chatPath.slice('/chat/'.length));
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

await check('the events worker runs as a module SharedWorker under the page\'s CSP', async () => {
  // A second port to the very worker the chat windows use: it answers only if it loaded.
  const answer = await opWindow.evaluate((id) => new Promise((resolve) => {
    const w = new SharedWorker('/static/events-worker.js', { type: 'module', name: 'natter-events-module' });
    w.addEventListener('error', () => resolve('the worker failed to load'));
    w.port.onmessage = (e) => resolve(e.data && e.data.type);
    w.port.postMessage({ subscribe: id });
    setTimeout(() => resolve('no answer within 5 s'), 5000);
  }), sessionId);
  assert(['hello', 'events', 'status'].includes(answer), `the worker: ${answer}`);
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
  run.skip('10 windows');
}


await check('a chat window beyond the shared stream\'s 32 sessions says so, and receives once one closes', async () => {
  // The hub of events-hub.js, already carrying 32 other sessions, stands in for the SharedWorker;
  // its event stream is a fake that says hello. 33 real windows would be too heavy for CI.
  const page = await operator.newPage();
  await page.addInitScript(fakeFullHub);
  await page.goto(`${BASE}/chat/${encodeURIComponent(sessionId)}`);
  await waitForTitle(page, MACHINE);
  const banner = page.locator('#banner');
  await waitFor(page, () => /Too many chat windows open: close one/.test(document.querySelector('#banner')?.textContent || ''),
    null, 5000, async () => `banner shows ${JSON.stringify(await banner.textContent())}, hidden: ${await banner.isHidden()}`);
  assert(await banner.isVisible(), 'the message is not visible');

  await page.evaluate(() => window.__natterOthers[0].postMessage({ unsubscribe: 'other0' }));
  await banner.waitFor({ state: 'hidden', timeout: 5000 })
    .catch(async () => { throw new Error(`the banner stays: ${JSON.stringify(await banner.textContent())}`); });
  const text = `after the limit ${Date.now().toString(36)}`;
  await page.evaluate(([id, t]) => {
    const streams = window.__natterStreams;
    const es = streams[streams.length - 1];
    if (!es.url.includes(encodeURIComponent(id))) throw new Error(`the stream ${es.url} does not carry the session`);
    const ev = { seq: 1e12, session: id, type: 'message', at: Date.now(), text: t, from: { kind: 'machine_user', id: 'x', name: 'x' } };
    es.on.events([{ type: 'message', data: JSON.stringify(ev), id: String(ev.seq) }]);
  }, [sessionId, text]);
  await waitForDelivered(page, text, 'the window let onto the stream');
  await page.close();
});

/** Runs in the page before its scripts: a SharedWorker whose hub is full with other sessions. */
function fakeFullHub() {
  window.__natterStreams = [];
  // As event-stream.js's EventStream: `on.events` gets a chunk's events.
  class FakeEventStream {
    constructor(url, on) {
      this.url = url;
      this.on = on;
      this.readyState = 0;
      window.__natterStreams.push(this);
      setTimeout(() => {
        this.readyState = 1;
        const hello = { server_time: Date.now(), retention_secs: 3600 };
        on.events([{ type: 'hello', data: JSON.stringify(hello), id: '' }]);
      }, 10);
    }
    close() { this.readyState = 2; }
  }
  window.SharedWorker = class extends EventTarget {
    constructor() {
      super();
      const channel = new MessageChannel();
      this.port = channel.port2;
      import('/static/events-hub.js').then(({ createEventHub, MAX_SESSIONS }) => {
        const hub = createEventHub({ EventStream: FakeEventStream });
        window.__natterOthers = [];
        for (let i = 0; i < MAX_SESSIONS; i++) {
          const other = new MessageChannel();
          hub.connect(other.port1);
          other.port2.postMessage({ subscribe: `other${i}` });
          window.__natterOthers.push(other.port2);
        }
        // The window's subscribe, queued on its port meanwhile, comes after the others'.
        setTimeout(() => hub.connect(channel.port1), 50);
      });
    }
  };
}

await run.finish();
