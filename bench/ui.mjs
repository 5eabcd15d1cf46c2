// The browser half of bench/ui.sh: timings of the web UI as a user sees them, printed as a table
// with the targets. Times are taken inside the page (performance.now) from the action to the
// moment the part of the page shows the answer (its aria-busy goes false).
import { createRequire } from 'node:module';

const require = createRequire(new URL('../tests/ui/package.json', import.meta.url));
const { chromium } = require('playwright-core');
const [base, token, runsText] = process.argv.slice(2);
const runs = Number(runsText || 5);
const QUERIES = ['verb:(create OR update OR patch OR delete) -user_kind:controlplane', 'code>=400', 'resource:secrets',
  'user_kind:human', 'verb:watch ns:kube-system', 'resource:pods subresource:exec'];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
  args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--disable-background-networking', '--no-first-run'],
});
const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
await context.addInitScript(([t]) => {
  sessionStorage.setItem('kubetrail.token', t);
  sessionStorage.setItem('kubetrail.role', 'admin');
}, [token]);
const page = await context.newPage();

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** ms from now until the selector's aria-busy is false (in the page's clock). */
const until = (selector) => page.evaluate((sel) => new Promise((resolve) => {
  const start = performance.now();
  const check = () => {
    const el = document.querySelector(sel);
    if (el && el.getAttribute('aria-busy') === 'false') resolve(performance.now() - start);
    else requestAnimationFrame(check);
  };
  requestAnimationFrame(check);
}), selector);

const paints = [];
const searches = [];
const facets = [];
const histograms = [];
for (let i = 0; i < runs; i++) {
  await page.goto(`${base}/explore?range=all&q=${encodeURIComponent(i % 2 ? 'code:403' : 'verb:get')}`);
  paints.push(await page.evaluate(() => new Promise((resolve) => {
    const fcp = () => performance.getEntriesByName('first-contentful-paint')[0];
    const wait = () => (fcp() ? resolve(fcp().startTime) : setTimeout(wait, 20));
    wait();
  })));
  await page.waitForFunction(() => !document.querySelector('[aria-busy=true]') && document.querySelector('main'), null, { timeout: 120000 });
  // A new query typed and submitted: each part timed from the submit.
  const q = QUERIES[i % QUERIES.length];
  await page.getByRole('combobox', { name: 'Query', exact: true }).fill(q);
  // From the Enter key (seen by the page) until each part has been busy and is done again.
  const timings = page.evaluate(() => new Promise((resolve) => {
    let start = null;
    const busy = {};
    const done = {};
    document.addEventListener('keydown', (e) => { if (e.key === 'Enter' && start === null) start = performance.now(); }, { capture: true, once: true });
    const check = () => {
      for (const [name, sel] of [['search', 'section[aria-label=Events]'], ['facets', 'section[aria-label=Facets]'], ['histogram', 'section[aria-label="Events over time"]']]) {
        const el = document.querySelector(sel);
        if (start === null || !el || name in done) continue;
        if (el.getAttribute('aria-busy') === 'true') busy[name] = true;
        else if (busy[name]) done[name] = performance.now() - start;
      }
      if (Object.keys(done).length === 3) resolve(done);
      else requestAnimationFrame(check);
    };
    requestAnimationFrame(check);
  }));
  await page.getByRole('combobox', { name: 'Query', exact: true }).press('Enter');
  const t = await timings;
  searches.push(t.search);
  facets.push(t.facets);
  histograms.push(t.histogram);
}

// 10,000 rows: scroll the list until that many are loaded, then measure a key press.
await page.goto(`${base}/explore?range=all`);
await page.waitForFunction(() => !document.querySelector('[aria-busy=true]') && document.querySelector('main'), null, { timeout: 120000 });
const loadStart = Date.now();
const rowCount = () => page.locator('table[aria-label=Events] tbody tr').count();
while ((await rowCount()) < 10000 && (await page.locator('.load-more button').count()) > 0) {
  await page.locator('.load-more').scrollIntoViewIfNeeded();
  await page.waitForTimeout(50);
}
const loaded = await rowCount();
const loadSeconds = (Date.now() - loadStart) / 1000;
await page.locator('table[aria-label=Events] tbody tr').nth(Math.floor(loaded / 2)).focus();
const keys = [];
for (let i = 0; i < 20; i++) {
  keys.push(await page.evaluate(() => new Promise((resolve) => {
    const before = document.activeElement;
    const start = performance.now();
    before.dispatchEvent(new KeyboardEvent('keydown', { key: 'ArrowDown', bubbles: true }));
    const check = () => (document.activeElement !== before ? requestAnimationFrame(() => resolve(performance.now() - start)) : requestAnimationFrame(check));
    check();
  })));
}
const longest = await page.evaluate(() => new Promise((resolve) => {
  let max = 0;
  new PerformanceObserver((list) => { for (const e of list.getEntries()) max = Math.max(max, e.duration); }).observe({ type: 'longtask', buffered: false });
  const rows = document.querySelectorAll('table[aria-label=Events] tbody tr');
  rows[Math.floor(rows.length * 0.9)].focus();
  document.querySelector('section[aria-label=Events]').scrollTop += 20000;
  setTimeout(() => resolve(max), 1500);
}));
await browser.close();

const row = (name, ms, target) => console.log(`${name.padEnd(34)} ${ms.toFixed(0).padStart(7)} ms   target ${target.padEnd(9)} ${ms < Number(target.replace(/[^\d]/g, '')) ? 'met' : 'NOT met'}`);
console.log(`median of ${runs} runs`);
row('first contentful paint', median(paints), '< 1000 ms');
row('search results (first page)', median(searches), '< 300 ms');
row('facets', median(facets), '< 1000 ms');
row('histogram', median(histograms), '< 1000 ms');
row(`${loaded} rows: key press to next row`, median(keys), '< 100 ms');
row(`${loaded} rows: longest task on scroll`, longest, '< 200 ms');
console.log(`${loaded} rows loaded by scrolling in ${loadSeconds.toFixed(1)} s (100 per page)`);
