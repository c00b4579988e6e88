// Browser checks of the operator's machine list (F10, F11) against a running gateway: live
// check-in status icons with screen-reader labels, the legend, the Quick View, the scopes and the
// Machine ID / Group ID filter.
//
//   node tests/browser/machines.mjs
//
// Environment:
//   NATTER_URL              base URL of the gateway, e.g. http://127.0.0.1:8080
//   NATTER_OPERATOR         an existing operator's user name
//   NATTER_PASSWORD         ... and password
//   NATTER_EXPECT_MACHINES  optional: comma-separated machine IDs the operator must see
//                           (without it, at least one machine must be listed)
//   NATTER_HIDDEN_MACHINES  optional: comma-separated machine IDs the operator must NOT see, anywhere
//                           on the page, nor through GET /api/machines/{id} or POST /api/chats
//   NATTER_STATUS_FILE      optional: a file shared with the harness. Once the list is shown this
//                           script writes `ready` into it, then waits (up to 15 s) for the harness
//                           to write `changed:<machine id>:<new status>` after changing that
//                           machine's status, and checks that the row's icon shows the new status
//                           within 5 s without a page reload. If the script fails before it is
//                           ready, it writes `failed` so the harness need not wait.
//   NATTER_FILTER           optional: a Machine ID / Group ID filter (e.g. `*.sales.*`) to type in;
//                           then exactly the matching expected machines must remain
//
// Prints one line per check (harness.mjs, which also reads NATTER_ARTIFACTS and CHROMIUM).
import fs from 'node:fs/promises';
import { TIMEOUT, assert, list, login, need, rowOf, sleep, startBrowser, waitFor } from './harness.mjs';

const env = process.env;
const STATUS_WAIT = 15000; // for the harness to change a status
const LIVE_WAIT = 5000;    // for the change to show up on the page

const BASE = need('NATTER_URL').replace(/\/+$/, '');
const OPERATOR = need('NATTER_OPERATOR');
const PASSWORD = need('NATTER_PASSWORD');
const EXPECT = list(env.NATTER_EXPECT_MACHINES);
const HIDDEN = list(env.NATTER_HIDDEN_MACHINES);
const STATUS_FILE = env.NATTER_STATUS_FILE || '';
const FILTER = (env.NATTER_FILTER || '').trim();

// The seed's wording for the 8 check-in states (docs/api.md names them).
const LABELS = {
  never_checked_in: 'Agent has never checked in',
  waiting_first_audit: 'Online but waiting for first audit to complete',
  online: 'Agent online',
  user: 'Agent online and user currently logged on',
  idle: 'Agent online and user currently logged on, but user not active for 10 minutes',
  offline: 'Agent is currently offline',
  remote_disabled: 'Agent is online but remote control has been disabled',
  suspended: 'The agent has been suspended',
};

