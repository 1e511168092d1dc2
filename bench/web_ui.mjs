// One measurement of a daemon's web page (see bench/web_ui.py, which runs
// it): first render, an update, memory. Prints one JSON line.
//
//   node bench/web_ui.mjs SIDE URL RPC_PORT N PROFILE_DIR
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const require = createRequire(path.join(root, 'tests', 'web', 'package.json'));
const { chromium } = require('playwright-core');

const [side, url, rpcPort, nText, profile] = process.argv.slice(2);
const n = Number(nText);
const LIMIT_MS = 300_000;

// What "listed" and "running" mean on each page, evaluated in the page.
// Each function stands alone: Playwright sends its source to the page (a
// string evaluated there would break the page's CSP, which forbids eval).
const probes = {
  transmission: {
    // It draws every row.
    listedAt: ({ n }) => document.querySelectorAll('#torrent_list li.torrent').length >= n
      && performance.now(),
    topName: () => document.querySelector('#torrent_list li.torrent .torrent_name')?.textContent,
    // A row's progress bars carry the class `paused` while it is stopped.
    running: ({ name }) => {
      const li = [...document.querySelectorAll('#torrent_list li.torrent')]
        .find((e) => e.querySelector('.torrent_name')?.textContent === name);
      return li ? !li.querySelector('.torrent_progress_bar.paused') : null;
    },
    runningAt: ({ name }) => {
      const li = [...document.querySelectorAll('#torrent_list li.torrent')]
        .find((e) => e.querySelector('.torrent_name')?.textContent === name);
      return Boolean(li) && !li.querySelector('.torrent_progress_bar.paused') && performance.now();
    },
  },
  lodestone: {
    // The status bar counts the torrents; rows are virtualized (only the
    // visible ones exist) and carry their state in data-state.
    listedAt: ({ n }) => (document.querySelector('#st-count')?.textContent ?? '').startsWith(`${n} torrent`)
      && Boolean(document.querySelector('.row:not([hidden]) .c-name')?.textContent)
      && performance.now(),
    // Pooled rows are placed by transform: the top one is the smallest.
    topName: () => [...document.querySelectorAll('.row:not([hidden])')]
      .map((r) => [new DOMMatrixReadOnly(getComputedStyle(r).transform).f, r.querySelector('.c-name').textContent])
      .sort((a, b) => a[0] - b[0])[0]?.[1],
    running: ({ name }) => {
      const row = [...document.querySelectorAll('.row:not([hidden])')]
        .find((r) => r.querySelector('.c-name')?.textContent === name);
      return row ? row.dataset.state !== 'stopped' : null;
    },
    runningAt: ({ name }) => {
      const row = [...document.querySelectorAll('.row:not([hidden])')]
        .find((r) => r.querySelector('.c-name')?.textContent === name);
      return Boolean(row) && row.dataset.state !== 'stopped' && performance.now();
    },
  },
};
const probe = probes[side];

// Transmission's RPC with its 409 handshake (both daemons speak it).
async function rpc(method, args) {
  let sid = '';
  for (let i = 0; i < 3; i++) {
    const r = await fetch(`http://127.0.0.1:${rpcPort}/transmission/rpc`, {
      method: 'POST',
      headers: { 'X-Transmission-Session-Id': sid, 'Content-Type': 'application/json' },
      body: JSON.stringify({ method, arguments: args }),
    });
    if (r.status === 409) { sid = r.headers.get('x-transmission-session-id'); continue; }
    const j = await r.json();
    if (j.result !== 'success') throw new Error(`${method}: ${j.result}`);
    return j.arguments;
  }
  throw new Error(`${method}: no session id`);
}

function rendererPssMib() {
  // Every renderer process of this browser (its command line names our
  // profile); PSS, so memory shared with the other processes counts once.
  let kib = 0;
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (!cmd.includes('--type=renderer') || !cmd.includes(profile)) continue;
      const m = /^Pss:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
      if (m) kib += Number(m[1]);
    } catch { /* gone */ }
  }
  return kib / 1024;
}

const context = await chromium.launchPersistentContext(profile, {
  executablePath: '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1280, height: 800 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
try {
  const page = context.pages()[0] ?? await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  const probeArgs = { n };
  await page.goto(url, { waitUntil: 'commit', timeout: LIMIT_MS });
  const firstRender = await (await page.waitForFunction(probe.listedAt, probeArgs,
    { polling: 'raf', timeout: LIMIT_MS })).jsonValue();

  // The torrent at the top of the page (its default order) is the one
  // changed, so that the change is on screen.
  probeArgs.name = await page.evaluate(probe.topName);
  const hit = (await rpc('torrent-get', { fields: ['name', 'hashString'] })).torrents
    .find((t) => t.name === probeArgs.name);
  if (!hit) throw new Error(`no torrent named ${probeArgs.name}`);
  // The row must say stopped before the change, or the update proves nothing.
  const before = await page.evaluate(probe.running, probeArgs);
  if (before !== false) throw new Error(`the top torrent's row does not show it stopped (${before})`);
  await rpc('torrent-start', { ids: [hit.hashString] });
  const started = await page.evaluate(() => performance.now());
  const shown = await (await page.waitForFunction(probe.runningAt, probeArgs,
    { polling: 'raf', timeout: 60_000 })).jsonValue();

  const cdp = await context.newCDPSession(page);
  await cdp.send('HeapProfiler.collectGarbage');
  await cdp.send('Performance.enable');
  const { metrics } = await cdp.send('Performance.getMetrics');
  const metric = (name) => metrics.find((m) => m.name === name)?.value;
  console.log(JSON.stringify({
    first_render_ms: firstRender,
    update_ms: shown - started,
    js_heap_mib: metric('JSHeapUsedSize') / 1048576,
    dom_nodes: metric('Nodes'),
    renderer_pss_mib: rendererPssMib(),
    changed: probeArgs.name,
    page_errors: errors,
  }));
} finally {
  await context.close();
}
