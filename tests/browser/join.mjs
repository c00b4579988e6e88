// Browser checks of a chat window joining a long session (issue 11, item 6): a session with
// 10k messages opened in a chat window shows every one of them, once, in order, then a live
// message after them; a second window of the same browser (its history from the shared
// worker) shows the same. And the UI's fetch-based event stream reader (event-stream.js)
// behaves as EventSource: the standard's parsing, reconnecting with Last-Event-ID after
// `retry`, giving up on an HTTP error.
//
//   node tests/browser/join.mjs
//
// Environment (and those of harness.mjs):
//   NATTER_URL        base URL of the gateway
//   NATTER_OPERATOR   an existing operator's user name
//   NATTER_PASSWORD   ... and password
//   NATTER_MACHINE    a machine ID with a logged-on user (the chat is started with it)
//   NATTER_HISTORY    optional: how many messages (default 10000)
import { assert, login, need, startBrowser, waitFor } from './harness.mjs';

const BASE = need('NATTER_URL').replace(/\/+$/, '');
const OPERATOR = need('NATTER_OPERATOR');
const PASSWORD = need('NATTER_PASSWORD');
const MACHINE = need('NATTER_MACHINE');
const HISTORY = Number(process.env.NATTER_HISTORY || 10000);
/** How long the history may take to show (a debug build on a busy CI machine). */
const HISTORY_TIMEOUT = 120000;

// The Chat page asks who is logged in before the login (a 401 the console reports).
const run = await startBrowser({ screenshotPrefix: 'join-', ignoreConsole: (t) => t.startsWith('Failed to load resource') });
const operator = await run.newContext();
const check = (name, fn) => run.check(name, fn);

let cookie = '';
let sessionId = '';
/** [seq, text] of every message sent, in seq order. */
let sent = [];
const tag = Date.now().toString(36);

