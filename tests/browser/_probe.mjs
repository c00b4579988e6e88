import { chromium } from 'playwright-core';
const [C, S] = process.argv.slice(2);
const BASE = 'http://127.0.0.1:8090';
const b = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--headless', '--no-sandbox', '--disable-gpu'] });
for (let i = 0; i < 3; i++) {
  const ctx = await b.newContext();
  await ctx.addCookies([{ name: 'natter_op', value: C, url: BASE }]);
  const page = await ctx.newPage();
  await page.goto(`${BASE}/chat/${S}`);
  await page.waitForFunction(() => document.getElementsByClassName('msg').length >= 10000, null, { timeout: 60000 });
  const r = await page.evaluate(() => performance.getEntriesByType('resource').map((e) => `${e.name.replace(/^.*\/(static|api)\//, '')} ${e.startTime.toFixed(0)}-${e.responseEnd.toFixed(0)}`));
  console.log(r.join('\n')); console.log('---');
  await ctx.close();
}
await b.close();
