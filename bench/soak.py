"""
Soak test: one kyoukai_fast server, a million mixed requests, no lost response, flat memory.

    .venv/bin/python bench/soak.py                        # 1,000,000 requests, compiled backend
    .venv/bin/python bench/soak.py --requests 20000 --impl python --app minimal

Starts a server in a subprocess on an ephemeral 127.0.0.1 port (a real Kyoukai app through
``KyoukaiComponent(..., backend="kyoukai_fast")`` by default, or ``--app minimal``: the protocol
with a bare app object), then drives it from ``--procs`` client processes with ``--conns``
asyncio connections each. Each connection runs a random mix of sessions:

* keep-alive: sequential requests on one connection (GET, POST echo, chunked stream, a handler
  that suspends, HEAD);
* pipelined: batches of 16 requests written at once, then their 16 responses read;
* HTTP/1.0: without keep-alive (the server closes after one response) and with it;
* malformed: valid requests followed by a broken one: their responses, then 400, then EOF;
* disconnects: the client vanishes mid-request (head or body half sent) or mid-response
  (after a few bytes of a 256 KiB body).

Every response is checked (version, status, framing, exact body). The server's RSS
(``/proc/PID/status``) is sampled throughout; after the run the server must have no connection
left and must have logged no error. Exits non-zero on any lost or wrong response, on RSS growth
beyond ``--rss-limit-mib`` between the end of warm-up and the end, or on server errors.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")

IO_TIMEOUT = 30.0   # seconds any single read may take before the request counts as lost
BIG = 256 * 1024    # body size of /big


# --- the server (runs in the subprocess) ------------------------------------------------------

def stream_parts(n: int):
    for i in range(4):
        yield b"%d:%d;" % (i, n)


def answer(method: str, path: str, body: bytes):
    """``(status, body, streamed)`` for the soak routes, shared by both apps."""
    if path.startswith("/hello/"):
        return 200, b"hello " + path[7:].encode(), False
    if path == "/echo":
        return 200, body, False
    if path.startswith("/stream/"):
        return 200, stream_parts(int(path[8:])), True
    if path == "/big":
        return 200, b"x" * BIG, False
    return 404, b"not found", False


def run_server(args) -> None:
    # --impl chooses, whatever the environment this was started from selects.
    if args.impl == "python":
        os.environ["KYOUKAI_FAST_NO_EXTENSIONS"] = "1"
    else:
        os.environ.pop("KYOUKAI_FAST_NO_EXTENSIONS", None)
    sys.path.insert(0, SRC)
    import logging

    import kyoukai_fast
    import kyoukai_fast.compat

    kyoukai_fast.compat.apply()
    from kyoukai_fast._config import server_state_for

    if kyoukai_fast.IMPLEMENTATION != args.impl:
        raise SystemExit(f"asked for the {args.impl} implementation, "
                         f"{kyoukai_fast.IMPLEMENTATION} is live (is the extension built?)")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    import warnings
    warnings.simplefilter("ignore", DeprecationWarning)
    from werkzeug.wrappers import Request, Response

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    components = []

    def stats():
        state = server_state_for(components[0], 0)
        return json.dumps({"connections": len(state.connections),
                           "tasks": len(asyncio.all_tasks(loop))})

    async def start():
        if args.app == "kyoukai":
            from asphalt.core import Context
            from kyoukai import Kyoukai, KyoukaiComponent

            app = Kyoukai("soak", loop=loop)

            def respond(request):
                if request.path == "/_soak/stats":
                    return Response(stats(), mimetype="application/json")
                status, body, streamed = answer(request.method, request.path,
                                                request.get_data())
                if streamed:
                    # Stock Kyoukai turns a generator body into its repr(): a list is what a
                    # Kyoukai app can answer (sent with a Content-Length).
                    body = list(body)
                return Response(body, status=status)

            async def with_arg(ctx, rest):
                if ctx.request.path.startswith("/slow/"):
                    await asyncio.sleep(0)
                    return Response(b"slow " + rest.encode())
                return respond(ctx.request)

            async def without_arg(ctx):
                return respond(ctx.request)

            for rule in ("/hello/<rest>", "/stream/<rest>", "/slow/<rest>"):
                app.route(rule, methods=["GET", "HEAD"])(with_arg)
            for rule in ("/_soak/stats", "/big"):
                app.route(rule, methods=["GET", "HEAD"])(without_arg)
            app.route("/echo", methods=["POST"])(without_arg)
            context = Context()
            await context.__aenter__()
            component = KyoukaiComponent(app, "127.0.0.1", 0, backend="kyoukai_fast")
            await component.start(context)
            components.append(component)
            return component.server
        # minimal: the protocol with a bare app object, no Kyoukai
        from kyoukai_fast import KyoukaiProtocol

        class Signal:
            def dispatch(self, **kwargs):
                pass

        class MinimalApp:
            request_class = Request
            loop = None

            async def process_request(self, request, parent_context):
                if request.path == "/_soak/stats":
                    return Response(stats(), mimetype="application/json")
                if request.path.startswith("/slow/"):
                    await asyncio.sleep(0)
                    return Response(b"slow " + request.path[6:].encode())
                status, body, _ = answer(request.method, request.path, request.get_data())
                return Response(body, status=status)

        class MinimalComponent:
            app = MinimalApp()
            cfg = {}
            connection_made = Signal()
            connection_lost = Signal()

            def get_server_name(self):
                return "127.0.0.1"

        component = MinimalComponent()
        component.app.loop = loop
        components.append(component)
        return await loop.create_server(
            lambda: KyoukaiProtocol(component, None, "127.0.0.1", 0), "127.0.0.1", 0)

    server = loop.run_until_complete(start())
    port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print(f"READY {port} {os.getpid()} {kyoukai_fast.IMPLEMENTATION}", flush=True)
    loop.run_until_complete(stop.wait())
    server.close()


# --- the client (runs in the worker processes) ------------------------------------------------

class Lost(Exception):
    """A response that did not come, or came wrong."""


async def read_response(reader, head=False):
    """``(version, status, headers, body)`` of one response, strictly framed."""
    try:
        raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT)
    except asyncio.IncompleteReadError as exc:
        raise Lost(f"connection closed before a response ({len(exc.partial)} bytes)") from None
    except asyncio.TimeoutError:
        raise Lost("no response within the timeout") from None
    lines = raw[:-4].split(b"\r\n")
    match = re.fullmatch(rb"HTTP/(1\.[01]) (\d{3}) [^\r\n]*", lines[0])
    if not match:
        raise Lost(f"bad status line {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise Lost(f"bad header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    status = int(match.group(2))
    body = b""
    try:
        if head or status in (204, 304) or 100 <= status < 200:
            pass
        elif b"chunked" in headers.get(b"transfer-encoding", b""):
            parts = []
            while True:
                size_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), IO_TIMEOUT)
                size = int(size_line[:-2].split(b";")[0], 16)
                if size == 0:
                    if await asyncio.wait_for(reader.readexactly(2), IO_TIMEOUT) != b"\r\n":
                        raise Lost("bad end of chunked body")
                    break
                chunk = await asyncio.wait_for(reader.readexactly(size + 2), IO_TIMEOUT)
                if chunk[-2:] != b"\r\n":
                    raise Lost("chunk not followed by CRLF")
                parts.append(chunk[:-2])
            body = b"".join(parts)
        elif b"content-length" in headers:
            body = await asyncio.wait_for(
                reader.readexactly(int(headers[b"content-length"])), IO_TIMEOUT)
        else:
            body = await asyncio.wait_for(reader.read(), IO_TIMEOUT)
    except (asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as exc:
        raise Lost(f"body of a {status} response cut short: {exc!r}") from None
    return match.group(1).decode(), status, headers, body


#: Whether the app streams ``/stream`` (the minimal app) or buffers it (stock Kyoukai turns a
#: generator body into its repr, so the Kyoukai app answers a list, with a Content-Length).
STREAMING_APP = False


class Request:
    """One request to send and what its response must be."""

    __slots__ = ("data", "version", "status", "body", "head", "closes")

    def __init__(self, data, version="1.1", status=200, body=b"", head=False, closes=False):
        self.data = data
        self.version = version
        self.status = status
        self.body = body
        self.head = head
        self.closes = closes


def make_request(rng: random.Random, version="1.1", keep_alive=True) -> Request:
    n = rng.randrange(1_000_000)
    connection = b""
    if version == "1.0" and keep_alive:
        connection = b"Connection: keep-alive\r\n"
    elif version == "1.1" and not keep_alive:
        connection = b"Connection: close\r\n"
    closes = not keep_alive
    kind = rng.random()
    if kind < 0.35:
        path, expect = b"/hello/%d" % n, b"hello %d" % n
        method = b"GET"
    elif kind < 0.55:
        body = rng.randbytes(rng.choice((0, 1, 17, 300, 5000)))
        head = (b"POST /echo HTTP/%s\r\nHost: soak\r\nContent-Length: %d\r\n%s\r\n"
                % (version.encode(), len(body), connection))
        return Request(head + body, version, 200, body, closes=closes)
    elif kind < 0.70:
        path, expect = b"/stream/%d" % n, b"".join(stream_parts(n))
        method = b"GET"
        if version == "1.0" and STREAMING_APP:
            closes = True  # no chunked coding in HTTP/1.0: the body ends with the connection
    elif kind < 0.85:
        path, expect = b"/slow/%d" % n, b"slow %d" % n
        method = b"GET"
    elif kind < 0.95:
        path, expect = b"/hello/%d" % n, b""
        method = b"HEAD"
    else:
        path, expect = b"/nowhere/%d" % n, None  # 404 page (checked by status only)
        method = b"GET"
    data = b"%s %s HTTP/%s\r\nHost: soak\r\n%s\r\n" % (method, path, version.encode(),
                                                      connection)
    status = 404 if expect is None else 200
    return Request(data, version, status, expect, head=method == b"HEAD", closes=closes)


MALFORMED = [
    b"GET / HTTP/1.1\r\nHost: soak\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: soak\r\nBad Header: x\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET / HTTP/1.1\r\nHost: soak\r\nX: a\x00b\r\n\r\n",
    b"GET /\x7f HTTP/1.1\r\nHost: soak\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: soak\r\nContent-Length: x\r\n\r\n",
]


class Stats:
    def __init__(self):
        self.sent = 0           # requests sent (valid, malformed, aborted)
        self.answered = 0       # responses received and checked correct
        self.aborted = 0        # requests the client abandoned on purpose
        self.lost = 0           # responses missing or wrong
        self.errors = []        # the first few descriptions of what was lost


async def check(reader, request: Request, stats: Stats, what: str):
    version, status, headers, body = await read_response(reader, request.head)
    if version != request.version:
        raise Lost(f"{what}: HTTP/{version} answer to an HTTP/{request.version} request")
    if status != request.status:
        raise Lost(f"{what}: status {status}, expected {request.status}: {body[:100]!r}")
    if request.body is not None and body != request.body:
        raise Lost(f"{what}: wrong body {body[:60]!r}, expected {request.body[:60]!r}")
    stats.answered += 1


async def expect_eof(reader, what):
    try:
        rest = await asyncio.wait_for(reader.read(1), IO_TIMEOUT)
    except asyncio.TimeoutError:
        raise Lost(f"{what}: connection not closed") from None
    if rest:
        raise Lost(f"{what}: bytes after the last response: {rest!r}")


async def session(rng: random.Random, port: int, stats: Stats, budget: int):
    """One connection running one kind of session; returns requests sent."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port),
                                            IO_TIMEOUT)
    sent = 0
    kind = rng.random()
    try:
        if kind < 0.30:  # keep-alive, sequential
            for i in range(min(budget, rng.randint(5, 40))):
                closes = i == 0 and rng.random() < 0.05
                request = make_request(rng, keep_alive=not closes)
                writer.write(request.data)
                sent += 1
                stats.sent += 1
                await check(reader, request, stats, "keep-alive")
                if request.closes:
                    await expect_eof(reader, "Connection: close")
                    break
        elif kind < 0.65:  # pipelined, 16 deep
            for _ in range(rng.randint(1, 4)):
                batch = [make_request(rng) for _ in range(16)]
                writer.write(b"".join(r.data for r in batch))
                sent += 16
                stats.sent += 16
                for request in batch:
                    await check(reader, request, stats, "pipelined")
        elif kind < 0.80:  # HTTP/1.0, with and without keep-alive
            keep = rng.random() < 0.5
            for _ in range(rng.randint(2, 6) if keep else 1):
                request = make_request(rng, "1.0", keep_alive=keep)
                writer.write(request.data)
                sent += 1
                stats.sent += 1
                await check(reader, request, stats, "HTTP/1.0")
                if request.closes:
                    await expect_eof(reader, "HTTP/1.0")
                    break
        elif kind < 0.90:  # valid requests, then a malformed one: 400 and close
            batch = [make_request(rng) for _ in range(rng.randint(0, 3))]
            bad = rng.choice(MALFORMED)
            writer.write(b"".join(r.data for r in batch) + bad)
            sent += len(batch) + 1
            stats.sent += len(batch) + 1
            for request in batch:
                await check(reader, request, stats, "before malformed")
            await check(reader, Request(bad, status=400, body=None), stats, "malformed")
            await expect_eof(reader, "after 400")
        elif kind < 0.95:  # the client vanishes mid-request
            request = make_request(rng)
            data = request.data
            if b"POST" in data[:4] and len(data) > 200:
                cut = rng.randrange(data.index(b"\r\n\r\n") + 4, len(data))  # inside the body
            else:
                cut = rng.randrange(1, data.index(b"\r\n\r\n") + 3)           # inside the head
            writer.write(data[:cut])
            await writer.drain()
            sent += 1
            stats.sent += 1
            stats.aborted += 1
        else:  # the client vanishes mid-response
            writer.write(b"GET /big HTTP/1.1\r\nHost: soak\r\n\r\n")
            sent += 1
            stats.sent += 1
            stats.aborted += 1
            if rng.random() < 0.5:
                await asyncio.wait_for(reader.readexactly(rng.randint(1, 4096)), IO_TIMEOUT)
    except Lost as exc:
        stats.lost += 1
        if len(stats.errors) < 10:
            stats.errors.append(str(exc))
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
        stats.lost += 1
        if len(stats.errors) < 10:
            stats.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        if kind >= 0.90:
            writer.transport.abort()  # vanish: no FIN handshake, maybe an RST
        else:
            writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), IO_TIMEOUT)
        except (ConnectionError, asyncio.TimeoutError):
            pass
    return sent


