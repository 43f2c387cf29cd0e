// Interoperability check of a wsreactor echo server with Node's `ws` client.
//
//   node client.mjs ws://127.0.0.1:PORT/        (scripts/interop starts the server and runs this)
//
// Checks, each printed as `ok - ...` or `FAIL - ...`:
//   * text and binary messages of 0 B, 125 B, 64 KiB, 1 MiB and 16 MiB come back byte for
//     byte, with the same type (text payloads mix 2-, 3- and 4-byte UTF-8 characters)
//   * a fragmented text message and a fragmented binary message (ws.send(data, {fin: false})
//     ... {fin: true}: one frame per call) come back whole
//   * pings with a payload (short, and the 125-byte maximum) get a pong with that payload
//   * closing with 4001 and a reason gets a close frame with code 4001 back
// The last line is `client.mjs: N passed, M failed`; exit status 1 if any check failed.

import { createRequire } from 'node:module';
import { randomFillSync, createHash } from 'node:crypto';
import WebSocket from 'ws';

const require = createRequire(import.meta.url);
const WS_VERSION = require('ws/package.json').version;
const STEP_TIMEOUT_MS = 30_000;
const SIZES = [0, 125, 64 * 1024, 1024 * 1024, 16 * 1024 * 1024];
const PATTERN = Buffer.from('wsreactor interop — échø ✓ Ωμέγα 데모 🚀\n');

let passed = 0;
let failed = 0;
function check(ok, what, detail) {
  if (ok) { passed++; console.log(`ok - ${what}`); }
  else { failed++; console.log(`FAIL - ${what}${detail !== undefined ? `: ${detail}` : ''}`); }
  return ok;
}

// Exactly n UTF-8 bytes of mixed-width characters (a character cut at the end becomes
// ASCII padding), as a Buffer; the caller sends it as text or decodes it.
function makeText(n) {
  const buf = Buffer.alloc(n);
  for (let off = 0; off < n; off += PATTERN.length) PATTERN.copy(buf, off, 0, Math.min(PATTERN.length, n - off));
  // Back up over a trailing partial character (continuation bytes 10xxxxxx, then its lead).
  let end = n;
  let i = n - 1;
  while (i >= 0 && (buf[i] & 0xc0) === 0x80) i--;
  if (i >= 0 && buf[i] >= 0xc0) {
    const len = buf[i] >= 0xf0 ? 4 : buf[i] >= 0xe0 ? 3 : 2;
    if (i + len > n) end = i;
  }
  buf.fill(0x2e, end); // '.'
  return buf.toString('utf8');
}

function makeBinary(n) {
  return randomFillSync(Buffer.alloc(n));
}

function human(n) {
  if (n >= 1 << 20 && n % (1 << 20) === 0) return `${n >> 20} MiB`;
  if (n >= 1 << 10 && n % (1 << 10) === 0) return `${n >> 10} KiB`;
  return `${n} B`;
}

const sha = (b) => createHash('sha256').update(b).digest('hex').slice(0, 16);

