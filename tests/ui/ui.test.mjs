// The web UI in a real browser (Debian's Chromium driven by playwright-core) against a real
// `kubetrail serve` that holds the bundled fixtures and the XSS event (tests/data/ui). Started
// by crates/kubetrail/tests/it/ui.rs, which passes:
//   KUBETRAIL_URL, KUBETRAIL_TOKEN, KUBETRAIL_VIEWER_TOKEN, KUBETRAIL_ARTIFACTS (screenshots)
// Run alone: node --test tests/ui/ (with a server and those variables).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
// Injected through the DevTools protocol: the page's CSP (no inline script) stays on.
const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const BASE = process.env.KUBETRAIL_URL;
const TOKEN = process.env.KUBETRAIL_TOKEN;
const VIEWER = process.env.KUBETRAIL_VIEWER_TOKEN;
const ARTIFACTS = process.env.KUBETRAIL_ARTIFACTS || 'target/ui-artifacts';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
assert.ok(BASE && TOKEN && VIEWER, 'KUBETRAIL_URL, KUBETRAIL_TOKEN and KUBETRAIL_VIEWER_TOKEN are needed');
mkdirSync(ARTIFACTS, { recursive: true });

let browser;
let context;
let page;
/** Every console error, page error, failed request and HTTP error the pages produced. */
const problems = [];

function watch(p) {
  p.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()} (${p.url()})`); });
  p.on('pageerror', (e) => problems.push(`page error: ${e.message} (${p.url()})`));
  p.on('requestfailed', (r) => {
    // Requests a newer query supersedes are aborted on purpose.
    if (r.failure() && r.failure().errorText === 'net::ERR_ABORTED') return;
    problems.push(`request failed: ${r.url()} ${r.failure() && r.failure().errorText}`);
  });
  p.on('response', (r) => { if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`); });
  // No payload may open a dialog either.
  p.on('dialog', (d) => { problems.push(`dialog: ${d.message()}`); d.dismiss(); });
}

async function newPage() {
  context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const p = await context.newPage();
  watch(p);
  return p;
}

async function login(p, token, url = '/explore?range=all') {
  await p.goto(BASE + url);
  await p.getByLabel('API token').fill(token);
  await p.getByRole('button', { name: 'Log in' }).click();
  await p.waitForURL((u) => !u.pathname.startsWith('/login'));
}

async function shot(name) {
  await page.screenshot({ path: `${ARTIFACTS}/${name}.png`, fullPage: true });
}

