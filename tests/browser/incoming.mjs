// Browser checks of chats between operators (issue 11, items 1 and 2): the Chat page's live list
// of operators online (changing with the filter and with a logout), starting a chat by clicking
// a name, the incoming-chat popup of the operator asked (kept over a reload), the browser
// notification while that page is in the background (permission asked only on a click), the
// tone of the play_tone option, and answering from the notification and from the popup. Two
// operators, two browser profiles.
//
// `window.Notification` is wrapped in bob's pages before they load: the real permission is
// used, and each notification shown is recorded in window.__notifications (headless chromium
// displays none). Bob's Chat page really loses focus: focus emulation is turned off for it and
// another of his pages is brought to the front.
//
//   node tests/browser/incoming.mjs
//
// Environment (and those of harness.mjs):
//   NATTER_URL             base URL of the gateway
//   NATTER_OPERATOR        alice: an operator who sees every machine
//   NATTER_PASSWORD        ... and password
//   NATTER_OTHER_OPERATOR  bob: an operator whose scope is NATTER_OTHER_SCOPE
//   NATTER_OTHER_PASSWORD  ... and password
//   NATTER_OTHER_SCOPE     bob's scope, a group (e.g. sales.acme); some machine lies outside it
import {
  assert, login, need, startBrowser, waitFor, waitForDelivered, waitForTitle, TIMEOUT, send,
} from './harness.mjs';

const BASE = need('NATTER_URL').replace(/\/+$/, '');
const ALICE = need('NATTER_OPERATOR');
const ALICE_PASSWORD = need('NATTER_PASSWORD');
const BOB = need('NATTER_OTHER_OPERATOR');
const BOB_PASSWORD = need('NATTER_OTHER_PASSWORD');
const BOB_SCOPE = need('NATTER_OTHER_SCOPE');

const run = await startBrowser({ screenshotPrefix: 'incoming-' });
const alice = await run.newContext();
const bob = await run.newContext();
const check = (name, fn) => run.check(name, fn);

await bob.addInitScript(() => {
  // An AudioContext that makes no sound and counts the tones started in window.__tones.
  window.__tones = 0;
  const param = { value: 0, setValueAtTime() {}, exponentialRampToValueAtTime() {} };
  window.AudioContext = class {
    constructor() { this.currentTime = 0; this.destination = {}; }
    createOscillator() {
      return { frequency: { ...param }, connect: (n) => n, start: () => { window.__tones++; }, stop() {} };
    }
    createGain() { return { gain: { ...param }, connect: (n) => n }; }
  };
  const Real = window.Notification;
  window.__notifications = [];
  window.__permissionRequests = 0;
  window.Notification = class {
    constructor(title, options = {}) {
      Object.assign(this, { title, body: options.body, tag: options.tag, closed: false, onclick: null, onclose: null });
      window.__notifications.push(this);
    }
    close() {
      if (this.closed) return;
      this.closed = true;
      if (this.onclose) this.onclose();
    }
    static get permission() { return Real.permission; }
    static requestPermission(...args) {
      window.__permissionRequests++;
      return Real.requestPermission(...args);
    }
  };
});

/** The names in the Chat page's "Operators online". */
const operatorNames = (page) => page.$$eval('#operators .operator-link', (els) => els.map((e) => e.textContent));

async function waitForOperators(page, want, what) {
  await waitFor(page,
    (w) => JSON.stringify([...document.querySelectorAll('#operators .operator-link')].map((e) => e.textContent)) === JSON.stringify(w)
      && document.querySelector('#operators-empty').textContent !== 'Loading…',
    want, TIMEOUT,
    async () => `${what}: operators online ${JSON.stringify(await operatorNames(page))}, expected ${JSON.stringify(want)}`);
}

async function setFilter(page, text) {
  await page.locator('#filter').fill(text);
}

/** The texts of the popup's waiting chats. */
const incomingTexts = (page) => page.$$eval('#incoming:not([hidden]) #incoming-list .incoming-text', (els) => els.map((e) => e.textContent));

