#!/usr/bin/env python3
"""Interoperability check of a wsreactor echo server with Python's `websockets` client.

Usage: client.py ws://127.0.0.1:PORT/        (scripts/interop starts the server and runs this)

Checks, each printed as `ok - ...` or `FAIL - ...`:
  * text and binary messages of 0 B, 125 B, 64 KiB, 1 MiB and 16 MiB come back byte for byte,
    with the same type (text payloads mix 2-, 3- and 4-byte UTF-8 characters)
  * a fragmented text message and a fragmented binary message (sent as an iterable of
    fragments, so websockets writes one frame per fragment) come back whole
  * pings with a payload (short, and the 125-byte maximum) are answered with that payload
  * closing with 4001 and a reason gets a close frame with code 4001 back
  * a client that insists on a subprotocol (`subprotocols=["echo"]`, which fails the
    handshake unless the server picks one it offered) gets `echo` and an echo; the server
    runs with `--subprotocols chat,echo`, and one offering none gets none
The last line is `client.py: N passed, M failed`; the exit status is 1 if any check failed.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time

import websockets
from websockets.asyncio.client import connect

STEP_TIMEOUT = 30.0
SIZES = [0, 125, 64 * 1024, 1024 * 1024, 16 * 1024 * 1024]
PATTERN = "wsreactor interop — échø ✓ Ωμέγα 데모 🚀\n"

passed = 0
failed = 0


def check(ok: bool, what: str, detail: object = None) -> bool:
    global passed, failed
    if ok:
        passed += 1
        print(f"ok - {what}", flush=True)
    else:
        failed += 1
        print(f"FAIL - {what}" + ("" if detail is None else f": {detail}"), flush=True)
    return ok


def make_text(n: int) -> str:
    """Exactly n UTF-8 bytes of mixed-width characters (ASCII padding at the end)."""
    unit = PATTERN.encode()
    raw = (unit * (n // len(unit) + 1))[:n]
    s = raw.decode("utf-8", errors="ignore")  # drops a character cut in half at the end
    s += "." * (n - len(s.encode()))
    assert len(s.encode()) == n
    return s


def make_binary(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def human(n: int) -> str:
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} B"


def describe(got: object) -> str:
    if isinstance(got, (bytes, str)):
        return f"{type(got).__name__} of {len(got)}"
    return repr(got)


async def echo(ws, message: str | bytes, what: str) -> None:
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(ws.send(message), STEP_TIMEOUT)
        got = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
    except Exception as e:  # noqa: BLE001 - any failure is a failed check
        check(False, what, f"{type(e).__name__}: {e}")
        return
    ms = (time.monotonic() - t0) * 1000
    same_type = type(got) is type(message)
    check(same_type and got == message, f"{what} ({ms:.0f} ms)",
          None if same_type and got == message else f"sent {describe(message)}, got {describe(got)}")


async def fragmented(ws, fragments: list, what: str) -> None:
    whole = fragments[0][:0].join(fragments)
    try:
        # An iterable makes websockets send one frame per item: the first with the text or
        # binary opcode and FIN=0, the rest as continuation frames, the last with FIN=1.
        await asyncio.wait_for(ws.send(fragments), STEP_TIMEOUT)
        got = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
    except Exception as e:  # noqa: BLE001
        check(False, what, f"{type(e).__name__}: {e}")
        return
    check(type(got) is type(whole) and got == whole, what, f"sent {describe(whole)}, got {describe(got)}")


async def ping(ws, payload: bytes, what: str) -> None:
    try:
        # websockets resolves the waiter only on a pong carrying exactly this payload.
        waiter = await ws.ping(payload)
        latency = await asyncio.wait_for(waiter, STEP_TIMEOUT)
    except Exception as e:  # noqa: BLE001
        check(False, what, f"{type(e).__name__}: {e}")
        return
    check(True, f"{what} ({latency * 1000:.1f} ms)")


async def main(uri: str) -> None:
    print(f"# websockets {websockets.__version__} (Python {sys.version.split()[0]}) -> {uri}", flush=True)
    async with connect(
        uri,
        max_size=None,  # no limit on incoming messages (default 1 MiB)
        proxy=None,  # never route loopback through a proxy from the environment
        ping_interval=None,  # only the pings this script sends
        close_timeout=10,
    ) as ws:
        ext = ws.response.headers.get("Sec-WebSocket-Extensions")
        # websockets offers permessage-deflate by default; the server implements no
        # extension, so it must decline (answer without the header).
        check(ext is None, "handshake: permessage-deflate offer declined", ext)
        check(ws.subprotocol is None, "handshake: no subprotocol when none is offered", ws.subprotocol)

        for n in SIZES:
            await echo(ws, make_text(n), f"text {human(n)} echoed byte for byte")
            await echo(ws, make_binary(n, seed=n + 1), f"binary {human(n)} echoed byte for byte")

        await fragmented(ws, ["fragmented ", "text — échø ", "✓ 데모 🚀 ", "x" * 70_000, " end"],
                         "fragmented text (5 frames, 70 KB) echoed whole")
        await fragmented(ws, [make_binary(n, seed=100 + i) for i, n in enumerate([1, 0, 125, 200_000, 7])],
                         "fragmented binary (5 frames incl. an empty one, 200 KB) echoed whole")

        await ping(ws, b"interop ping \x00\xff", "ping with a 15-byte payload answered by a pong with that payload")
        await ping(ws, bytes(range(125)), "ping with a 125-byte payload answered by a pong with that payload")

        try:
            await asyncio.wait_for(ws.close(4001, "bye from python websockets"), STEP_TIMEOUT)
        except Exception as e:  # noqa: BLE001
            check(False, "close 4001", f"{type(e).__name__}: {e}")
        rcvd = ws.protocol.close_rcvd
        check(rcvd is not None and rcvd.code == 4001, "close 4001: the server's close frame echoes code 4001",
              None if rcvd is None else f"code {rcvd.code}")
        if rcvd is not None:
            print(f"# server's close frame: code {rcvd.code}, reason {rcvd.reason!r}", flush=True)


async def insisting_on_a_subprotocol(uri: str) -> None:
    what = "a client that requires subprotocol 'echo' gets it and an echo"
    try:
        async with connect(uri, subprotocols=["soap", "echo"], proxy=None, ping_interval=None) as ws:
            got_protocol = ws.subprotocol
            await asyncio.wait_for(ws.send("with a subprotocol"), STEP_TIMEOUT)
            got = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
    except Exception as e:  # noqa: BLE001 - the handshake or the echo failed
        check(False, what, f"{type(e).__name__}: {e}")
        return
    check(got_protocol == "echo" and got == "with a subprotocol", what, f"{got_protocol!r}, {got!r}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    try:
        asyncio.run(main(sys.argv[1]))
        asyncio.run(insisting_on_a_subprotocol(sys.argv[1]))
    except Exception as e:  # noqa: BLE001 - e.g. the connection could not be opened
        check(False, "client run", f"{type(e).__name__}: {e}")
    print(f"client.py: {passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed or not passed else 0)
