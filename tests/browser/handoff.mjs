// Browser checks of handing a chat on and saving its transcript (issue 12, items 3 and 4): in
// alice's chat window with a machine, "Hand over" lists bob (on his Chat page); clicking him
// shows "Waiting for bob to answer…" and "alice handed the chat to bob" in her transcript; bob's
// Chat page pops the chat up, he answers, and his window shows the whole chat; the window's
// "Save the transcript" links give the text and JSON of what the windows showed; after alice's
// browser is closed and started again, her Chat page offers the chat again (B7).
//
//   node tests/browser/handoff.mjs
//
// Environment (and those of harness.mjs):
//   NATTER_URL             base URL of the gateway
//   NATTER_OPERATOR        alice, NATTER_PASSWORD her password
//   NATTER_OTHER_OPERATOR  bob, NATTER_OTHER_PASSWORD his password (both see NATTER_MACHINE)
//   NATTER_MACHINE         a machine with a user logged on
import {
  assert, deliveredTexts, login, need, rowOf, startBrowser, waitFor, waitForDelivered, waitForTitle, TIMEOUT, send,
} from './harness.mjs';

const BASE = need('NATTER_URL').replace(/\/+$/, '');
const MACHINE = need('NATTER_MACHINE');
const run = await startBrowser({ screenshotPrefix: 'handoff-' });
const alice = await run.newContext();
const bob = await run.newContext();
const check = (name, fn) => run.check(name, fn);

const alicePage = await alice.newPage();
const bobPage = await bob.newPage();
let aliceWindow;
let bobWindow;
let bobName;

await check('alice chats with the machine; bob is on his Chat page', async () => {
  await login(bobPage, BASE, need('NATTER_OTHER_OPERATOR'), need('NATTER_OTHER_PASSWORD'));
  bobName = await bobPage.locator('#me-name').textContent();
  await login(alicePage, BASE, need('NATTER_OPERATOR'), need('NATTER_PASSWORD'));
  const link = rowOf(alicePage, MACHINE).locator('button.machine-link');
  const [popup] = await Promise.all([alice.waitForEvent('page'), link.click()]);
  aliceWindow = popup;
  await waitForTitle(aliceWindow, MACHINE);
  await send(aliceWindow, 'first line from alice');
  await waitForDelivered(aliceWindow, 'first line from alice', 'alice');
});

await check('"Hand over" lists bob; clicking him hands the chat on and says so', async () => {
  await aliceWindow.locator('#handoff-open').click();
  const to = aliceWindow.locator('#handoff-list .handoff-to', { hasText: bobName });
  await to.waitFor({ state: 'visible', timeout: TIMEOUT });
  await to.click();
  await aliceWindow.locator('#handoff').waitFor({ state: 'hidden' });
  await waitFor(aliceWindow, (n) => document.querySelector('#waiting').textContent === `Waiting for ${n} to answer…`,
    bobName, TIMEOUT, async () => `waiting line: ${await aliceWindow.locator('#waiting').textContent()}`);
  await waitFor(aliceWindow, (n) => [...document.querySelectorAll('#transcript .sys-text')]
    .some((e) => e.textContent.endsWith(`handed the chat to ${n}`)), bobName, TIMEOUT, async () => 'no hand-off line');
});

await check("bob's Chat page pops it up; he answers and sees the whole chat", async () => {
  const item = bobPage.locator('#incoming-list .incoming-item');
  await item.waitFor({ state: 'visible', timeout: TIMEOUT });
  const said = await item.locator('.incoming-text').textContent();
  assert(said.endsWith(`hands you the chat with ${MACHINE}`), `popup: ${JSON.stringify(said)}`);
  const [popup] = await Promise.all([bob.waitForEvent('page'), item.locator('.incoming-answer').click()]);
  bobWindow = popup;
  await waitForTitle(bobWindow, MACHINE);
  await waitForDelivered(bobWindow, 'first line from alice', 'bob');
  await send(bobWindow, 'bob here, taking over');
  await waitForDelivered(aliceWindow, 'bob here, taking over', 'alice');
  await aliceWindow.locator('#waiting').waitFor({ state: 'hidden' });
});

await check('the transcript links give what the windows showed, as text and JSON', async () => {
  const shown = await deliveredTexts(aliceWindow);
  const text = await aliceWindow.evaluate(async () => (await fetch(document.querySelector('#save-text').href)).text());
  let at = -1;
  for (const line of shown) {
    const next = text.indexOf(line, at + 1);
    assert(next > at, `the text transcript lacks ${JSON.stringify(line)} in order:\n${text}`);
    at = next;
  }
  assert(text.includes(`handed the chat to ${bobName}`), `no hand-off in the transcript:\n${text}`);
  const doc = await aliceWindow.evaluate(async () => (await fetch(document.querySelector('#save-json').href)).json());
  const texts = doc.events.filter((e) => e.type === 'message').map((e) => e.text);
  assert(JSON.stringify(texts) === JSON.stringify(shown), `JSON messages ${JSON.stringify(texts)} ≠ shown ${JSON.stringify(shown)}`);
  const bobShown = await deliveredTexts(bobWindow);
  assert(JSON.stringify(bobShown) === JSON.stringify(shown), `bob's window ${JSON.stringify(bobShown)} ≠ alice's`);
});

await check("alice's browser is closed and started again: her Chat page offers the chat, one click shows it whole", async () => {
  const shown = await deliveredTexts(aliceWindow);
  await alice.close();
  const again = await run.newContext();
  const page = await again.newPage();
  await login(page, BASE, need('NATTER_OPERATOR'), need('NATTER_PASSWORD'));
  const item = page.locator('#open-chats-list .open-chat-open', { hasText: MACHINE });
  await item.waitFor({ state: 'visible', timeout: TIMEOUT });
  const [popup] = await Promise.all([again.waitForEvent('page'), item.click()]);
  await waitForTitle(popup, MACHINE);
  await waitForDelivered(popup, shown[shown.length - 1], 'the window opened again');
  const back = await deliveredTexts(popup);
  assert(JSON.stringify(back) === JSON.stringify(shown), `opened again: ${JSON.stringify(back)} ≠ ${JSON.stringify(shown)}`);
  // Forget takes it off the list, for good.
  await page.locator('#open-chats-list .open-chat-forget').first().click();
  await page.locator('#open-chats').waitFor({ state: 'hidden' });
  await page.reload();
  await page.locator('#machines tr').first().waitFor({ state: 'visible', timeout: TIMEOUT });
  assert(await page.locator('#open-chats').isHidden(), 'a forgotten chat is offered again after a reload');
});

await run.finish();