async function waitForIncoming(page, want, what) {
  await waitFor(page,
    (w) => JSON.stringify([...document.querySelectorAll('#incoming:not([hidden]) #incoming-list .incoming-text')].map((e) => e.textContent)) === JSON.stringify(w),
    want, TIMEOUT,
    async () => `${what}: incoming chats ${JSON.stringify(await incomingTexts(page))}, expected ${JSON.stringify(want)}`);
}

const notifications = (page) => page.evaluate(() => window.__notifications.map((n) => ({ title: n.title, body: n.body, closed: n.closed })));

/** Puts bob's Chat page in the background: a new tab of his gets the focus. */
async function toBackground(chatPage) {
  // Headless chromium tells every page it has the focus; for this one, the truth (set again
  // each time: a navigation to another site may turn the emulation back on).
  await bobPageCdp.send('Emulation.setFocusEmulationEnabled', { enabled: false });
  const elsewhere = await bob.newPage();
  await elsewhere.goto(BASE + '/healthz');
  await elsewhere.bringToFront();
  await waitFor(chatPage, () => !document.hasFocus(), null, TIMEOUT, async () => 'the Chat page still has the focus');
}

// ---------------------------------------------------------------------------------------------
const alicePage = await alice.newPage();
const bobPage = await bob.newPage();
const bobPageCdp = await bob.newCDPSession(bobPage);
let aliceName;
let bobName;
let aliceWindow;
let bobWindow;

await check(`alice's list shows bob (scope ${BOB_SCOPE}) once her filter shows only his machines`, async () => {
  await login(alicePage, BASE, ALICE, ALICE_PASSWORD);
  aliceName = await alicePage.locator('#me-name').textContent();
  await setFilter(alicePage, BOB_SCOPE);
  await waitForOperators(alicePage, [], 'before bob logs on');
  await bobPage.bringToFront();
  await login(bobPage, BASE, BOB, BOB_PASSWORD);
  bobName = await bobPage.locator('#me-name').textContent();
  await waitForOperators(alicePage, [bobName], 'alice, after bob logged on');
  await waitForOperators(bobPage, [aliceName], 'bob (alice sees every machine)');
});

await check('a filter showing machines outside bob\'s scope drops him from the list; back again, he returns', async () => {
  await setFilter(alicePage, '');
  await waitForOperators(alicePage, [], 'alice, filter cleared (machines outside bob\'s scope)');
  assert((await alicePage.locator('#operators-empty').textContent()).startsWith('No other operator'),
    'an empty list does not say so');
  await setFilter(alicePage, BOB_SCOPE);
  await waitForOperators(alicePage, [bobName], `alice, filter ${BOB_SCOPE} again`);
});

await check('notifications are asked for only on a click of "Notify me of incoming chats"; bob turns the tone on', async () => {
  const button = bobPage.locator('#notify');
  await button.waitFor({ state: 'visible' });
  assert((await bobPage.evaluate(() => window.__permissionRequests)) === 0, 'the page asked for notifications by itself');
  await bob.grantPermissions(['notifications'], { origin: BASE }); // what the user answers
  await button.click();
  await button.waitFor({ state: 'hidden' });
  assert((await bobPage.evaluate(() => window.__permissionRequests)) === 1, 'the click did not ask');
  const status = await bobPage.locator('#notify-status').textContent();
  assert(status.includes('are on'), `notify status: ${status}`);
  // And a tone for each incoming chat (bob's play_tone option).
  await bobPage.locator('#options summary').click();
  await bobPage.locator('#options-form input[name=play_tone]').setChecked(true);
  await waitFor(bobPage, () => document.querySelector('#options-status').textContent === 'Saved', null, TIMEOUT,
    async () => `options status: ${await bobPage.locator('#options-status').textContent()}`);
});

await check('alice clicks bob: her chat window is titled with his name and waits for his answer', async () => {
  await toBackground(bobPage);
  const [popup] = await Promise.all([
    alice.waitForEvent('page'),
    alicePage.locator('#operators .operator-link', { hasText: bobName }).click(),
  ]);
  aliceWindow = popup;
  await waitForTitle(aliceWindow, `Chat with ${bobName}`);
  const waiting = aliceWindow.locator('#waiting');
  await waiting.waitFor({ state: 'visible' });
  const text = await waiting.textContent();
  assert(text === `Waiting for ${bobName} to answer…`, `waiting line: ${JSON.stringify(text)}`);
  assert(await aliceWindow.locator('#agent').isHidden(), 'a chat between operators shows a machine agent\'s status');
});

