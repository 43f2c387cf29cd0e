// End-to-end test of the wsreactor demo page (server/src/demo.html) in real headless
// Chromium, driven by playwright-core. Run it through scripts/browser-test, which installs
// Chromium and the npm packages and builds the release server first.
//
//   node tests/browser/demo.test.mjs [--server PATH] [--screenshot PATH] [--chromium PATH]
//
// Case 1: load the page, connect, send text, send 50 KB / 150 KB / 1 MB / 16 MB as text
//         and as binary, wait for every echo, check that all matched, close with 4000 and
//         a reason, check the page shows that close; screenshot to docs/images/demo.png.
// Case 1b: a page script's WebSocket that insists on a subprotocol (new WebSocket(url,
//         ['soap', 'chat']): Chromium fails the connection unless the 101 names one of
//         them) gets 'chat' (the server runs with --subprotocols chat) and an echo.
// Case 2: reconnect, SIGTERM the server while connected, check the page shows close 1001
//         "server shutting down" and that the server exits 0.
//
// Every check prints `ok - ...` or `FAIL - ...`; the last line is
// `browser: N passed, M failed`. Exit status 0 only when nothing failed.
// The whole run is bounded by BROWSER_TEST_TIMEOUT seconds (default 120), and the
// server is killed on every way out.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, mkdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '..', '..');

function argValue(name, dflt) {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : dflt;
}
const SERVER_BIN = resolve(argValue('--server', join(ROOT, 'target', 'release', 'wsreactor')));
const SCREENSHOT = resolve(argValue('--screenshot', join(ROOT, 'docs', 'images', 'demo.png')));
const CHROMIUM = argValue('--chromium', process.env.CHROMIUM || '/usr/bin/chromium');
const GLOBAL_TIMEOUT_S = Number(process.env.BROWSER_TEST_TIMEOUT || 120);
const STEP_TIMEOUT_MS = 60_000;
const PW_VERSION = JSON.parse(readFileSync(join(HERE, 'node_modules', 'playwright-core', 'package.json'), 'utf8')).version;

// ------------------------------------------------------------------ bookkeeping
let passed = 0;
let failed = 0;
function check(ok, what, detail) {
  if (ok) { passed++; console.log(`ok - ${what}`); }
  else { failed++; console.log(`FAIL - ${what}${detail !== undefined ? `: ${detail}` : ''}`); }
  return ok;
}
function finish(code) {
  console.log(`browser: ${passed} passed, ${failed} failed`);
  process.exit(code ?? (failed ? 1 : 0));
}

// ------------------------------------------------------------------ the server
let server = null;          // ChildProcess
let serverExit = null;      // Promise<{code, signal}>
let serverStderr = '';

function startServer() {
  return new Promise((resolveStart, rejectStart) => {
    server = spawn(SERVER_BIN, ['--addr', '127.0.0.1:0', '--subprotocols', 'chat'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' },
    });
    serverExit = new Promise((r) => server.once('exit', (code, signal) => r({ code, signal })));
    server.stderr.setEncoding('utf8');
    server.stderr.on('data', (s) => { serverStderr = (serverStderr + s).slice(-20_000); });
    server.stdout.setEncoding('utf8');
    let out = '';
    const onData = (s) => {
      out += s;
      const m = out.match(/listening on ws:\/\/127\.0\.0\.1:(\d+)\//);
      if (m) { server.stdout.off('data', onData); server.stdout.resume(); resolveStart(Number(m[1])); }
    };
    server.stdout.on('data', onData);
    server.once('error', rejectStart);
    serverExit.then(({ code, signal }) =>
      rejectStart(new Error(`server exited before listening (code ${code}, signal ${signal})`)));
    setTimeout(() => rejectStart(new Error('server did not print its address within 10 s')), 10_000);
  });
}

function killServer() {
  if (server && server.exitCode === null && server.signalCode === null) {
    try { server.kill('SIGKILL'); } catch { /* already gone */ }
  }
}
process.on('exit', killServer);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => { console.log(`FAIL - interrupted by ${sig}`); failed++; killServer(); finish(1); });
}

// ------------------------------------------------------------------ helpers
const state = (page) => page.locator('#status').getAttribute('data-state');
const counters = (page) => page.evaluate(() => ({ ...window.wsDemo }));