function withTimeout(promise, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${STEP_TIMEOUT_MS} ms: ${what}`)), STEP_TIMEOUT_MS); }),
  ]).finally(() => clearTimeout(timer));
}

// Incoming messages and pongs, queued so each check awaits the next one.
function queue(ws, event) {
  const items = [];
  const waiters = [];
  ws.on(event, (...args) => { if (waiters.length) waiters.shift()(args); else items.push(args); });
  return () => (items.length ? Promise.resolve(items.shift()) : new Promise((r) => waiters.push(r)));
}

function compare(what, sentBytes, sentBinary, [data, isBinary], ms) {
  const got = Buffer.isBuffer(data) ? data : Buffer.from(data);
  const same = isBinary === sentBinary && got.equals(sentBytes);
  check(same, `${what}${ms !== undefined ? ` (${ms} ms)` : ''}`,
    same ? undefined : `sent ${sentBinary ? 'binary' : 'text'} ${sentBytes.length} B (${sha(sentBytes)}), got ${isBinary ? 'binary' : 'text'} ${got.length} B (${sha(got)})`);
}

async function main(url) {
  console.log(`# ws ${WS_VERSION} (Node ${process.versions.node}) -> ${url}`);
  // maxPayload 0: no limit on incoming messages (the default is 100 MiB).
  const ws = new WebSocket(url, { maxPayload: 0 });
  const nextMessage = queue(ws, 'message');
  const nextPong = queue(ws, 'pong');
  const closed = new Promise((r) => ws.once('close', (code, reason) => r({ code, reason: reason.toString() })));
  await withTimeout(new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); }), 'open');
  // ws offers permessage-deflate by default; the server implements no extension.
  check(ws.extensions === '', 'handshake: permessage-deflate offer declined', JSON.stringify(ws.extensions));
  check(ws.protocol === '', 'handshake: no subprotocol when none is offered', JSON.stringify(ws.protocol));

  for (const n of SIZES) {
    for (const binary of [false, true]) {
      const what = `${binary ? 'binary' : 'text'} ${human(n)} echoed byte for byte`;
      const payload = binary ? makeBinary(n) : makeText(n);
      const bytes = binary ? payload : Buffer.from(payload, 'utf8');
      if (bytes.length !== n) throw new Error(`generator made ${bytes.length} bytes, not ${n}`);
      const t0 = Date.now();
      try {
        ws.send(payload, { binary });
        const msg = await withTimeout(nextMessage(), what);
        compare(what, bytes, binary, msg, Date.now() - t0);
      } catch (err) {
        check(false, what, String(err));
      }
    }
  }

  // Fragmented messages: each send() with fin:false is one frame (text/binary opcode
  // first, then continuation frames); the one with fin:true ends the message.
  const fragmentCases = [
    ['fragmented text (5 frames, 70 KB) echoed whole', false,
      ['fragmented ', 'text — échø ', '✓ 데모 🚀 ', 'x'.repeat(70_000), ' end'].map((s) => Buffer.from(s))],
    // A binary message may split anywhere, so cut a 4-byte character of a text message too.
    ['fragmented text split inside a UTF-8 character echoed whole', false,
      [Buffer.from('split 🚀').subarray(0, 8), Buffer.from('split 🚀').subarray(8)]],
    ['fragmented binary (5 frames incl. an empty one, 200 KB) echoed whole', true,
      [1, 0, 125, 200_000, 7].map(makeBinary)],
  ];
  for (const [what, binary, frags] of fragmentCases) {
    try {
      frags.forEach((f, i) => ws.send(f, { binary, fin: i === frags.length - 1 }));
      const msg = await withTimeout(nextMessage(), what);
      compare(what, Buffer.concat(frags), binary, msg);
    } catch (err) {
      check(false, what, String(err));
    }
  }

  for (const [what, payload] of [
    ['ping with a 15-byte payload answered by a pong with that payload', Buffer.from('interop ping \x00\xff', 'latin1')],
    ['ping with a 125-byte payload answered by a pong with that payload', Buffer.from([...Array(125).keys()])],
  ]) {
    try {
      ws.ping(payload);
      const [data] = await withTimeout(nextPong(), what);
      check(Buffer.from(data).equals(payload), what, `pong payload ${Buffer.from(data).toString('hex')}`);
    } catch (err) {
      check(false, what, String(err));
    }
  }

  // A client that insists on a subprotocol: ws fails the handshake unless the server
  // picks one of those offered (the server runs with --subprotocols chat,echo).
  const what = "a client that requires subprotocol 'chat' gets it and an echo";
  try {
    const insisting = new WebSocket(url, ['chat', 'superchat']);
    const echoed = queue(insisting, 'message');
    await withTimeout(new Promise((resolve, reject) => { insisting.once('open', resolve); insisting.once('error', reject); }), 'open with a subprotocol');
    insisting.send('with a subprotocol');
    const [data] = await withTimeout(echoed(), what);
    check(insisting.protocol === 'chat' && data.toString() === 'with a subprotocol', what,
      `${insisting.protocol}, ${data}`);
    insisting.close(1000);
  } catch (err) {
    check(false, what, String(err));
  }

  ws.close(4001, 'bye from node ws');
  try {
    const { code, reason } = await withTimeout(closed, 'close');
    check(code === 4001, "close 4001: the server's close frame echoes code 4001", `code ${code}`);
    console.log(`# server's close frame: code ${code}, reason ${JSON.stringify(reason)}`);
  } catch (err) {
    check(false, "close 4001: the server's close frame echoes code 4001", String(err));
    ws.terminate();
  }
}

const url = process.argv[2];
if (!url) {
  console.error('usage: node client.mjs ws://127.0.0.1:PORT/');
  process.exit(2);
}
main(url)
  .catch((err) => check(false, 'client run', String(err && err.stack ? err.stack : err)))
  .finally(() => {
    console.log(`client.mjs: ${passed} passed, ${failed} failed`);
    process.exit(failed || !passed ? 1 : 0);
  });