await check("bob's Chat page shows the popup, and a notification since the page is in the background", async () => {
  await waitForIncoming(bobPage, [`${aliceName} wants to chat`], 'bob');
  const title = await bobPage.title();
  assert(title.startsWith('(1) '), `the Chat page's title does not count the waiting chat: ${title}`);
  await waitFor(bobPage, () => window.__notifications.length > 0, null, TIMEOUT, async () => 'no notification');
  const shown = await notifications(bobPage);
  assert(shown.length === 1, `expected one notification: ${JSON.stringify(shown)}`);
  assert(shown[0].title === 'Incoming chat' && shown[0].body === `${aliceName} wants to chat`,
    `notification: ${JSON.stringify(shown[0])}`);
  const tones = await bobPage.evaluate(() => window.__tones);
  assert(tones === 1, `expected one tone for the incoming chat, got ${tones}`);
});

await check("bob answers from the notification: his window opens, the popup goes, both talk", async () => {
  const session = chatIdOf(aliceWindow);
  const [popup] = await Promise.all([
    bob.waitForEvent('page'),
    bobPage.evaluate(() => window.__notifications.find((n) => !n.closed).onclick()),
  ]);
  bobWindow = popup;
  await waitForTitle(bobWindow, `Chat with ${aliceName}`);
  assert(chatIdOf(bobWindow) === session, `bob's window shows ${bobWindow.url()}, not the chat ${session}`);
  await waitForIncoming(bobPage, [], 'bob, after answering');
  assert(!(await bobPage.title()).startsWith('('), `the title still counts: ${await bobPage.title()}`);
  assert((await notifications(bobPage)).every((n) => n.closed), 'the notification stays after answering');
  await aliceWindow.locator('#waiting').waitFor({ state: 'hidden' });
  await bobWindow.locator('#text').waitFor({ state: 'visible' });
  await send(aliceWindow, 'hello bob');
  await waitForDelivered(bobWindow, 'hello bob', 'bob');
  await send(bobWindow, 'hi alice');
  await waitForDelivered(aliceWindow, 'hi alice', 'alice');
  const members = await aliceWindow.locator('#members').textContent();
  assert(members.includes(aliceName) && members.includes(bobName), `members: ${members}`);
});

await check('a new chat waits over a reload of bob\'s Chat page; he answers from the popup', async () => {
  await aliceWindow.locator('#end').click();
  await aliceWindow.locator('#ended-note').waitFor({ state: 'visible' });
  const [popup] = await Promise.all([
    alice.waitForEvent('page'),
    alicePage.locator('#operators .operator-link', { hasText: bobName }).click(),
  ]);
  aliceWindow = popup;
  await waitForTitle(aliceWindow, `Chat with ${bobName}`);
  const session = chatIdOf(aliceWindow);
  await waitForIncoming(bobPage, [`${aliceName} wants to chat`], 'bob, second chat');
  await bobPage.reload();
  await bobPage.locator('#me-name').waitFor({ state: 'visible' });
  await waitForIncoming(bobPage, [`${aliceName} wants to chat`], 'bob, after a reload');
  const [answered] = await Promise.all([
    bob.waitForEvent('page'),
    bobPage.locator('#incoming-list .incoming-answer').first().click(),
  ]);
  await waitForTitle(answered, `Chat with ${aliceName}`);
  assert(chatIdOf(answered) === session, `bob's window shows ${answered.url()}, not the new chat ${session}`);
  await waitForIncoming(bobPage, [], 'bob, after answering from the popup');
  await send(answered, 'answered from the popup');
  await waitForDelivered(aliceWindow, 'answered from the popup', 'alice');
});

await check("bob logs out: he leaves alice's list", async () => {
  await bobPage.bringToFront();
  await bobPage.locator('#logout').click();
  await bobPage.locator('#login').waitFor({ state: 'visible' });
  await waitForOperators(alicePage, [], 'alice, after bob logged out');
});

/** The session a chat window (at /chat/{id}) shows. */
function chatIdOf(page) {
  return decodeURIComponent(new URL(page.url()).pathname.split('/').pop());
}

await run.finish();