/** The filter rule of docs/api.md: `*` matches any run (dots too); else equal or ends in `.<f>`. */
function filterMatches(pattern, id) {
  const p = pattern.trim().toLowerCase();
  const s = id.toLowerCase();
  if (!p) return true;
  if (!p.includes('*')) return s === p || s.endsWith('.' + p);
  const re = new RegExp('^' + p.split('*').map((x) => x.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*') + '$', 's');
  return re.test(s);
}

let ready = false;
const run = await startBrowser({
  screenshotPrefix: 'machines-',
  // Refused requests (the 404s this script provokes) are logged by the browser: not a page bug.
  ignoreConsole: (text) => text.startsWith('Failed to load resource'),
  // If the script fails before it is ready, tell the harness so it need not wait.
  beforeExit: async () => { if (STATUS_FILE && !ready) await fs.writeFile(STATUS_FILE, 'failed\n'); },
});
const operator = await run.newContext({ viewport: { width: 1280, height: 800 } });
const check = (name, fn) => run.check(name, fn);
const shownIds = (page) => page.$$eval('#machines tr[data-machine]', (trs) => trs.map((t) => t.dataset.machine));

// ---------------------------------------------------------------------------------------------
const page = await operator.newPage();
let loads = 0;
page.on('load', () => { loads++; });

await check('login on / shows the live machine list with the expected machines', async () => {
  await login(page, BASE, OPERATOR, PASSWORD);
  await waitFor(page, () => document.querySelector('#live')?.dataset.state === 'live'
      && document.querySelectorAll('#machines tr[data-machine]').length > 0, null, TIMEOUT,
  async () => `list never became live: indicator ${JSON.stringify(await page.locator('#live').textContent())}, rows ${JSON.stringify(await shownIds(page))}`);
  for (const id of EXPECT) {
    await rowOf(page, id).waitFor({ state: 'visible', timeout: 5000 })
      .catch(async () => { throw new Error(`${id} is not listed; rows: ${JSON.stringify(await shownIds(page))}`); });
  }
  const refresh = await page.locator('#refresh').count();
  assert(refresh === 0, 'there is still a Refresh button: the list should update by itself');
});

if (STATUS_FILE) {
  await fs.writeFile(STATUS_FILE, 'ready\n');
  ready = true;
  await check('a status change shows up live, without reloading the page', async () => {
    await page.evaluate(() => { window.__natterNoReload = true; });
    const loadsBefore = loads;
    let change = '';
    const deadline = Date.now() + STATUS_WAIT;
    while (Date.now() < deadline) {
      const text = (await fs.readFile(STATUS_FILE, 'utf8').catch(() => '')).trim();
      if (text.startsWith('changed:')) { change = text; break; }
      await sleep(100);
    }
    assert(change, `no "changed:<machine>:<status>" in ${STATUS_FILE} after ${STATUS_WAIT / 1000} s`);
    const rest = change.slice('changed:'.length);
    const cut = rest.lastIndexOf(':');
    const id = rest.slice(0, cut);
    const status = rest.slice(cut + 1);
    assert(id && status, `cannot read ${JSON.stringify(change)}`);
    const label = LABELS[status] || null;
    await waitFor(page, ([mid, st, lab]) => {
      const icon = [...document.querySelectorAll('#machines tr[data-machine]')]
        .find((t) => t.dataset.machine === mid)?.querySelector('.status');
      return icon && icon.dataset.status === st && (!lab || icon.getAttribute('aria-label') === lab);
    }, [id, status, label], LIVE_WAIT, async () => {
      const icon = rowOf(page, id).locator('.status');
      if (!(await rowOf(page, id).count())) return `${id} is not listed`;
      return `${id} still shows ${JSON.stringify(await icon.getAttribute('aria-label'))} (${await icon.getAttribute('data-status')}) ${LIVE_WAIT / 1000} s after it changed to ${status}`;
    });
    const state = await page.evaluate(() => ({
      marker: window.__natterNoReload === true,
      navigations: performance.getEntriesByType('navigation').length,
    }));
    assert(state.marker && loads === loadsBefore, 'the page was reloaded');
    assert(state.navigations === 1, `${state.navigations} navigation entries`);
  });
} else {
  run.skip('live status change (no NATTER_STATUS_FILE)');
}

if (HIDDEN.length) {
  await check('machines outside the scope appear nowhere: page, Quick View API, list API, chats', async () => {
    await sleep(500); // let any stray update arrive
    const html = await page.evaluate(() => document.documentElement.outerHTML.toLowerCase());
    for (const id of HIDDEN) {
      const esc = id.toLowerCase().replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      assert(!new RegExp(`(^|[^a-z0-9._-])${esc}($|[^a-z0-9._-])`).test(html), `${id} appears on the page`);
      const r = await page.evaluate(async (mid) => {
        const one = await fetch('/api/machines/' + encodeURIComponent(mid));
        const all = await fetch('/api/machines?filter=' + encodeURIComponent(mid));
        const listed = all.ok ? (await all.json()).some((m) => m.id === mid) : false;
        const chat = await fetch('/api/chats', {
          method: 'POST', headers: { 'Content-Type': 'application/json', 'X-Natter': '1' },
          body: JSON.stringify({ machine: mid }),
        });
        return { one: one.status, all: all.status, listed, chat: chat.status };
      }, id);
      assert(r.one === 404 || r.one === 403, `GET /api/machines/${id} answered ${r.one}`);
      assert(!r.listed, `GET /api/machines?filter=${id} lists it`);
      assert(r.chat === 404 || r.chat === 403, `POST /api/chats for ${id} answered ${r.chat}`);
    }
  });
}

await check('every row has a status icon with an accessible label', async () => {
  const icons = await page.$$eval('#machines tr[data-machine]', (trs) => trs.map((t) => {
    const icon = t.querySelector('.status');
    return {
      id: t.dataset.machine,
      found: !!icon,
      role: icon?.getAttribute('role'),
      label: icon?.getAttribute('aria-label'),
      status: icon?.dataset.status,
      text: icon?.querySelector('.visually-hidden')?.textContent,
      svg: !!icon?.querySelector('svg'),
      focusable: icon?.tabIndex === 0,
    };
  }));
  assert(icons.length > 0, 'no rows');
  for (const i of icons) {
    assert(i.found && i.svg, `${i.id}: no status icon`);
    assert(i.role === 'img', `${i.id}: icon role is ${i.role}`);
    assert(LABELS[i.status], `${i.id}: unknown status ${JSON.stringify(i.status)}`);
    assert(i.label === LABELS[i.status], `${i.id}: aria-label ${JSON.stringify(i.label)} for ${i.status}`);
    assert(i.text === i.label, `${i.id}: screen-reader text ${JSON.stringify(i.text)}`);
    assert(i.focusable, `${i.id}: the icon cannot be reached with the keyboard (Quick View)`);
  }
});

await check('the legend explains 8 pairwise distinct icons in the seed\'s words', async () => {
  const details = page.locator('#legend');
  await details.locator('summary').click();
  assert(await details.evaluate((d) => d.open), 'the legend does not open');
  const items = await page.$$eval('#legend li', (lis) => lis.map((li) => ({
    status: li.dataset.status, text: li.textContent.trim(), svg: li.querySelector('svg')?.innerHTML || '',
  })));
  assert(items.length === 8, `${items.length} legend items`);
  for (const [status, label] of Object.entries(LABELS)) {
    const it = items.find((i) => i.status === status);
    assert(it, `no legend item for ${status}`);
    assert(it.text === label, `legend for ${status} says ${JSON.stringify(it.text)}`);
    assert(it.svg, `legend for ${status} has no icon`);
  }
  for (let a = 0; a < items.length; a++) {
    for (let b = a + 1; b < items.length; b++) {
      assert(items[a].svg !== items[b].svg, `${items[a].status} and ${items[b].status} have the same icon`);
    }
  }
  // The rows use the legend's icons.
  const rowIcons = await page.$$eval('#machines tr[data-machine] .status', (els) => els.map((e) => ({ status: e.dataset.status, svg: e.querySelector('svg').innerHTML })));
  for (const r of rowIcons) {
    assert(r.svg === items.find((i) => i.status === r.status).svg, `a ${r.status} row icon differs from the legend's`);
  }
  await details.locator('summary').click();
});

await check('hovering a status icon shows the Quick View with the machine ID and its IP', async () => {
  const candidates = EXPECT.length ? EXPECT : await shownIds(page);
  let target = null;
  for (const id of candidates) {
    const m = await page.evaluate(async (mid) => {
      const r = await fetch('/api/machines/' + encodeURIComponent(mid));
      return r.ok ? r.json() : null;
    }, id);
    if (m && m.ip) { target = m; break; }
  }
  assert(target, `no listed machine has an IP address (GET /api/machines/{id}) among ${JSON.stringify(candidates)}`);
  const qv = page.locator('#quickview');
  const icon = rowOf(page, target.id).locator('.status');
  await icon.hover();
  await qv.waitFor({ state: 'visible', timeout: 5000 });
  await waitFor(page, ([id, ip]) => {
    const t = document.querySelector('#quickview')?.textContent || '';
    return t.includes(id) && t.includes(ip);
  }, [target.id, target.ip], 5000, async () => `Quick View shows ${JSON.stringify(await qv.textContent())}, expected ${target.id} and ${target.ip}`);
  const text = await qv.textContent();
  assert(/last check-in/i.test(text), 'the Quick View has no last check-in');
  assert(await icon.getAttribute('aria-describedby') === 'quickview', 'the icon is not described by the Quick View');
  await page.mouse.move(1, 1);
  await qv.waitFor({ state: 'hidden', timeout: 3000 }).catch(() => { throw new Error('the Quick View stays after the pointer left'); });

  // Keyboard: focus opens it, Escape closes it.
  await icon.focus();
  await qv.waitFor({ state: 'visible', timeout: 3000 }).catch(() => { throw new Error('focusing the icon does not open the Quick View'); });
  await page.keyboard.press('Escape');
  await qv.waitFor({ state: 'hidden', timeout: 3000 }).catch(() => { throw new Error('Escape does not close the Quick View'); });
  await icon.blur();
});

await check('machines without a logged-on user, offline or suspended are not chat links, and say why', async () => {
  const rowsInfo = await page.$$eval('#machines tr[data-machine]', (trs) => trs.map((t) => ({
    id: t.dataset.machine,
    status: t.querySelector('.status')?.dataset.status,
    user: t.cells[2]?.textContent.trim(),
    link: !!t.querySelector('button.machine-link'),
    reason: t.querySelector('.machine-id .reason')?.textContent.trim() || '',
    group: t.querySelector('.machine-group')?.textContent || '',
  })));
  for (const r of rowsInfo) {
    const blocked = r.status === 'offline' || r.status === 'suspended' || r.user === '—' || r.user === '';
    if (blocked) {
      assert(!r.link, `${r.id} (${r.status}, user ${JSON.stringify(r.user)}) is a chat link`);
      assert(r.reason, `${r.id} (${r.status}) is no chat link but says no reason`);
    }
    if (r.link) assert(r.user && r.user !== '—', `${r.id} is a chat link with no user`);
    const group = r.id.slice(r.id.indexOf('.') + 1);
    assert(r.group.includes(group), `${r.id}: its group ${group} is not shown (${JSON.stringify(r.group)})`);
  }
});

await check('the list fits a 480 px wide window', async () => {
  await page.setViewportSize({ width: 480, height: 800 });
  await sleep(200);
  const w = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth }));
  assert(w.scroll <= w.client + 1, `the page scrolls sideways: ${w.scroll} px content in ${w.client} px`);
  await page.setViewportSize({ width: 1280, height: 800 });
});

