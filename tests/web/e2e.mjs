// The daemon's web page in Debian's chromium, run by
// crates/lodestone/tests/web_ui.rs:
//   node e2e.mjs URL MAGNET SCREENSHOT_DIR XSS_TORRENT XSS_NAME DOWNLOAD_DIR
// Every wait is bounded; any failed check, page error or console error
// ends the run with exit 1.

import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [url, magnet, shots, xssTorrent, xssName, downloadDir, lockedUrl, lockedPassword] = process.argv.slice(2);
if (!downloadDir) {
  console.error('usage: node e2e.mjs URL MAGNET SCREENSHOT_DIR XSS_TORRENT XSS_NAME DOWNLOAD_DIR');
  process.exit(2);
}
const hash = /btih:([0-9a-fA-F]{40})/.exec(magnet)[1].toLowerCase();

const log = (...a) => console.log(`[${(performance.now() / 1000).toFixed(1)}s]`, ...a);
function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
  log('ok:', what);
}

async function until(what, ms, f) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await f();
      if (last) return last;
    } catch (e) {
      last = e.message;
    }
    if (Date.now() > end) throw new Error(`timed out after ${ms / 1000}s waiting for ${what} (last: ${JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function api(path, init) {
  const r = await fetch(`${url}/api/v1${path}`, init);
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

const byHash = async (h) => (await api('/torrents')).torrents.find((t) => t.info_hash === h);

const profile = mkdtempSync(join(tmpdir(), 'lodestone-e2e-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
  viewport: { width: 1280, height: 860 },
  colorScheme: 'light',
});
const problems = [];
const dialogs = [];
let code = 1;
try {
  const page = context.pages()[0] || (await context.newPage());
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
  });
  // A CSP violation shows as a console error too; an alert() as a dialog.
  page.on('dialog', (d) => {
    dialogs.push(`${d.type()}: ${d.message()}`);
    d.dismiss().catch(() => {});
  });
  const shot = (name) => page.screenshot({ path: join(shots, name) });

  await page.goto(url);
  await until('the event stream', 15000, async () => (await page.textContent('#st-conn')) === 'live');
  check((await page.textContent('#st-count')) === '0 torrents', 'an empty list to begin with');

  // ---- a bare magnet, by the Add dialog ----
  await page.click('#btn-add');
  await page.fill('#add-link', magnet);
  await page.click('dialog button[type=submit]');
  await until('the add dialog to close', 10000, async () => (await page.$('dialog[open]')) === null);
  const t0 = await until('the torrent in the API', 10000, () => byHash(hash));
  const row = `#row-${t0.id}`;
  await page.waitForSelector(row, { timeout: 10000 });
  check(true, `a row for the magnet (${t0.state})`);
  // Its detail while it fetches (it may be quick: best effort).
  await page.click(row);
  await page.click('#tab-sources');
  await page.waitForSelector('table.sources tr[data-kind="dht"]', { timeout: 15000 });
  if (await page.$('#diagnosis')) {
    log('diagnosis while fetching:', (await page.textContent('#diagnosis')).replace(/\s+/g, ' '));
    await shot('sources-metadata.png');
  }

  // ---- metadata, then the content ----
  await until('the metadata (row leaves "Fetching metadata")', 90000, async () => {
    const s = await page.textContent(`${row} .c-state`);
    return s !== 'Fetching metadata' && s;
  });
  const named = await byHash(hash);
  check(named.has_metadata && named.name === 'album', `metadata arrived: named ${named.name}`);
  // While it downloads (capped at 300 kB/s): the seeder in Peers.
  await page.click('#tab-peers');
  const flags = await until('the seeder in the Peers tab', 20000, async () => {
    const f = await page.$$eval('tr.peer td.flags', (tds) => tds.map((td) => td.textContent));
    return f.find((x) => x.includes('H')) || null;
  });
  check(/D/.test(flags), `the seeder's flags say we download from it, found by the DHT (${flags})`);
  const transport = await page.textContent('tr.peer td[data-label="Transport"]');
  check(transport === 'tcp', 'the peer\'s transport is tcp');
  await page.click('details.legend summary');
  await page.waitForTimeout(1600);
  await shot('peers.png');
  await page.click('#tab-overview');
  await page.waitForSelector('dd[data-field="State"]', { timeout: 10000 });
  if ((await page.textContent('dd[data-field="State"]')) === 'Downloading') await shot('overview-downloading.png');
  await until('the download to complete (row says Seeding)', 90000, async () =>
    (await page.textContent(`${row} .c-state`)) === 'Seeding');
  check((await page.textContent(`${row} .c-pct`)) === '100%', 'the row says 100%');
  check((await page.textContent(`${row} .c-name`)) === 'album', 'the row has the name');
  await shot('list.png');

  // ---- Sources: the DHT, LPD and PEX rows, in numbers ----
  await page.click('#tab-sources');
  const numbers = async (kind) => {
    const cells = await page.$$eval(`table.sources tr[data-kind="${kind}"] td.num:not(.next)`,
      (tds) => tds.map((td) => td.textContent));
    return cells.length === 3 && cells.every((c) => /^\d+$/.test(c)) ? cells : null;
  };
  for (const kind of ['dht', 'lpd', 'pex']) {
    const cells = await until(`the ${kind} row's numbers`, 15000, () => numbers(kind));
    const status = await page.textContent(`table.sources tr[data-kind="${kind}"] td.status`);
    check(true, `${kind} row: found/seeds/leechers ${cells.join('/')}, status "${status}"`);
  }
  const dhtLast = await until('a DHT round in the DHT row', 60000, async () => {
    const t = await page.textContent('table.sources tr[data-kind="dht"] td.last');
    return /get_peers: \d+ queried, \d+ answered, \d+ peers/.test(t) && t;
  });
  check(true, `DHT last result: ${dhtLast}`);
  const dhtFound = Number((await numbers('dht'))[0]);
  check(dhtFound >= 1, `the DHT found the seeder (${dhtFound} peers found)`);
  const next = await page.textContent('table.sources tr[data-kind="dht"] td.next');
  check(/^\d+(m \d+)?s$|^\d+h \d+m$/.test(next), `the DHT row counts down to its next round (${next})`);
  await page.waitForTimeout(1200);
  await shot('sources.png');

  // ---- Overview ----
  await page.click('#tab-overview');
  await page.waitForSelector('dd[data-field="Info hash"]', { timeout: 10000 });
  check((await page.textContent('dd[data-field="Info hash"]')) === hash, 'the overview shows the hash');
  check((await page.textContent('dd[data-field="State"]')) === 'Seeding', 'the overview says Seeding');
  await shot('overview.png');

  // ---- Pieces ----
  await page.click('#tab-pieces');
  await page.waitForSelector('canvas.pieces', { timeout: 10000 });
  await shot('pieces.png');

  // ---- Files: a priority, through the page, seen by the API ----
  await page.click('#tab-files');
  await page.waitForSelector('select[data-index="1"]', { timeout: 10000 });
  await page.selectOption('select[data-index="1"]', 'high');
  await until('file 1 at high priority in the API', 10000, async () =>
    (await api(`/torrents/${t0.id}/files`)).files[1].priority === 'high');
  await page.waitForTimeout(1600); // one refresh: the select keeps its value
  check((await page.inputValue('select[data-index="1"]')) === 'high', 'the select still says high after a refresh');
  await shot('files.png');

  // ---- the keyboard: Escape closes, arrows and Enter open ----
  await page.keyboard.press('Escape');
  await until('the detail to close', 5000, async () => page.$eval('#detail', (d) => d.hidden));
  await page.focus('#list');
  await page.keyboard.press('ArrowDown');
  await page.keyboard.press('Enter');
  await until('Enter to open the detail', 5000, async () => page.$eval('#detail', (d) => !d.hidden));

  // ---- stop, then remove with its data ----
  await page.click('#btn-stop');
  await until('the row to say Stopped', 15000, async () => (await page.textContent(`${row} .c-state`)) === 'Stopped');
  check((await byHash(hash)).state === 'stopped', 'the API says stopped');
  await page.click('#btn-remove');
  await page.waitForSelector('dialog[open] #remove-data');
  await page.check('#remove-data');
  await page.click('dialog[open] button[type=submit]');
  await until('the row to go', 15000, async () => (await page.$(row)) === null || !(await page.isVisible(row)));
  check((await byHash(hash)) === undefined, 'the API no longer has it');
  await until('its files deleted', 15000, () => !existsSync(join(downloadDir, 'album')));
  check(true, `download folder now holds: ${JSON.stringify(existsSync(downloadDir) ? readdirSync(downloadDir) : [])}`);

  // ---- a magnet nobody has: the diagnosis says so in words ----
  const nobody = 'feedfacefeedfacefeedfacefeedfacefeedface';
  await page.click('#btn-add');
  await page.fill('#add-link', nobody); // a bare info hash works too
  await page.click('dialog button[type=submit]');
  await until('the add dialog to close', 10000, async () => (await page.$('dialog[open]')) === null);
  const lost = await until('the lost magnet in the API', 10000, () => byHash(nobody));
  await page.click(`#row-${lost.id}`);
  await page.click('#tab-sources');
  const why = await until('the diagnosis after a DHT round', 45000, async () => {
    const d = await page.$('#diagnosis');
    const t = d && (await d.textContent());
    return t && /DHT: \d+ nodes answered but none knows a peer for this info hash/.test(t) && t;
  });
  check(why.includes('no peer addresses known yet'), `the diagnosis: ${why.replace('Why the metadata is not here yet', '')}`);
  await shot('diagnosis.png');
  await page.click('#btn-remove');
  await page.waitForSelector('dialog[open] #remove-data');
  await page.click('dialog[open] button[type=submit]');
  await until('the lost magnet to go', 15000, async () => (await byHash(nobody)) === undefined);
  await until('the detail to close with it', 5000, async () => page.$eval('#detail', (d) => d.hidden));

  // ---- a hostile name, by .torrent upload ----
  await page.click('#btn-add');
  await page.setInputFiles('#add-file', xssTorrent);
  await page.check('#add-paused');
  await page.click('dialog button[type=submit]');
  await until('the add dialog to close', 10000, async () => (await page.$('dialog[open]')) === null);
  const x = await until('the upload in the API', 10000, async () =>
    (await api('/torrents')).torrents.find((t) => t.name === xssName));
  check(x.state === 'stopped', 'added paused');
  await page.waitForSelector(`#row-${x.id}`, { timeout: 10000 });
  check((await page.textContent(`#row-${x.id} .c-name`)) === xssName, 'the row shows the name as text');
  check((await page.$$('#list img')).length === 0, 'no img element in the list');
  await page.click(`#row-${x.id}`);
  await page.click('#tab-overview');
  await until('the detail title', 5000, async () => (await page.textContent('#detail-title')) === xssName);
  check((await page.$$('#detail img')).length === 0, 'no img element in the detail');
  await page.click('#tab-files');
  await page.waitForSelector('td.path', { timeout: 10000 });
  check((await page.$$('img:not(.brand img)')).length === 0, 'no img element anywhere but the logo');
  await page.click('#tab-overview');
  await page.waitForTimeout(500);

  // ---- dark mode, kept across a reload ----
  await page.click('#btn-theme');
  check((await page.getAttribute('html', 'data-theme')) === 'dark', 'the toggle makes it dark');
  await page.reload();
  await until('the event stream again', 15000, async () => (await page.textContent('#st-conn')) === 'live');
  check((await page.getAttribute('html', 'data-theme')) === 'dark', 'dark after a reload (localStorage)');
  await page.click(`#row-${x.id}`);
  await page.waitForSelector('dd[data-field="State"]', { timeout: 10000 });
  await shot('dark.png');
  await page.click('#btn-theme');

  // ---- phone width ----
  await page.setViewportSize({ width: 390, height: 844 });
  await page.keyboard.press('Escape');
  await until('the detail to close', 5000, async () => page.$eval('#detail', (d) => d.hidden));
  await page.waitForTimeout(300);
  const rowBox = await page.locator(`#row-${x.id}`).boundingBox();
  check(rowBox && rowBox.width <= 390, `the row fits the phone (${rowBox && rowBox.width}px)`);
  const scrollW = await page.evaluate(() => document.documentElement.scrollWidth);
  check(scrollW <= 390, `no sideways scrolling at 390 px (${scrollW})`);
  await shot('phone.png');
  await page.click(`#row-${x.id}`);
  await page.click('#tab-sources');
  await page.waitForSelector('#no-sources', { timeout: 10000 });
  check(true, 'a stopped torrent says why it has no sources');
  await page.click('#btn-start');
  await until('the API to say it runs', 10000, async () => (await byHash(x.info_hash)).state !== 'stopped');
  await page.waitForSelector('table.sources tr[data-kind="dht"]', { timeout: 10000 });
  await page.waitForTimeout(1000);
  await shot('phone-detail.png');

  // ---- login: a second daemon has a password; its gate lets the page's
  // files through, answers the API 401 without a Basic challenge, and
  // takes the SID cookie of /api/v2/auth/login everywhere ----
  const login = await context.newPage();
  login.on('pageerror', (e) => problems.push(`page error (login): ${e.message}`));
  login.on('dialog', (d) => { dialogs.push(`${d.type()}: ${d.message()}`); d.dismiss().catch(() => {}); });
  const logins = [];
  login.on('request', (r) => {
    if (r.url().endsWith('/api/v2/auth/login')) logins.push(`${r.method()} ${r.headers()['content-type']}`);
  });
  const unauthorized = [];
  login.on('response', (r) => {
    if (r.status() === 401) unauthorized.push(`${r.url()} ${r.headers()['www-authenticate'] ?? ''}`);
  });
  await login.goto(lockedUrl);
  await login.waitForSelector('dialog[open] #login-user', { timeout: 10000 });
  check(true, 'a 401 brings the login form');
  check(unauthorized.every((u) => u.endsWith(' ')), `no Basic challenge for the page's calls (${unauthorized.join('; ')})`);
  await login.fill('#login-user', 'admin');
  await login.fill('#login-pass', 'wrong');
  await login.keyboard.press('Enter');
  await until('the refusal in words', 5000, async () =>
    (await login.textContent('dialog[open] .error')) === 'wrong user name or password');
  await login.keyboard.press('Escape');
  check((await login.$('dialog[open] #login-user')) !== null, 'Escape does not dismiss the login form');
  await login.fill('#login-pass', lockedPassword);
  await login.click('dialog[open] button[type=submit]');
  await until('the login form to close', 5000, async () => (await login.$('dialog[open]')) === null);
  await until('the list (and its event stream) after logging in', 20000, async () =>
    (await login.textContent('#st-conn')) === 'live' && (await login.textContent('#st-count')) === '0 torrents');
  check(logins.length === 2 && logins.every((t) => t === 'POST application/x-www-form-urlencoded'),
    `the login posts a form (${logins.join('; ')})`);
  const cookies = await context.cookies(lockedUrl);
  check(cookies.some((c) => c.name === 'SID' && c.httpOnly && c.sameSite === 'Lax'),
    `the daemon set an HttpOnly SID cookie (${cookies.map((c) => c.name).join(', ')})`);
  await login.close();

  check(dialogs.length === 0, `no dialog fired (${dialogs.join('; ')})`);
  check(problems.length === 0, `no page or console error (${problems.join('; ')})`);
  console.log('e2e: all checks passed');
  code = 0;
} catch (e) {
  console.error(e.stack || e.message);
  if (problems.length) console.error('page problems:', problems.join('\n'));
  if (dialogs.length) console.error('dialogs:', dialogs.join('\n'));
  try {
    const p = context.pages()[0];
    if (p) await p.screenshot({ path: join(shots, 'failure.png') });
  } catch {
    // no page left to show
  }
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(code);
