// What every browser check script shares: Debian chromium driven by playwright-core, numbered
// checks that stop at the first failure (with screenshots), and helpers for the Natter pages.
//
// A script prints one line per check ("ok N - …" / "FAIL N - …" / "skip: …") and last
// "N passed, M failed"; exit code 1 on a failure, 2 on a missing environment variable.
//
// Environment read here:
//   NATTER_ARTIFACTS  optional: directory for screenshots of a failed check
//   CHROMIUM          optional: browser executable (default /usr/bin/chromium)
//   NATTER_CHROMIUM_ARGS  optional: more command-line switches for it, separated by spaces (e.g.
//                     `--disable-features=WebUIOmniboxPopup`: headless Chromium then does not
//                     load its omnibox's WebUI, ≈ 400 chrome:// files, in every new profile)
import fs from 'node:fs/promises';
import fsSync from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

/** How long a single wait may take by default (ms). */
export const TIMEOUT = 15000;

const env = process.env;

/** The environment variable `name`; exits with code 2 if it is not set. */
export function need(name) {
  const v = env[name];
  if (!v) {
    console.error(`missing environment variable ${name}`);
    process.exit(2);
  }
  return v;
}

/** A comma-separated list, without empty items. */
export const list = (v) => (v || '').split(',').map((s) => s.trim()).filter(Boolean);

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** CPU time (ms) used so far by every Chromium process of this machine, from /proc (Linux). */
function chromiumCpuMs() {
  let ticks = 0;
  for (const pid of fsSync.readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const stat = fsSync.readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (!/^\d+ \(chrom/.test(stat)) continue;
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11]) + Number(fields[12]); // utime + stime
    } catch { /* the process has gone */ }
  }
  return ticks * 10; // USER_HZ is 100 on Linux
}

/**
 * Waits until Chromium has settled: no more than 20 ms of CPU over 300 ms, at most `maxMs`.
 * A new browser profile starts a renderer of its own for the browser's UI (top-chrome WebUI),
 * ≈ 350 ms of CPU over its first second; the benchmark's browser steps wait for it before the
 * measured navigation, since an operator's chat window opens in a browser that is running.
 * Without /proc this waits `maxMs`.
 */
export async function browserSettled(maxMs = 5000) {
  const start = Date.now();
  if (!fsSync.existsSync('/proc/self/stat')) return sleep(maxMs);
  let before = chromiumCpuMs();
  while (Date.now() - start < maxMs) {
    await sleep(300);
    const now = chromiumCpuMs();
    if (now - before <= 20) return;
    before = now;
  }
}

export function assert(cond, message) {
  if (!cond) throw new Error(message);
}

/** The machine list's row for machine `id`. */
export const rowOf = (page, id) => page.locator(`#machines tr[data-machine=${JSON.stringify(id)}]`);

/**
 * Starts chromium and returns the run: contexts (browser profiles) to open pages in, and
 * `check`/`finish` to report.
 * @param {object} [opts]
 * @param {string} [opts.screenshotPrefix]             screenshot file prefix, e.g. 'machines-'
 * @param {(text: string) => boolean} [opts.ignoreConsole] console errors that are no page bug
 * @param {() => Promise<void>} [opts.beforeExit]      runs before the script exits
 */
export async function startBrowser({ screenshotPrefix = '', ignoreConsole = () => false, beforeExit } = {}) {
  const browser = await chromium.launch({
    executablePath: env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ...(env.NATTER_CHROMIUM_ARGS || '').split(/\s+/).filter(Boolean)],
  });
  return new Run(browser, screenshotPrefix, ignoreConsole, beforeExit);
}

class Run {
  constructor(browser, prefix, ignoreConsole, beforeExit) {
    Object.assign(this, { browser, prefix, ignoreConsole, beforeExit });
    this.contexts = [];
    this.pageErrors = [];
    this.passed = 0;
    this.failed = 0;
    this.checkNo = 0;
  }

  /** A new browser profile whose pages' script errors fail the run's last check. */
  async newContext(options = {}) {
    const ctx = await this.browser.newContext(options);
    ctx.setDefaultTimeout(TIMEOUT);
    ctx.on('page', (page) => {
      page.on('pageerror', (e) => this.pageErrors.push(`${page.url()}: ${e.message}`));
      page.on('console', (m) => {
        if (m.type() === 'error' && !this.ignoreConsole(m.text())) this.pageErrors.push(`${page.url()}: console: ${m.text()}`);
      });
    });
    this.contexts.push(ctx);
    return ctx;
  }

  /** Runs one check; on failure prints why, takes screenshots of every page and exits. */
  async check(name, fn) {
    const no = ++this.checkNo;
    try {
      await fn();
      this.passed++;
      console.log(`ok ${no} - ${name}`);
    } catch (e) {
      this.failed++;
      console.log(`FAIL ${no} - ${name}: ${e.message}`);
      for (const line of this.pageErrors.slice(-10)) console.log(`  page error: ${line}`);
      await this.screenshots(no);
      await this.finish();
    }
  }

  skip(what) {
    console.log(`skip: ${what}`);
  }

  async screenshots(no) {
    const dir = env.NATTER_ARTIFACTS;
    if (!dir) return;
    await fs.mkdir(dir, { recursive: true }).catch(() => {});
    const pages = this.contexts.flatMap((c) => c.pages());
    for (const [i, p] of pages.entries()) {
      await p.screenshot({ path: path.join(dir, `${this.prefix}check${no}-page${i}.png`), fullPage: true }).catch(() => {});
    }
  }

  /** Prints the summary, closes the browser and exits (1 if a check failed). */
  async finish() {
    if (this.beforeExit) await this.beforeExit().catch(() => {});
    console.log(`${this.passed} passed, ${this.failed} failed`);
    await this.browser.close().catch(() => {});
    process.exit(this.failed ? 1 : 0);
  }
}

/** Logs in on the Chat page (/) with a cleared machine filter; resolves once logged in. */
export async function login(page, base, user, password) {
  await page.goto(base + '/');
  await page.evaluate(() => localStorage.removeItem('natter.filter'));
  await page.locator('#username').fill(user);
  await page.locator('#password').fill(password);
  await page.locator('#login-form button[type=submit]').click();
  await page.locator('#me-name').waitFor({ state: 'visible' });
}

/** Waits for `fn(arg)` in the page to be true; on timeout, fails with `await describe()`. */
export async function waitFor(page, fn, arg, timeout, describe) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 100 });
  } catch {
    throw new Error(await describe());
  }
}

export async function waitForTitle(page, title) {
  await waitFor(page, (t) => document.title === t, title, TIMEOUT,
    async () => `title is ${JSON.stringify(await page.title())}, expected ${JSON.stringify(title)}`);
}

/** Types `text` in a chat window's message box and sends it with Enter. */
export async function send(page, text) {
  const box = page.locator('#text');
  await box.fill(text);
  await box.press('Enter');
}

/** Texts of the messages the page received from the server (rendered from SSE events). */
export function deliveredTexts(page) {
  return page.$$eval('#transcript .msg[data-seq] .text', (els) => els.map((e) => e.textContent));
}

/** Waits until the chat window `page` shows `text` as a received message. */
export async function waitForDelivered(page, text, what) {
  await waitFor(page,
    (t) => [...document.querySelectorAll('#transcript .msg[data-seq] .text')].some((e) => e.textContent === t),
    text, TIMEOUT,
    async () => `${what}: ${JSON.stringify(text)} never arrived; transcript: ${JSON.stringify(await deliveredTexts(page))}`);
}