/** axe-core on the current page: no serious or critical violation. */
async function axe(name) {
  await page.evaluate(AXE);
  const result = await page.evaluate(async () => window.axe.run(document, { resultTypes: ['violations'] }));
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(bad.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).slice(0, 3).join('; ')})`), [], `axe on ${name}`);
}

const rows = () => page.getByRole('table', { name: 'Events' }).locator('tbody tr');

/** The text of column `name` in every loaded row of the events table. */
async function column(name) {
  const headers = await page.getByRole('table', { name: 'Events' }).locator('thead th').allTextContents();
  const at = headers.indexOf(name);
  assert.ok(at >= 0, `no column ${name} in ${headers}`);
  return rows().locator(`td:nth-child(${at + 1})`).allTextContents();
}

/** Waits until every part of the page has the answer to the current URL (none is aria-busy). */
async function settle() {
  await page.waitForFunction(() => document.querySelector('main') && !document.querySelector('[aria-busy=true]'));
}

before(async () => {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--no-first-run', '--disable-sync', '--disable-quic'],
  });
  page = await newPage();
});

after(async () => {
  if (browser) await browser.close();
});

test('logging in with the API token opens the explorer; the token is not in the URL', async () => {
  await page.goto(`${BASE}/explore?range=all`);
  await page.waitForURL(/\/login/);
  await axe('login');
  await shot('01-login');
  await login(page, TOKEN);
  await settle();
  assert.match(page.url(), /\/explore\?range=all$/);
  assert.ok(!page.url().includes(TOKEN));
  assert.ok((await rows().count()) > 0, 'events are listed');
  await shot('02-explore');
  await axe('explore');
});

test('a search narrows the events and lives in the URL', async () => {
  await page.getByRole('combobox', { name: 'Query', exact: true }).fill('verb:get');
  await page.getByRole('combobox', { name: 'Query', exact: true }).press('Enter');
  await page.waitForURL(/q=verb%3Aget/);
  await settle();
  const verbs = await column('verb');
  assert.ok(verbs.length > 0);
  assert.deepEqual([...new Set(verbs)], ['get']);
});

test('a syntax error is shown at its position as one types', async () => {
  await page.getByRole('combobox', { name: 'Query', exact: true }).fill('verb:get AND OR x');
  const error = page.locator('#query-error');
  await error.waitFor();
  assert.match(await error.textContent(), /expected a search term after AND/);
  // The caret sits under the 10th character (byte 9), where `OR` starts.
  assert.equal(await error.locator('.pad').textContent(), 'verb:get ');
  assert.equal(await page.getByRole('combobox', { name: 'Query', exact: true }).getAttribute('aria-invalid'), 'true');
  await shot('03-syntax-error');
});

test('field names and values are completed from the keyboard', async () => {
  const q = page.getByRole('combobox', { name: 'Query', exact: true });
  await q.fill('');
  await q.pressSequentially('user_k');
  await page.getByRole('option', { name: /user_kind/ }).waitFor();
  await q.press('Enter');
  assert.equal(await q.inputValue(), 'user_kind:');
  await page.getByRole('option', { name: /human/ }).waitFor();
  await q.press('ArrowDown');
  await q.press('Escape');
  await q.fill('');
});

test('clicking a facet value narrows the results; the exclude button negates it', async () => {
  await page.goto(`${BASE}/explore?range=all`);
  await settle();
  const facets = page.getByRole('region', { name: 'Facets' });
  await facets.getByRole('button', { name: 'admin', exact: true }).click();
  await page.waitForURL(/q=user%3Aadmin/);
  await settle();
  const users = await column('user');
  assert.ok(users.length > 0);
  assert.deepEqual([...new Set(users)], ['admin']);
  assert.equal(await facets.getByRole('button', { name: 'admin', exact: true }).getAttribute('aria-pressed'), 'true');
  await facets.getByRole('button', { name: 'Exclude verb get' }).click();
  await page.waitForURL(/-verb%3Aget/);
  await settle();
  assert.ok(!(await column('verb')).includes('get'));
  await shot('04-facets');
});

test('facets show more than ten values and search inside them', async () => {
  await page.goto(`${BASE}/explore?range=all`);
  await settle();
  const facets = page.getByRole('region', { name: 'Facets' });
  const resource = facets.locator('details').filter({ has: page.locator('summary', { hasText: /^resource/ }) });
  await resource.getByRole('button', { name: 'Show 100 values' }).click();
  await page.waitForFunction(() => document.querySelectorAll('.facets details')[1].querySelectorAll('li').length > 10);
  await resource.getByRole('searchbox').fill('lease');
  // A closed facet is counted when opened.
  const ns = facets.locator('details').filter({ has: page.locator('summary', { hasText: /^ns/ }) });
  await ns.locator('summary').click();
  await ns.getByRole('button', { name: 'kube-system', exact: true }).waitFor();
  await page.waitForFunction(() => [...document.querySelectorAll('.facets details')[1].querySelectorAll('li')].every((li) => li.textContent.includes('lease')));
});

test('rows are reached with the keyboard and open the event panel', async () => {
  await page.goto(`${BASE}/explore?range=all&q=${encodeURIComponent('resource:deployments name:web verb:patch')}`);
  await settle();
  await rows().first().focus();
  await page.keyboard.press('ArrowDown');
  assert.equal(await page.evaluate(() => [...document.activeElement.parentElement.children].indexOf(document.activeElement)), 1);
  await page.keyboard.press('ArrowUp');
  await page.keyboard.press('Enter');
  const panel = page.getByRole('complementary', { name: 'Event' });
  await panel.waitFor();
  await page.waitForURL(/event=/);
  assert.match(await panel.locator('pre.json').textContent(), /"verb": "patch"/);
  assert.equal(await page.locator('tr[aria-selected=true]').count(), 1);
  assert.equal(await rows().first().getAttribute('aria-selected'), 'true');
  await shot('05-event');
  await axe('event panel');
  await panel.getByRole('link', { name: 'Object history' }).click();
  await page.waitForURL(/\/object\?object=deployments%2Faudit-demo%2Fweb/);
  await page.getByRole('heading', { name: 'Changes, oldest first' }).waitFor();
  assert.ok((await page.locator('.timeline > li').count()) > 1);
  assert.ok((await page.locator('.diff li').count()) > 0, 'field-level changes are listed');
  await settle();
  await shot('06-object-history');
  await axe('object history');
});

test('every ready view draws its chart with data', async () => {
  await page.goto(`${BASE}/views?range=all`);
  const links = await page.locator('.views h2 a').evaluateAll((as) => as.map((a) => [a.textContent, a.getAttribute('href')]));
  assert.ok(links.length >= 10);
  let i = 0;
  for (const [title, href] of links) {
    await page.goto(BASE + href);
    await settle();
    const result = page.getByRole('region', { name: 'Query result' });
    if (await result.count()) {
      const drawn = await page.evaluate(() => {
        const canvas = document.querySelector('.uplot canvas');
        if (canvas) {
          // Some pixel of the plot is not blank: a series was drawn.
          const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
          for (let p = 3; p < data.length; p += 4) if (data[p] !== 0) return 'canvas';
          return null;
        }
        const bars = [...document.querySelectorAll('.bars .fill')].filter((b) => b.getBoundingClientRect().width > 1);
        return bars.length ? 'bars' : null;
      });
      assert.ok(drawn, `${title}: nothing drawn`);
      assert.ok((await result.locator('tbody tr').count()) > 0, `${title}: no rows`);
    } else {
      assert.ok((await rows().count()) > 0, `${title}: no events`);
    }
    await shot(`07-view-${String(++i).padStart(2, '0')}`);
  }
  await axe('a ready view');
});

test('clicking a bar drills down: resource, then namespace, then source IP', async () => {
  await page.goto(`${BASE}/views?range=all`);
  await page.getByRole('link', { name: /Anonymous requests/ }).click();
  await settle();
  await page.locator('.bars').getByRole('button', { name: 'secrets' }).click();
  await page.waitForURL(/by\+ns/);
  await settle();
  assert.match(await page.getByRole('combobox', { name: 'Query', exact: true }).inputValue(), /resource:secrets \| stats count\(\) by ns/);
  await page.locator('.bars button').first().click();
  await page.waitForURL(/by\+ip/);
  await settle();
  await shot('08-drilldown');
});

test('a URL copied from one page opens the same view in a fresh session', async () => {
  await page.goto(`${BASE}/explore?range=all&q=${encodeURIComponent('code:403 | stats count() by user | sort -count, user')}&chart=table`);
  await settle();
  const url = page.url();
  const before = await page.getByRole('region', { name: 'Query result' }).locator('tbody').textContent();
  const first = page;
  const fresh = await newPage();
  page = fresh;
  await login(fresh, TOKEN, url.slice(BASE.length));
  await settle();
  assert.equal(fresh.url(), url);
  assert.equal(await fresh.getByRole('combobox', { name: 'Query', exact: true }).inputValue(), 'code:403 | stats count() by user | sort -count, user');
  assert.equal(await fresh.getByRole('region', { name: 'Query result' }).locator('tbody').textContent(), before);
  await first.close();
});

test('reports, actor, denials and monitors pages render and pass axe', async () => {
  for (const [name, url, ready] of [
    ['reports', '/reports', 'Reports'],
    ['report', '/reports/auth-failures?range=all', 'Failures by status'],
    ['rollout', '/reports/rollout?object=deployments/audit-demo/web&range=all', 'The chain of actions'],
    ['actor', '/actor?user=admin&range=all', 'Actions (verb × resource), first seen first'],
    ['denied', '/denied?range=all', null],
    ['monitors', '/monitors', 'Monitors'],
    ['detections', '/detections?range=all', 'Detections'],
  ]) {
    await page.goto(BASE + url);
    await settle();
    if (ready) await page.getByRole('heading', { name: ready }).first().waitFor();
    if (name === 'rollout') assert.ok((await page.locator('.timeline > li').count()) > 3, 'the rollout is a timeline');
    await shot(`09-${name}`);
    await axe(name);
  }
  assert.ok((await page.getByRole('link', { name: 'Monitors' }).count()) > 0);
});

test('detections list findings with what matched, filter by rule and severity, and pass axe', async () => {
  // The detector writes findings a moment after the events are stored.
  const findings = page.getByRole('table', { name: 'Findings' }).locator('tbody tr');
  for (let i = 0; i < 20; i++) {
    await page.goto(`${BASE}/detections?range=all&severity=info`);
    await settle();
    if ((await findings.count()) > 0) break;
    await page.waitForTimeout(500);
  }
  assert.ok((await findings.count()) > 10, 'the fixture log has findings');
  const rules = page.getByRole('table', { name: 'Rules' }).locator('tbody tr');
  assert.ok((await rules.count()) >= 60, 'the pack is listed');
  await shot('11-detections');
  await axe('detections');
  await page.getByRole('combobox', { name: 'Rule' }).selectOption('exec-into-pod');
  await settle();
  assert.ok(page.url().includes('rule=exec-into-pod'));
  const execs = await findings.count();
  assert.ok(execs > 0);
  for (let i = 0; i < execs; i++) assert.ok((await findings.nth(i).textContent()).includes('pods/exec'));
  await page.getByRole('combobox', { name: 'Lowest severity' }).selectOption('critical');
  await settle();
  assert.equal(await findings.count(), 0);
  await page.getByText('No finding at critical or above').waitFor();
  await page.goto(`${BASE}/detections?range=all&severity=info&rule=exec-into-pod`);
  await settle();
  await findings.first().getByRole('link', { name: 'event' }).click();
  await settle();
  assert.ok(page.url().includes('/explore'));
  assert.ok((await rows().count()) >= 1, 'the stages of the request');
});

test('attacker-controlled fields are shown as text and never run', async () => {
  await page.goto(`${BASE}/explore?range=all&q=${encodeURIComponent('id:0000xss0-0000-4000-8000-000000000001')}`);
  await settle();
  assert.ok((await rows().count()) === 1);
  await rows().first().click();
  const panel = page.getByRole('complementary', { name: 'Event' });
  await panel.waitFor();
  await settle();
  assert.ok((await panel.textContent()).includes('<img src=x onerror="window.__xss=1">'));
  await page.goto(`${BASE}/explore?range=all&q=${encodeURIComponent('code:403')}`);
  await settle();
  await page.goto(`${BASE}/actor?range=all&user=${encodeURIComponent('<img src=x onerror="window.__xss=1">')}`);
  await settle();
  await page.goto(`${BASE}/denied?range=all`);
  await settle();
  assert.equal(await page.evaluate(() => window.__xss), undefined);
  assert.equal(await page.locator('img[src=x], iframe, svg[onload], b[onmouseover]').count(), 0);
  await shot('10-xss');
});

test('a viewer token reads but is marked read-only', async () => {
  const viewer = await newPage();
  page = viewer;
  await login(viewer, VIEWER);
  await settle();
  assert.ok((await rows().count()) > 0);
  await viewer.getByText('viewer (read-only)').waitFor();
});

test('no console error, page error or failed request on any page', () => {
  assert.deepEqual(problems, []);
});