async def client_main(index, port, quota, conns, seed, progress, deadline):
    stats = Stats()
    remaining = [quota]

    async def worker(k):
        rng = random.Random(seed * 1000 + index * 100 + k)
        while remaining[0] > 0 and time.monotonic() < deadline:
            budget = remaining[0]
            remaining[0] -= min(budget, 64)  # reserve, then give back what was not used
            sent = await session(rng, port, stats, min(budget, 64))
            remaining[0] += min(budget, 64) - sent
            with progress.get_lock():
                progress.value += sent

    await asyncio.gather(*(worker(k) for k in range(conns)))
    return stats


def client_process(index, port, quota, conns, seed, progress, deadline, results, streaming):
    global STREAMING_APP
    STREAMING_APP = streaming
    stats = asyncio.run(client_main(index, port, quota, conns, seed, progress, deadline))
    results.put({"sent": stats.sent, "answered": stats.answered, "aborted": stats.aborted,
                 "lost": stats.lost, "errors": stats.errors})


# --- the controller ---------------------------------------------------------------------------

def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def server_stats(port: int) -> dict:
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/_soak/stats")
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--impl", choices=("cython", "python"), default="cython")
    parser.add_argument("--app", choices=("kyoukai", "minimal"), default="kyoukai")
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--conns", type=int, default=8, help="connections per client process")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=0.2,
                        help="fraction of the requests after which RSS is taken as baseline")
    parser.add_argument("--rss-limit-mib", type=float, default=16.0,
                        help="most RSS growth allowed from the end of warm-up to the end")
    parser.add_argument("--time-limit", type=float, default=4 * 3600.0,
                        help="seconds after which the run stops (and fails)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        run_server(args)
        return 0

    started = time.monotonic()
    deadline = started + args.time_limit
    server_log = tempfile.TemporaryFile(mode="w+")
    server = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve", "--impl", args.impl,
         "--app", args.app], stdout=subprocess.PIPE, stderr=server_log, text=True)
    try:
        line = ""
        ready_by = time.monotonic() + 60
        while not line.startswith("READY") and time.monotonic() < ready_by:
            line = server.stdout.readline()
            if not line and server.poll() is not None:
                break
        if not line.startswith("READY"):
            server_log.seek(0)
            print("server did not start:\n" + server_log.read(), file=sys.stderr)
            return 2
        _, port, pid, impl = line.split()
        port, pid = int(port), int(pid)
        print(f"soak: {args.requests} requests, {impl} backend, {args.app} app, "
              f"{args.procs}x{args.conns} connections, server pid {pid} port {port}",
              flush=True)

        ctx = multiprocessing.get_context("spawn")
        progress = ctx.Value("q", 0)
        results = ctx.Queue()
        quotas = [args.requests // args.procs + (1 if i < args.requests % args.procs else 0)
                  for i in range(args.procs)]
        clients = [ctx.Process(target=client_process,
                               args=(i, port, quotas[i], args.conns, args.seed, progress,
                                     deadline, results, args.app == "minimal"))
                   for i in range(args.procs)]
        for client in clients:
            client.start()

        samples = []            # (requests done, RSS KiB)
        warm_rss = None
        last_print = 0.0
        while any(c.is_alive() for c in clients):
            time.sleep(0.25)
            done = progress.value
            rss = rss_kib(pid)
            samples.append((done, rss))
            if warm_rss is None and done >= args.warmup * args.requests:
                warm_rss = rss
            now = time.monotonic()
            if now - last_print >= 5:
                last_print = now
                elapsed = now - started
                print(f"  {done:>9} requests  {done / elapsed:8.0f}/s  RSS {rss / 1024:7.1f} MiB",
                      flush=True)
            if now > deadline + 2 * IO_TIMEOUT:
                for client in clients:
                    client.terminate()
        totals = {"sent": 0, "answered": 0, "aborted": 0, "lost": 0, "errors": []}
        for _ in clients:
            result = results.get(timeout=30)
            for key in ("sent", "answered", "aborted", "lost"):
                totals[key] += result[key]
            totals["errors"] += result["errors"]
        for client in clients:
            client.join(10)
        elapsed = time.monotonic() - started

        # Let the server notice the last disconnects, then look at what it kept.
        time.sleep(0.5)
        end_rss = rss_kib(pid)
        stats = server_stats(port)
        if warm_rss is None:
            warm_rss = samples[0][1] if samples else end_rss
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    server_log.seek(0)
    log_text = server_log.read()
    server_errors = [line for line in log_text.splitlines()
                     if line.startswith(("ERROR", "CRITICAL", "Traceback"))
                     or "never retrieved" in line]

    growth = (end_rss - warm_rss) / 1024
    peak = max(rss for _, rss in samples) / 1024 if samples else end_rss / 1024
    expected_answers = totals["sent"] - totals["aborted"]
    print(f"soak: {totals['sent']} requests sent in {elapsed:.1f}s "
          f"({totals['sent'] / elapsed:.0f}/s): {totals['answered']} answered and checked, "
          f"{totals['aborted']} abandoned by the client on purpose, {totals['lost']} lost")
    print(f"soak: server RSS {warm_rss / 1024:.1f} MiB after warm-up, {end_rss / 1024:.1f} MiB "
          f"at the end ({growth:+.1f} MiB, limit {args.rss_limit_mib} MiB), peak {peak:.1f} MiB")
    print(f"soak: server afterwards: {stats['connections']} connection(s) open (this one), "
          f"{stats['tasks']} task(s); {len(server_errors)} error line(s) in its log")
    failures = []
    if totals["lost"] or totals["answered"] != expected_answers:
        failures.append(f"{totals['lost']} lost, {expected_answers - totals['answered']} "
                        f"unanswered: {totals['errors'][:5]}")
    if totals["sent"] < args.requests:
        failures.append(f"only {totals['sent']} of {args.requests} requests sent "
                        f"(time limit {args.time_limit}s)")
    if growth > args.rss_limit_mib:
        failures.append(f"RSS grew {growth:.1f} MiB after warm-up")
    if stats["connections"] > 1:
        failures.append(f"the server kept {stats['connections'] - 1} closed connection(s)")
    if server_errors:
        failures.append("server logged errors:\n" + "\n".join(server_errors[:20]))
    if failures:
        print("soak: FAILED\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print("soak: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