if (FILTER) {
  await check(`the filter ${JSON.stringify(FILTER)} leaves only matching machines (filtered by the server)`, async () => {
    const asked = page.waitForRequest((r) => {
      const u = new URL(r.url());
      return u.pathname === '/api/machines/events' && (u.searchParams.get('filter') || '').toLowerCase() === FILTER.toLowerCase();
    }, { timeout: 5000 }).catch(() => null);
    await page.locator('#filter').fill(FILTER);
    assert(await asked, 'the page did not reopen /api/machines/events with the filter');
    const want = EXPECT.filter((id) => filterMatches(FILTER, id));
    const gone = EXPECT.filter((id) => !filterMatches(FILTER, id));
    await waitFor(page, ([w, g]) => {
      const ids = [...document.querySelectorAll('#machines tr[data-machine]')].map((t) => t.dataset.machine);
      return document.querySelector('#live')?.dataset.state === 'live'
        && w.every((id) => ids.includes(id)) && g.every((id) => !ids.includes(id));
    }, [want, gone], TIMEOUT, async () => `rows ${JSON.stringify(await shownIds(page))}; expected ${JSON.stringify(want)} and none of ${JSON.stringify(gone)}`);
    await sleep(300);
    const ids = await shownIds(page);
    const stray = ids.filter((id) => !filterMatches(FILTER, id));
    assert(!stray.length, `rows that do not match the filter: ${JSON.stringify(stray)}`);
    assert(await page.evaluate(() => localStorage.getItem('natter.filter')) === FILTER, 'the filter is not remembered');

    // Remembered across a reload, and the server answers with the same rows.
    await page.reload();
    await waitFor(page, () => document.querySelector('#live')?.dataset.state === 'live', null, TIMEOUT, async () => 'not live after reload');
    assert(await page.locator('#filter').inputValue() === FILTER, 'the filter is lost on reload');
    await waitFor(page, ([w]) => {
      const shown = [...document.querySelectorAll('#machines tr[data-machine]')].map((t) => t.dataset.machine);
      return w.every((id) => shown.includes(id));
    }, [want], TIMEOUT, async () => `after reload rows ${JSON.stringify(await shownIds(page))}`);
    const after = await shownIds(page);
    assert(after.every((id) => filterMatches(FILTER, id)), `after reload: ${JSON.stringify(after)}`);
    await page.locator('#filter').fill('');
  });
} else {
  run.skip('filter (no NATTER_FILTER)');
}

await check('no script errors on the page', async () => {
  assert(!run.pageErrors.length, run.pageErrors.slice(0, 5).join(' | '));
});

await run.finish();