async function waitForState(page, want, timeout = STEP_TIMEOUT_MS) {
  await page.waitForFunction(
    (w) => document.getElementById('status').dataset.state === w, want, { timeout });
}

// Waits until every sent message has been verified (matched or mismatched).
async function waitForEchoes(page, timeout = STEP_TIMEOUT_MS) {
  await page.waitForFunction(
    () => window.wsDemo.sent > 0 && window.wsDemo.matched + window.wsDemo.mismatched === window.wsDemo.sent,
    null, { timeout, polling: 100 });
}

// ------------------------------------------------------------------ the run
async function main() {
  const userDataDir = mkdtempSync(join(tmpdir(), 'wsreactor-chromium-'));
  let context = null;
  const pageErrors = [];
  try {
    const port = await startServer();
    const base = `http://127.0.0.1:${port}/`;
    console.log(`# server ${SERVER_BIN} on port ${port}`);

    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--no-first-run'],
      viewport: { width: 1100, height: 900 },
      deviceScaleFactor: 1,
    });
    const version = context.browser()?.version() ?? '(unknown)';
    console.log(`# chromium ${version} (${CHROMIUM}), playwright-core ${PW_VERSION}`);

    const page = context.pages()[0] ?? await context.newPage();
    page.setDefaultTimeout(STEP_TIMEOUT_MS);
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(`console: ${m.text()}`); });

    // ---------------------------------------------------------------- /healthz
    const health = await page.request.get(`${base}healthz`);
    check(health.status() === 200, 'GET /healthz answers 200', health.status());

    // ---------------------------------------------------------------- case 1
    console.log('# case 1: echo text and generated payloads, then close 4000');
    const resp = await page.goto(base);
    check(resp && resp.status() === 200, 'GET / answers 200', resp && resp.status());
    check(/html/.test(resp.headers()['content-type'] || ''), 'GET / is served as HTML', resp.headers()['content-type']);
    check(await page.title() === 'wsreactor — WebSocket echo demo', 'page title', await page.title());
    const url = await page.locator('#url').inputValue();
    check(url === `ws://127.0.0.1:${port}/`, '#url defaults to this server', url);
    check(await state(page) === 'closed', 'page starts closed', await state(page));
    const hashAlgo = await page.locator('#hash-algo').textContent();
    check(hashAlgo === 'SHA-256', 'page verifies echoes with SHA-256 (secure context)', hashAlgo);

    await page.click('#connect');
    await waitForState(page, 'open');
    check(true, 'connected (#status data-state=open)');

    const text = await page.locator('#text').inputValue();
    const textBytes = Buffer.byteLength(text, 'utf8');
    await page.click('#send-text');
    await waitForEchoes(page);
    const afterText = await counters(page);
    check(afterText.matched === 1 && afterText.mismatched === 0, `text message echoed (${textBytes} bytes, "${text}")`, JSON.stringify(afterText));
    const echoedLine = await page.locator('#log').textContent();
    check(echoedLine.includes(`received ${textBytes} bytes (text): ${JSON.stringify(text)}`), 'log shows the echoed text');

    const sizes = { 'gen-50k': 50_000, 'gen-150k': 150_000, 'gen-1m': 1_000_000, 'gen-16m': 16_000_000 };
    const expectedRows = [['text', textBytes]];
    for (const kind of ['text', 'binary']) {
      await page.selectOption('#kind', kind);
      const t0 = Date.now();
      for (const [id, size] of Object.entries(sizes)) {
        await page.click(`#${id}`);
        expectedRows.push([kind, size]);
      }
      await waitForEchoes(page);
      const c = await counters(page);
      check(c.mismatched === 0 && c.matched === c.sent && c.sent === expectedRows.length,
        `${kind}: 50 KB, 150 KB, 1 MB, 16 MB echoed and matched (${Date.now() - t0} ms)`, JSON.stringify(c));
    }

    const final = await counters(page);
    check(final.sent === 9 && final.received === 9 && final.matched === 9 && final.mismatched === 0,
      'window.wsDemo: 9 sent, 9 received, 9 matched, 0 mismatched', JSON.stringify(final));
    const rows = await page.$$eval('#results tbody tr', (trs) => trs.map((tr) => ({
      match: tr.dataset.match, size: Number(tr.dataset.size), kind: tr.cells[0].textContent,
    })));
    check(rows.length === expectedRows.length, `results table has ${expectedRows.length} rows`, rows.length);
    check(rows.every((r) => r.match === 'true'), 'every results row has data-match=true',
      JSON.stringify(rows.filter((r) => r.match !== 'true')));
    const rowsAsSent = rows.map((r) => `${r.kind}:${r.size}`).join(',');
    const wanted = expectedRows.map(([k, s]) => `${k}:${s}`).join(',');
    check(rowsAsSent === wanted, 'rows are in send order with the sent kinds and sizes', `${rowsAsSent} != ${wanted}`);

    await page.fill('#close-code', '4000');
    await page.fill('#close-reason', 'bye from the test');
    await page.click('#close');
    await waitForState(page, 'closed');
    const st = page.locator('#status');
    const code = await st.getAttribute('data-close-code');
    const reason = await st.getAttribute('data-close-reason');
    const stText = await st.textContent();
    check(code === '4000', '#status data-close-code is 4000', code);
    check(reason === 'bye from the test', '#status data-close-reason is "bye from the test"', reason);
    check(/closed \(code 4000, reason "bye from the test", clean\)/.test(stText), '#status shows a clean close 4000 with the reason', stText);

    // Show the results table (it scrolls to its last row by itself) and the status.
    await page.evaluate(() => { document.getElementById('results-box').scrollTop = 0; window.scrollTo(0, 0); });
    mkdirSync(dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    console.log(`# screenshot: ${SCREENSHOT}`);

    // ---------------------------------------------------------------- case 1b
    console.log('# case 1b: a WebSocket that requires a subprotocol');
    const insisting = await page.evaluate((wsUrl) => new Promise((done) => {
      const ws = new WebSocket(wsUrl, ['soap', 'chat']);
      const t = setTimeout(() => done({ error: 'timeout' }), 10_000);
      ws.onerror = () => { clearTimeout(t); done({ error: 'connection failed' }); };
      ws.onopen = () => ws.send('with a subprotocol');
      ws.onmessage = (e) => { clearTimeout(t); done({ protocol: ws.protocol, data: e.data }); ws.close(1000); };
    }), url);
    check(insisting.protocol === 'chat' && insisting.data === 'with a subprotocol',
      "a WebSocket that requires subprotocol 'chat' connects with it and gets its echo", JSON.stringify(insisting));

    // ---------------------------------------------------------------- case 2
    console.log('# case 2: reconnect, SIGTERM the server, expect close 1001');
    await page.click('#connect');
    await waitForState(page, 'open');
    check(true, 'reconnected (#status data-state=open)');
    await page.click('#send-text');
    await waitForEchoes(page);
    const c2 = await counters(page);
    check(c2.matched === 10 && c2.mismatched === 0, 'text echoed on the new connection', JSON.stringify(c2));

    server.kill('SIGTERM');
    await waitForState(page, 'closed', 15_000);
    const code2 = await st.getAttribute('data-close-code');
    const reason2 = await st.getAttribute('data-close-reason');
    check(code2 === '1001', '#status data-close-code is 1001 after SIGTERM', code2);
    check(reason2 === 'server shutting down', 'close reason is "server shutting down"', reason2);
    check(/clean\)$/.test(await st.textContent()) && !/not clean/.test(await st.textContent()),
      'the shutdown close is clean', await st.textContent());
    const exit = await Promise.race([serverExit, new Promise((r) => setTimeout(() => r(null), 10_000))]);
    check(exit && exit.code === 0, 'server exits 0 after SIGTERM', JSON.stringify(exit));

    check(pageErrors.length === 0, 'no JavaScript errors on the page', pageErrors.join(' | '));
  } catch (err) {
    check(false, 'test run', err && err.stack ? err.stack : String(err));
  } finally {
    killServer();
    if (context) await context.close().catch(() => {});
    rmSync(userDataDir, { recursive: true, force: true });
  }
  if (failed && serverStderr) console.log(`# server stderr (tail):\n${serverStderr.split('\n').slice(-30).map((l) => `#   ${l}`).join('\n')}`);
}

// Not unref'd: it also keeps the process alive, so a run can never end without a result line.
setTimeout(() => {
  check(false, `global timeout of ${GLOBAL_TIMEOUT_S} s`);
  killServer();
  finish(1);
}, GLOBAL_TIMEOUT_S * 1000);

main().then(() => finish(), (err) => { check(false, 'unexpected error', String(err)); killServer(); finish(1); });