/** POSTs JSON as the operator's browser would (cookie, CSRF header); resolves to the answer. */
async function post(path, body) {
  const res = await fetch(BASE + path, {
    method: 'POST',
    headers: { Cookie: cookie, 'X-Natter': '1', 'Content-Type': 'application/json' },
    body: JSON.stringify(body || {}),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`POST ${path}: ${res.status} ${text}`);
  return JSON.parse(text);
}

/** Every received message the window shows, in the order shown: [seq, text]. */
function shown(page) {
  return page.$$eval('#transcript .msg[data-seq]',
    (els) => els.map((e) => [Number(e.dataset.seq), e.querySelector('.text').textContent]));
}

/** Fails unless `page` shows exactly `expected` ([seq, text] in seq order). */
async function assertShows(page, expected, what) {
  const got = await shown(page);
  const seqs = new Set(got.map(([seq]) => seq));
  assert(seqs.size === got.length, `${what}: ${got.length - seqs.size} messages shown twice`);
  for (let i = 1; i < got.length; i++) {
    assert(got[i - 1][0] < got[i][0], `${what}: message ${i} (seq ${got[i][0]}) shown after seq ${got[i - 1][0]}`);
  }
  const missing = expected.filter(([seq]) => !seqs.has(seq));
  assert(!missing.length, `${what}: ${missing.length} of ${expected.length} messages missing, first ${JSON.stringify(missing[0])}`);
  assert(got.length === expected.length, `${what}: ${got.length} messages shown, ${expected.length} sent`);
  for (let i = 0; i < got.length; i++) {
    assert(got[i][1] === expected[i][1], `${what}: seq ${got[i][0]} shows ${JSON.stringify(got[i][1])}, sent ${JSON.stringify(expected[i][1])}`);
  }
}

async function waitForCount(page, n, what) {
  await waitFor(page, (k) => document.querySelectorAll('#transcript .msg[data-seq]').length >= k, n, HISTORY_TIMEOUT,
    async () => `${what}: ${(await shown(page)).length} of ${n} messages shown`);
}

const chatPage = await operator.newPage();
let first;

await check(`a chat gets ${HISTORY} messages through the API`, async () => {
  await login(chatPage, BASE, OPERATOR, PASSWORD);
  const c = (await operator.cookies(BASE)).find((x) => x.name === 'natter_op');
  assert(c, 'no login cookie after logging in');
  cookie = `natter_op=${c.value}`;
  sessionId = (await post('/api/chats', { machine: MACHINE })).session.id;
  // 32 requests in flight: as many browsers' sends at once.
  let next = 0;
  const path = `/api/sessions/${encodeURIComponent(sessionId)}/messages`;
  const worker = async () => {
    while (next < HISTORY) {
      const k = next++;
      const text = `history ${k} of ${tag}`;
      const r = await post(path, { id: `h-${tag}-${k}`, text });
      sent.push([r.seq, text]);
    }
  };
  await Promise.all(Array.from({ length: 32 }, worker));
  sent.sort((a, b) => a[0] - b[0]);
  assert(sent.length === HISTORY, `${sent.length} of ${HISTORY} sends answered`);
});

/** Installed before the page's scripts: the seqs of the messages in the first frame that shows any. */
function recordFirstFrame() {
  const tick = () => {
    const msgs = document.querySelectorAll('#transcript .msg[data-seq]');
    if (msgs.length) window.__firstFrame = [...msgs].map((m) => Number(m.dataset.seq));
    else requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}

await check(`a chat window opened on it shows the newest messages first, then all ${HISTORY}, once, in seq order`, async () => {
  first = await operator.newPage();
  await first.addInitScript(recordFirstFrame);
  await first.goto(`${BASE}/chat/${encodeURIComponent(sessionId)}`);
  await waitForCount(first, HISTORY, 'the new window');
  await assertShows(first, sent, 'the new window');
  // The reader sees the end of the chat first: the first frame with messages holds the newest
  // ones (the window fetched them itself), not the start of the history.
  const firstFrame = await first.evaluate(() => window.__firstFrame);
  const newest = sent[sent.length - 1][0];
  assert(firstFrame.includes(newest), `the first frame shows seqs ${firstFrame[0]}…${firstFrame[firstFrame.length - 1]}, not the newest (${newest})`);
  assert(firstFrame.length < HISTORY, `the first frame already shows all ${firstFrame.length} messages`);
});

await check('a live message shows after the history, once', async () => {
  const text = `live after the history ${tag}`;
  const r = await post(`/api/sessions/${encodeURIComponent(sessionId)}/messages`, { id: `live-${tag}`, text });
  sent.push([r.seq, text]);
  await waitForCount(first, sent.length, 'the live message');
  await assertShows(first, sent, 'after the live message');
  const last = await first.locator('#transcript .msg[data-seq]').last().textContent();
  assert(last.includes(text), `the last message shown is ${JSON.stringify(last)}`);
});

await check('a second window of the same browser shows the same history (from the shared stream), once, in order', async () => {
  const second = await operator.newPage();
  await second.goto(`${BASE}/chat/${encodeURIComponent(sessionId)}`);
  await waitForCount(second, sent.length, 'the second window');
  await assertShows(second, sent, 'the second window');
  await second.close();
});

await check('the event stream reader parses as EventSource, resumes with Last-Event-ID, gives up on an HTTP error', async () => {
  const page = await operator.newPage();
  await page.goto(`${BASE}/chat/${encodeURIComponent(sessionId)}`);
  const asked = []; // the Last-Event-ID of each request
  await page.route('**/test-stream', (route) => {
    const headers = route.request().headers();
    asked.push(headers['last-event-id'] ?? null);
    const sse = { status: 200, contentType: 'text/event-stream' };
    if (asked.length === 1) {
      // CRLF and LF lines, a comment, a two-line data, an event without data, and an
      // unfinished event at the end (dropped, as the standard says).
      return route.fulfill({ ...sse, body: 'retry: 50\r\n: keep-alive\r\nid: 1\r\ndata: {"a":1}\r\n\r\nid: 2\nevent: hello\ndata: line1\ndata:line2\n\nevent: nothing\n\nid: 9\ndata: unfinished' });
    }
    if (asked.length === 2) return route.fulfill({ ...sse, body: 'id: 3\ndata: x\n\n' });
    return route.fulfill({ status: 404, contentType: 'application/json', body: '{"error":"not_found","message":"gone"}' });
  });
  const seen = await page.evaluate(async () => {
    const { EventStream, CLOSED } = await import('/static/event-stream.js');
    return new Promise((resolve) => {
      const log = [];
      const es = new EventStream('/test-stream', {
        events: (list) => { for (const e of list) log.push(['event', e.type, e.data, e.id]); },
        error: () => {
          log.push(['error', es.readyState]);
          if (es.readyState === CLOSED) resolve(log);
        },
      });
    });
  });
  const want = [
    ['event', 'message', '{"a":1}', '1'],
    ['event', 'hello', 'line1\nline2', '2'],
    ['error', 0],
    ['event', 'message', 'x', '3'],
    ['error', 0],
    ['error', 2],
  ];
  assert(JSON.stringify(seen) === JSON.stringify(want), `the reader saw ${JSON.stringify(seen)}, expected ${JSON.stringify(want)}`);
  assert(JSON.stringify(asked) === JSON.stringify([null, '2', '3']), `Last-Event-ID of the requests: ${JSON.stringify(asked)}`);
  await page.close();
});

await check('no script errors in the pages', async () => {
  assert(!run.pageErrors.length, run.pageErrors.join('\n'));
});

await run.finish();
