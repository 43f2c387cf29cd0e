#!/usr/bin/env python3
"""Two wsreactor instances behind HAProxy (docs/haproxy.cfg), one of them stopped.

Run by scripts/haproxy-test, which installs HAProxy and `websockets` and builds the
server. Everything listens on 127.0.0.1 only:

  1. starts two wsreactor instances (ws1, ws2) on free ports and HAProxy in front;
  2. connects CLIENTS clients through the proxy; each learns its instance from the
     X-Backend header of the 101 response; all echo, and both instances have some;
  3. every client keeps echoing a message every 50 ms; then ws1 gets SIGTERM;
  4. checks that ws1's clients received close 1001 "server shutting down", that ws1
     exited with status 0, that they reconnect through the proxy (to ws2) and echo
     again, and that ws2's clients never noticed anything;
  5. checks /metrics is refused by the proxy and, read from ws2 directly, counts
     every client.

Prints `ok - ...` / `FAIL - ...` per check and finally `haproxy: N passed, M failed`.
Exit status: 0 all passed, 1 a check failed, 2 setup error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

CLIENTS = 40
PERIOD = 0.05  # seconds between two echoes of one client
RECONNECT_WITHIN = 15.0  # seconds for a client of the stopped instance to be back


class Setup(Exception):
    pass


class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, ok: bool, what: str, detail: object = "") -> bool:
        if ok:
            self.passed += 1
            print(f"ok - {what}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL - {what}: {detail}", flush=True)
        return ok


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(binary: str, work: str, name: str, extra: list[str]) -> tuple[subprocess.Popen, str]:
    """Starts wsreactor on a free port; returns the process and its host:port."""
    log = open(os.path.join(work, f"{name}.log"), "w")
    proc = subprocess.Popen(
        [binary, "--addr", "127.0.0.1:0", *extra],
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")},
    )
    line = proc.stdout.readline()
    m = re.fullmatch(r"listening on ws://(127\.0\.0\.1:\d+)/\n", line)
    if not m:
        proc.kill()
        raise Setup(f"{name} did not start: first line {line!r} (log: {log.name})")
    return proc, m.group(1)


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for_proxy(front: str, proxy: subprocess.Popen, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proxy.poll() is not None:
            raise Setup(f"haproxy exited with status {proxy.returncode}")
        try:
            if http_get(f"http://{front}/healthz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise Setup(f"haproxy did not serve /healthz on {front} within {within} s")


def metrics(addr: str) -> dict[str, float]:
    status, body = http_get(f"http://{addr}/metrics")
    if status != 200:
        raise AssertionError(f"/metrics answered {status}")
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


class Client:
    """One WebSocket client through the proxy, echoing until told to stop."""

    def __init__(self, index: int, url: str) -> None:
        self.index = index
        self.url = url
        self.ws = None
        self.backend = None  # X-Backend of the current connection
        self.first_backend = None
        self.echoes = 0  # successful round trips, all connections together
        self.echoes_after_reconnect = 0
        self.closed_with: tuple[int, str] | None = None  # close frame received
        self.error: str | None = None  # anything unexpected
        self.reconnects = 0
        self.reconnect_tries = 0

    async def open(self) -> None:
        self.ws = await connect(self.url, open_timeout=5, ping_interval=None)
        self.backend = self.ws.response.headers.get("X-Backend")
        if self.first_backend is None:
            self.first_backend = self.backend

    async def echo(self, seq: int) -> None:
        for kind, message in (
            ("text", f"client {self.index} message {seq} ✓"),
            ("binary", bytes([self.index % 256, seq % 256]) * 50),
        ):
            await self.ws.send(message)
            reply = await asyncio.wait_for(self.ws.recv(), 5)
            if reply != message:
                raise AssertionError(f"{kind} echo differs: {reply!r} != {message!r}")

    async def chatter(self, stop: asyncio.Event) -> None:
        """Echoes until `stop`; on a close from the server, records it and reconnects."""
        seq = 0
        while not stop.is_set():
            try:
                await self.echo(seq)
                self.echoes += 1
                if self.reconnects:
                    self.echoes_after_reconnect += 1
                seq += 1
                await asyncio.sleep(PERIOD)
            except ConnectionClosed as e:
                if self.closed_with is not None or e.rcvd is None:
                    self.error = f"connection broke: {e!r}"
                    return
                self.closed_with = (e.rcvd.code, e.rcvd.reason)
                if not await self.reconnect():
                    return
            except Exception as e:  # noqa: BLE001 - any other failure is the test's
                self.error = f"{type(e).__name__}: {e}"
                return
        await self.ws.close()

    async def reconnect(self) -> bool:
        deadline = time.monotonic() + RECONNECT_WITHIN
        while time.monotonic() < deadline:
            self.reconnect_tries += 1
            try:
                await self.open()
                self.reconnects += 1
                return True
            except Exception:  # noqa: BLE001 - 503 while HAProxy retries, refused, ...
                await asyncio.sleep(0.2)
        self.error = f"could not reconnect within {RECONNECT_WITHIN} s"
        return False


async def scenario(checks: Checks, front: str, ws1: subprocess.Popen, addr2: str, shutdown_timeout: int) -> None:
    url = f"ws://{front}/"
    clients = [Client(i, url) for i in range(CLIENTS)]
    for c in clients:  # one by one: leastconn alternates between the instances
        await c.open()
    backends = sorted({c.backend for c in clients}, key=str)
    on_ws1 = [c for c in clients if c.backend == "ws1"]
    on_ws2 = [c for c in clients if c.backend == "ws2"]
    checks.check(
        backends == ["ws1", "ws2"] and len(on_ws1) >= CLIENTS // 4 and len(on_ws2) >= CLIENTS // 4,
        f"{CLIENTS} clients connected through the proxy, spread over both instances",
        f"backends {backends}, ws1 {len(on_ws1)}, ws2 {len(on_ws2)}",
    )
    failures = []
    for c in clients:
        try:
            await c.echo(0)
        except Exception as e:  # noqa: BLE001
            failures.append(f"client {c.index}: {e!r}")
    checks.check(not failures, "every client echoes text and binary through the proxy", failures[:3])

    stop = asyncio.Event()
    tasks = [asyncio.create_task(c.chatter(stop)) for c in clients]
    await asyncio.sleep(0.5)
    stopped_at = time.monotonic()
    ws1.send_signal(signal.SIGTERM)
    loop = asyncio.get_running_loop()
    try:
        status = await asyncio.wait_for(loop.run_in_executor(None, ws1.wait), shutdown_timeout + 5)
    except asyncio.TimeoutError:
        status = "still running"
    exit_took = time.monotonic() - stopped_at
    checks.check(status == 0, f"ws1 exited with status 0 after SIGTERM ({exit_took:.2f} s)", status)

    # Wait until every client of ws1 is back and has echoed, then a little longer.
    deadline = time.monotonic() + RECONNECT_WITHIN + 2
    while time.monotonic() < deadline:
        if all(c.echoes_after_reconnect > 0 or c.error for c in on_ws1):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    ws2_echoes_before = {c.index: c.echoes for c in on_ws2}
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*tasks)

    got_1001 = [c for c in on_ws1 if c.closed_with == (1001, "server shutting down")]
    checks.check(
        len(got_1001) == len(on_ws1),
        f"all {len(on_ws1)} clients of ws1 received close 1001 \"server shutting down\"",
        [(c.index, c.closed_with, c.error) for c in on_ws1 if c not in got_1001][:5],
    )
    back = [c for c in on_ws1 if c.reconnects == 1 and c.backend == "ws2" and c.echoes_after_reconnect > 0]
    tries = sum(c.reconnect_tries for c in on_ws1)
    checks.check(
        len(back) == len(on_ws1),
        f"they reconnected through the proxy to ws2 and echo again ({tries} connection attempts for {len(on_ws1)} clients)",
        [(c.index, c.reconnects, c.backend, c.echoes_after_reconnect, c.error) for c in on_ws1 if c not in back][:5],
    )
    unbroken = [
        c
        for c in on_ws2
        if c.error is None
        and c.closed_with is None
        and c.reconnects == 0
        and c.echoes > ws2_echoes_before[c.index] > 0
    ]
    checks.check(
        len(unbroken) == len(on_ws2),
        f"the {len(on_ws2)} clients of ws2 never broke and kept echoing "
        f"({min((c.echoes for c in on_ws2), default=0)}+ round trips each)",
        [(c.index, c.error, c.closed_with, c.reconnects, c.echoes) for c in on_ws2 if c not in unbroken][:5],
    )

    status, _ = http_get(f"http://{front}/metrics")
    checks.check(status == 403, "the proxy refuses /metrics", status)
    m = metrics(addr2)
    checks.check(
        m.get("wsreactor_upgrades_total") == CLIENTS and m.get("wsreactor_closes_total{code=\"1006\"}") == 0,
        f"ws2's /metrics counts all {CLIENTS} clients (its own and the reconnected), none dropped",
        {k: v for k, v in m.items() if "upgrades" in k or "closes" in k or "open" in k},
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", required=True, help="the wsreactor binary")
    parser.add_argument("--config", required=True, help="the HAProxy config (docs/haproxy.cfg)")
    parser.add_argument("--haproxy", default="haproxy")
    args = parser.parse_args()

    checks = Checks()
    procs: list[subprocess.Popen] = []
    work = tempfile.mkdtemp(prefix="wsreactor-haproxy.")
    shutdown_timeout = 5
    try:
        server_args = ["--shutdown-timeout", str(shutdown_timeout), "--workers", "2"]
        ws1, addr1 = start_server(args.server, work, "ws1", server_args)
        procs.append(ws1)
        ws2, addr2 = start_server(args.server, work, "ws2", server_args)
        procs.append(ws2)
        front = f"127.0.0.1:{free_port()}"
        env = {
            **os.environ,
            "WSREACTOR_FRONTEND": front,
            "WSREACTOR_BACKEND_1": addr1,
            "WSREACTOR_BACKEND_2": addr2,
            "HAPROXY_MAXCONN": "4096",
        }
        check = subprocess.run([args.haproxy, "-c", "-f", args.config], env=env, capture_output=True, text=True)
        if not checks.check(check.returncode == 0, "haproxy -c accepts the config", check.stdout + check.stderr):
            return 1
        proxy_log = open(os.path.join(work, "haproxy.log"), "w")
        proxy = subprocess.Popen(
            [args.haproxy, "-db", "-f", args.config],
            env=env,
            stdout=proxy_log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        procs.append(proxy)
        wait_for_proxy(front, proxy, 10)
        print(f"# ws1 {addr1}, ws2 {addr2}, haproxy {front}", flush=True)
        asyncio.run(scenario(checks, front, ws1, addr2, shutdown_timeout))
    except Setup as e:
        print(f"haproxy-test: {e}", file=sys.stderr)
        checks.failed += 1
        print(f"haproxy: {checks.passed} passed, {checks.failed} failed")
        return 2
    except Exception as e:  # noqa: BLE001 - report, clean up, fail
        checks.check(False, "the scenario ran to its end", repr(e))
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
        if not checks.failed:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"# logs kept in {work}", file=sys.stderr)
            for name in ("ws1.log", "ws2.log", "haproxy.log"):
                path = os.path.join(work, name)
                if os.path.exists(path):
                    with open(path) as f:
                        tail = f.readlines()[-15:]
                    print(f"# --- last lines of {name} ---", file=sys.stderr)
                    sys.stderr.writelines("# " + line for line in tail)
    print(f"haproxy: {checks.passed} passed, {checks.failed} failed")
    return 0 if checks.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
