#!/usr/bin/env python
"""
Loopback load benchmark: every server of issue 3 side by side, loaded with wrk.

    python bench/load.py            # full run: asyncio + uvloop, with and without pipelining
    python bench/load.py --quick    # a short run: asyncio only, 1 round of 2 s
    python bench/load.py --memory-only

Servers (each its own subprocess on 127.0.0.1, an ephemeral port):

* ``floor``: httptools parses, a constant response is written (the ceiling of any Python backend);
* ``stock-minimal`` / ``fast-c-minimal`` / ``fast-py-minimal``: stock ``kyoukai.backends.httptools_``,
  kyoukai_fast compiled, kyoukai_fast pure-Python, each with the minimal app (``process_request``
  returns ``Response("Hello, world!")``);
* ``fast-c-prebuilt``: kyoukai_fast compiled with an app that returns one prebuilt Response: the
  backend's own cost with the app's work taken out, so that the table can split a request's
  server CPU into floor, backend and app (the "best any backend could reach" ceilings);
* ``stock-kyoukai`` / ``fast-kyoukai``: a real Kyoukai hello-world app through
  ``KyoukaiComponent(..., backend=...)``;
* ``uvicorn``: uvicorn (httptools) with a minimal ASGI app.

Rounds are interleaved (A B C ... A B C ...) so drift of this shared machine hits every server
alike; the table gives the median requests/s, the median p99 latency, and ratios to the floor and
to stock Kyoukai. A separate correctness pass checks with a wrk Lua ``response`` hook that every
response is a 200 with the expected body, pipelined too. Then the RSS growth per idle keep-alive
connection (floor, stock, kyoukai_fast), and the micro targets (environ construction, response
formatting) with ``timeit``. Results: ``bench/results/load.{md,json,png}``.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import timeit

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")

DEFAULT_SERVERS = ("floor", "stock-minimal", "fast-c-minimal", "fast-c-prebuilt",
                   "fast-py-minimal", "stock-kyoukai", "fast-kyoukai", "uvicorn")
#: The cost of a line per request, beside fast-kyoukai (``--servers`` names them): the access log
#: on (written to the server's log file by its thread), and, instead, Kyoukai's own log_route
#: line through ``logging`` (what the CLI's default ``--log-level info`` wrote before).
LOG_SERVERS = ("fast-kyoukai-access-log", "fast-kyoukai-route-log")
SERVERS = DEFAULT_SERVERS + LOG_SERVERS
LOOPS = ("asyncio", "uvloop")
BODY = b"Hello, world!"
FLOOR_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
                  b"Content-Length: 13\r\n\r\n" + BODY)
#: What "x stock" compares each server to.
STOCK_OF = {"stock-kyoukai": "stock-kyoukai", "fast-kyoukai": "stock-kyoukai",
            **{kind: "stock-kyoukai" for kind in LOG_SERVERS}}
IDLE_TIMEOUT = 600.0  # keep idle connections open through the memory measurement


# --- the servers (run as ``load.py --serve KIND --loop LOOP``) ----------------------------------

def _listening_socket() -> socket.socket:
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only when the listening
    # socket says TCP, as its own create_server's do (else Nagle + delayed ACK stall responses
    # written in several pieces).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    return sock


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _announce(port: int) -> None:
    sys.stdout.write(f"PORT {port}\n")
    sys.stdout.flush()


def _floor_protocol():
    import httptools

    class FloorProtocol(asyncio.Protocol):
        """Parse with httptools, answer every request with one constant response.

        A plain ``Protocol``, as the issue defines the floor. Reading into a buffer made once
        (``BufferedProtocol``, as kyoukai_fast does) costs a Python-level floor more than it
        saves, two more Python calls a read; the page-fault column shows if a run's floor ever
        paid asyncio's per-read mmap instead (see ``kyoukai_fast._read_buffer``).
        """

        def connection_made(self, transport):
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)

        def data_received(self, data):
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.close()

        def on_message_complete(self):
            self.transport.write(FLOOR_RESPONSE)
            if not self.parser.should_keep_alive():
                self.transport.close()

    return FloorProtocol


async def _serve_minimal(kind: str) -> None:
    sys.path.insert(0, HERE)
    import _support

    loop = asyncio.get_running_loop()
    sock = _listening_socket()
    if kind == "floor":
        factory = _floor_protocol()
    else:
        module = {"stock-minimal": "stock", "fast-c-minimal": "cython", "fast-c-prebuilt": "cython",
                  "fast-py-minimal": "python"}[kind]
        protocol_class = _support.IMPLEMENTATIONS[module][0].KyoukaiProtocol
        app_class = _support.PrebuiltApp if kind == "fast-c-prebuilt" else _support.MinimalApp
        component = _support.MinimalComponent(app_class(loop))
        component.cfg = {"keepalive_timeout": IDLE_TIMEOUT}
        port = sock.getsockname()[1]

        def factory():
            return protocol_class(component, None, "127.0.0.1", port)

    server = await loop.create_server(factory, sock=sock, backlog=4096)
    _announce(sock.getsockname()[1])
    await server.serve_forever()


async def _serve_kyoukai(kind: str) -> None:
    import kyoukai_fast.compat

    kyoukai_fast.compat.apply()
    from asphalt.core import Context
    from kyoukai import Kyoukai, KyoukaiComponent

    loop = asyncio.get_running_loop()
    app = Kyoukai("hello", loop=loop)

    @app.route("/")
    async def index(ctx):
        return "Hello, world!"

    backend = "kyoukai.backends.httptools_" if kind == "stock-kyoukai" else "kyoukai_fast"
    settings = {"access_log": True} if kind == "fast-kyoukai-access-log" else {}
    if kind == "fast-kyoukai-route-log":
        import logging

        logging.getLogger("Kyoukai").setLevel(logging.INFO)  # to the root handler: the log file
    async with Context() as ctx:
        for attempt in range(10):
            port = _free_port()
            component = KyoukaiComponent(app, "127.0.0.1", port, backend=backend,
                                         keepalive_timeout=IDLE_TIMEOUT, **settings)
            try:
                await component.start(ctx)
                break
            except OSError:
                if attempt == 9:
                    raise
        _announce(port)
        if settings:
            sys.stdout = sys.stderr  # access lines to the server's log file, not the port pipe
        await component.server.serve_forever()


async def _asgi_hello(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": BODY})


async def _serve_uvicorn(loop_name: str) -> None:
    import uvicorn

    sock = _listening_socket()
    config = uvicorn.Config(_asgi_hello, http="httptools", loop=loop_name, lifespan="off",
                            log_level="warning", access_log=False, backlog=4096)
    server = uvicorn.Server(config)
    # serve() announces nothing: announce once the socket is being served.
    asyncio.get_running_loop().call_later(0.2, _announce, sock.getsockname()[1])
    await server.serve(sockets=[sock])


def serve(kind: str, loop_name: str) -> None:
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.basicConfig(level=logging.WARNING)
    _raise_nofile()
    if loop_name == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    if kind in ("floor", "stock-minimal", "fast-c-minimal", "fast-c-prebuilt", "fast-py-minimal"):
        main = _serve_minimal(kind)
    elif kind in ("stock-kyoukai", "fast-kyoukai") + LOG_SERVERS:
        main = _serve_kyoukai(kind)
    elif kind == "uvicorn":
        main = _serve_uvicorn(loop_name)
    else:
        raise SystemExit(f"unknown server {kind}")
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    try:
        loop.run_until_complete(main)
    except RuntimeError:  # stopped by SIGTERM
        pass


# --- the driver --------------------------------------------------------------------------------

def _raise_nofile(want: int = 20000) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else want
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


class Server:
    """One server subprocess; ``port`` once it listens."""

    def __init__(self, kind: str, loop_name: str, log_dir: str = RESULTS):
        self.kind = kind
        self.loop_name = loop_name
        os.makedirs(log_dir, exist_ok=True)
        # A server's own complaints (stock Kyoukai's tracebacks under pipelining) go to a log.
        self._log = open(os.path.join(log_dir, f"server-{kind}-{loop_name}.log"), "w")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.path.join(ROOT, "src") + os.pathsep + env.get("PYTHONPATH", "")
        if kind == "fast-py-minimal":
            env["KYOUKAI_FAST_NO_EXTENSIONS"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve", kind, "--loop", loop_name],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, stderr=self._log)
        self.port = self._read_port(timeout=30.0)

    def _read_port(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                self.stop()
                raise RuntimeError(f"{self.kind} did not start within {timeout} s")
            chunk = os.read(self.proc.stdout.fileno(), 1)
            if not chunk:
                raise RuntimeError(f"{self.kind} exited with {self.proc.wait()}")
            line += chunk
        selector.close()
        match = re.match(rb"PORT (\d+)", line)
        if not match:
            raise RuntimeError(f"{self.kind} said {line!r}")
        return int(match.group(1))

    def rss(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def _stat(self) -> list:
        with open(f"/proc/{self.proc.pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far."""
        fields = self._stat()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def page_faults(self) -> int:
        """Minor page faults of the server process so far. A server that maps fresh memory
        per read (asyncio's 256 KiB receive served by mmap, see kyoukai_fast._read_buffer)
        shows one or more per request, where a steady one shows almost none."""
        return int(self._stat()[7])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()


LUA_LOAD = r"""
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  local depth = tonumber(args[1]) or 1
  local r = {}
  for i = 1, depth do r[i] = wrk.format(nil, "/") end
  req = table.concat(r)
end
function request() return req end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKRESULT {"requests": %d, "duration_us": %d, "p50_us": %.1f, ' ..
    '"p99_us": %.1f, "max_us": %.1f, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "status_errors": %d, "timeouts": %d, "ok": -1, "bad": -1}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""

# The correctness pass: the same requests, and every response checked (status and body).
LUA_CHECK = LUA_LOAD.replace('"ok": -1, "bad": -1}\\n\',', '"ok": %d, "bad": %d}\\n\',').replace(
    "e.status, e.timeout))", "e.status, e.timeout, ok, bad))").replace(
    "function done(summary, latency, requests)", r"""
function response(status, headers, body)
  if status == 200 and body == "Hello, world!" then ok = ok + 1 else bad = bad + 1 end
end
function done(summary, latency, requests)
  local ok, bad = 0, 0
  for _, t in ipairs(threads) do ok = ok + t:get("ok"); bad = bad + t:get("bad") end""").replace(
    "  req = table.concat(r)\n", "  req = table.concat(r)\n  ok = 0\n  bad = 0\n")


def ensure_tool(command: str, package: str) -> str | None:
    """``command`` from PATH, else installed from Debian's ``package``; ``None`` if that cannot
    be done."""
    found = shutil.which(command)
    if found:
        return found
    if shutil.which("apt-get"):
        log(f"{command} not found: installing {package} with apt-get")
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        for step in (["apt-get", "install", "-y", package], ["apt-get", "update"],
                     ["apt-get", "install", "-y", package]):
            subprocess.run(sudo + step, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=600, check=False)
            if shutil.which(command):
                return shutil.which(command)
    return None


def ensure_wrk() -> str | None:
    return ensure_tool("wrk", "wrk")


def run_wrk(wrk: str, script: str, port: int, connections: int, duration: float,
            depth: int) -> dict:
    command = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout",
               "2s", "-s", script, f"http://127.0.0.1:{port}/", "--", str(depth)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    match = re.search(r"WRKRESULT (\{.*\})", result.stdout)
    if not match:
        raise RuntimeError(f"wrk failed: {result.stdout}\n{result.stderr}")
    data = json.loads(match.group(1))
    data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
    return data


def python_load(port: int, connections: int, duration: float, depth: int) -> dict:
    """Fallback load generator (only when wrk cannot be had): asyncio clients, bounded in time."""
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * depth
    latencies: list = []
    counts = {"ok": 0, "bad": 0}

    async def client(deadline):
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        try:
            while time.monotonic() < deadline:
                start = time.perf_counter()
                writer.write(request)
                for _ in range(depth):
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                    body = await asyncio.wait_for(reader.readexactly(length), 5)
                    good = head.startswith(b"HTTP/1.1 200 ") and body == BODY
                    counts["ok" if good else "bad"] += 1
                latencies.append(time.perf_counter() - start)
        finally:
            writer.close()

    async def main():
        deadline = time.monotonic() + duration
        await asyncio.gather(*(client(deadline) for _ in range(connections)))

    start = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - start
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)] if latencies else 0.0
    total = counts["ok"] + counts["bad"]
    return {"requests": total, "duration_us": elapsed * 1e6, "rps": total / elapsed,
            "p50_us": latencies[len(latencies) // 2] * 1e6 if latencies else 0.0,
            "p99_us": p99 * 1e6, "ok": counts["ok"], "bad": counts["bad"], "status_errors": 0,
            "connect_errors": 0, "read_errors": 0, "write_errors": 0, "timeouts": 0}


def measure_idle_memory(loop_name: str, kinds, count: int, log_dir: str = RESULTS) -> dict:
    """RSS growth per idle keep-alive connection (each made one request, then stays open)."""
    _raise_nofile()
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    results = {}
    for kind in kinds:
        server = Server(kind, loop_name, log_dir)
        try:
            def connect_many(n):
                socks = []
                for _ in range(n):
                    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                    sock.settimeout(5)
                    sock.sendall(request)
                    data = b""
                    while not data.endswith(BODY):
                        chunk = sock.recv(4096)
                        if not chunk:
                            raise RuntimeError(f"{kind} closed a keep-alive connection")
                        data += chunk
                    socks.append(sock)
                return socks

            # Warm up: allocator arenas, caches, the first connections' one-time costs.
            for sock in connect_many(200):
                sock.close()
            time.sleep(0.5)
            before = server.rss()
            socks = connect_many(count)
            time.sleep(0.5)
            after = server.rss()
            # Still open and still served: one more request on the first and the last.
            for sock in (socks[0], socks[-1]):
                sock.sendall(request)
                if not sock.recv(4096).startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"{kind}: idle connection not served")
            for sock in socks:
                sock.close()
            per_connection = (after - before) / count
            results[kind] = {"rss_before": before, "rss_after": after, "connections": count,
                             "bytes_per_connection": per_connection}
            log(f"  idle memory {loop_name:8} {kind:16} {per_connection:8.0f} B/connection")
        finally:
            server.stop()
    return results


def micro_ratios(seconds: float) -> dict:
    """Compiled vs stock: environ construction and response formatting (timeit, best of 5)."""
    sys.path.insert(0, HERE)
    import _support
    from werkzeug.wrappers import Response

    out = {}
    environ = _support.IMPLEMENTATIONS["python"][1].to_wsgi_environment(
        _support.REQUEST_HEADERS, "GET", _support.REQUEST_TARGET, "1.1")
    response = Response("Hello, world!")
    for name in ("cython", "python", "stock"):
        if _support.IMPLEMENTATIONS[name] is None:
            continue
        wsgi = _support.IMPLEMENTATIONS[name][1]
        cases = {
            "environ": lambda w=wsgi: w.to_wsgi_environment(
                _support.REQUEST_HEADERS, "GET", _support.REQUEST_TARGET, "1.1", None),
            "format": lambda w=wsgi: w.get_formatted_response(response, environ),
        }
        for case, func in cases.items():
            timer = timeit.Timer(func)
            number, _ = timer.autorange()
            number = max(1, int(number * seconds / 0.2))
            best = min(timer.repeat(5, number)) / number
            out.setdefault(case, {})[name] = best * 1e9
    return out


def asyncio_cpu(rows: list) -> dict:
    """Server CPU µs per request by server, asyncio loop, no pipelining."""
    return {row["server"]: row["cpu_us"] for row in rows
            if row["loop"] == "asyncio" and row["pipeline"] == 1}


def ceilings(rows: list) -> list:
    """Where a request's server CPU goes, and the best ratio any backend could reach.

    ``(description, measured, best, target)`` for the server-CPU targets (asyncio, no
    pipelining). From the same run: the floor's CPU per request, the compiled backend's own cost
    above it (``fast-c-prebuilt``: the app returns a prebuilt Response) and the app's own work
    (``fast-c-minimal`` or ``fast-kyoukai`` minus ``fast-c-prebuilt``). A backend costing nothing
    beyond the floor would still spend floor + app per request.
    """
    cpu = asyncio_cpu(rows)

    def have(*kinds):
        return all(cpu.get(k) == cpu.get(k) and cpu.get(k) for k in kinds)  # present, not NaN

    if not have("floor", "fast-c-prebuilt", "fast-c-minimal"):
        return []
    floor, backend = cpu["floor"], cpu["fast-c-prebuilt"]
    best_minimal = floor + max(0.0, cpu["fast-c-minimal"] - backend)
    out = [("minimal app vs floor", floor / cpu["fast-c-minimal"], floor / best_minimal, 0.5)]
    for kind, mine, description, target in (
            ("stock-minimal", "fast-c-minimal", "minimal app vs stock", 5),
            ("uvicorn", "fast-c-minimal", "minimal app vs uvicorn", 2),
            ("stock-kyoukai", "fast-kyoukai", "real Kyoukai hello-world vs stock", 2)):
        if have(kind, mine):
            best = floor + max(0.0, cpu[mine] - backend)
            out.append((description, cpu[kind] / cpu[mine], cpu[kind] / best, target))
    return out


def median(values):
    return statistics.median(values) if values else float("nan")


def summarize(rounds: dict, correctness: dict) -> list:
    rows = []
    for (loop_name, depth), by_server in rounds.items():
        medians = {kind: median([r["rps"] for r in runs]) for kind, runs in by_server.items()}
        cpu = {kind: median([r.get("cpu_us", float("nan")) for r in runs])
               for kind, runs in by_server.items()}
        for kind, runs in by_server.items():
            rps = medians[kind]
            stock = medians.get(STOCK_OF.get(kind, "stock-minimal"))
            check = correctness.get((loop_name, depth, kind))
            rows.append({
                "loop": loop_name, "pipeline": depth, "server": kind, "rps": rps,
                "p99_ms": median([r["p99_us"] for r in runs]) / 1000,
                "x_floor": rps / medians["floor"] if medians.get("floor") else None,
                "x_stock": rps / stock if stock else None,
                "cpu_us": cpu[kind],
                "faults_per_request": median([r.get("faults_per_request", float("nan"))
                                              for r in runs]),
                "cpu_x_floor": (cpu["floor"] / cpu[kind]) if "floor" in cpu else None,
                "cpu_x_stock": (cpu[STOCK_OF.get(kind, "stock-minimal")] / cpu[kind]
                                if STOCK_OF.get(kind, "stock-minimal") in cpu else None),
                "errors": sum(r["status_errors"] + r["read_errors"] + r["write_errors"]
                              + r["connect_errors"] + r["timeouts"] for r in runs),
                "rounds": [r["rps"] for r in runs],
                "checked_ok": check["ok"] if check else None,
                "checked_bad": check["bad"] if check else None,
            })
    return rows


def _fmt_ratio(value):
    return "" if value is None else f"{value:.2f}"


def markdown_table(rows: list) -> str:
    lines = ["| loop | pipelining | server | req/s (median) | p99 ms | × floor | × stock "
             "| server CPU µs/req | CPU: × floor | CPU: × stock | page faults/req | correct |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        if row["checked_ok"] is None:
            correct = "not checked"
        elif row["checked_bad"] == 0 and row["checked_ok"] > 0:
            correct = f"yes ({row['checked_ok']:,})"
        else:
            correct = f"NO: {row['checked_bad']:,} bad of {row['checked_ok'] + row['checked_bad']:,}"
        # wrk records no latency for pipelined requests.
        p99 = "n/a" if row["pipeline"] > 1 and not row["p99_ms"] else f"{row['p99_ms']:.2f}"
        lines.append(
            f"| {row['loop']} | {'16-deep' if row['pipeline'] > 1 else 'none'} | {row['server']} "
            f"| {row['rps']:,.0f} | {p99} | {_fmt_ratio(row['x_floor'])} "
            f"| {_fmt_ratio(row['x_stock'])} | {row['cpu_us']:.1f} "
            f"| {_fmt_ratio(row['cpu_x_floor'])} | {_fmt_ratio(row['cpu_x_stock'])} "
            f"| {row['faults_per_request']:.2f} | {correct} |")
    return "\n".join(lines)


def check_targets(rows: list, memory: dict, micro: dict) -> list:
    """The targets of issue 3 (asyncio loop), each ``(description, measured, met)``."""
    def get(kind, depth=1, field="rps"):
        for row in rows:
            if row["loop"] == "asyncio" and row["pipeline"] == depth and row["server"] == kind:
                return row[field]
        return None

    targets = []

    def ratio(description, a, b, minimum):
        if a is None or b is None:
            return
        value = a / b
        targets.append((description, f"{value:.2f}× (need ≥ {minimum}×)", value >= minimum))

    def cpu_ratio(description, kind, other, minimum):
        mine, theirs = get(kind, 1, "cpu_us"), get(other, 1, "cpu_us")
        if mine and theirs and mine == mine and theirs == theirs:  # present and not NaN
            value = theirs / mine
            targets.append((description + " (server CPU per request)",
                            f"{value:.2f}× (need ≥ {minimum}×)", value >= minimum))

    ratio("compiled minimal app vs floor", get("fast-c-minimal"), get("floor"), 0.5)
    cpu_ratio("compiled minimal app vs floor", "fast-c-minimal", "floor", 0.5)
    cpu_ratio("compiled minimal app vs stock", "fast-c-minimal", "stock-minimal", 5)
    cpu_ratio("compiled minimal app vs uvicorn", "fast-c-minimal", "uvicorn", 2)
    cpu_ratio("pure-Python minimal app vs stock", "fast-py-minimal", "stock-minimal", 2)
    cpu_ratio("real Kyoukai hello-world vs stock", "fast-kyoukai", "stock-kyoukai", 2)
    ratio("compiled minimal app vs stock", get("fast-c-minimal"), get("stock-minimal"), 5)
    ratio("compiled minimal app vs uvicorn", get("fast-c-minimal"), get("uvicorn"), 2)
    ratio("pure-Python minimal app vs stock", get("fast-py-minimal"), get("stock-minimal"), 2)
    ratio("real Kyoukai hello-world vs stock", get("fast-kyoukai"), get("stock-kyoukai"), 2)
    ratio("compiled 16-deep pipelined vs its own non-pipelined", get("fast-c-minimal", 16),
          get("fast-c-minimal"), 1.5)
    bad = get("fast-c-minimal", 16, "checked_bad")
    if bad is not None:
        targets.append(("compiled pipelined: every response correct",
                        f"{bad} bad of {bad + get('fast-c-minimal', 16, 'checked_ok')}", bad == 0))
    p99_fast, p99_stock = get("fast-c-minimal", 1, "p99_ms"), get("stock-minimal", 1, "p99_ms")
    if p99_fast is not None and p99_stock is not None:
        targets.append(("p99 latency, compiled vs stock (minimal app)",
                        f"{p99_fast:.2f} ms vs {p99_stock:.2f} ms", p99_fast <= p99_stock))
    for case in ("environ", "format"):
        if case in micro and "cython" in micro[case] and "stock" in micro[case]:
            value = micro[case]["stock"] / micro[case]["cython"]
            targets.append((f"micro {case}: compiled vs stock",
                            f"{value:.1f}× ({micro[case]['cython']:.0f} ns vs "
                            f"{micro[case]['stock']:.0f} ns; need ≥ 10×)", value >= 10))
    mem = memory.get("asyncio") or {}
    if "fast-c-minimal" in mem and "floor" in mem:
        extra = (mem["fast-c-minimal"]["bytes_per_connection"]
                 - mem["floor"]["bytes_per_connection"])
        targets.append(("idle keep-alive connection, compiled above floor",
                        f"{extra:.0f} B (need ≤ 512 B)", extra <= 512))
    return targets


def write_chart(rows: list, path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not installed: no chart")
        return False
    configs = sorted({(r["loop"], r["pipeline"]) for r in rows})
    fig, axes = plt.subplots(len(configs), 1, figsize=(10, 3.2 * len(configs)), squeeze=False)
    for ax, (loop_name, depth) in zip(axes[:, 0], configs):
        sub = [r for r in rows if r["loop"] == loop_name and r["pipeline"] == depth]
        names = [r["server"] for r in sub]
        values = [r["rps"] for r in sub]
        colors = ["#888888" if n == "floor" else "#d62728" if n.startswith("stock")
                  else "#1f77b4" if n.startswith("fast") else "#2ca02c" for n in names]
        bars = ax.barh(names, values, color=colors)
        ax.invert_yaxis()
        for bar, value in zip(bars, values):
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:,.0f}",
                    va="center", fontsize=8)
        ax.set_title(f"{loop_name}, {'16-deep pipelining' if depth > 1 else 'no pipelining'}, "
                     "64 connections", fontsize=10)
        ax.set_xlabel("requests/s (median of rounds)")
        ax.set_xlim(0, max(values) * 1.18 if values else 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--loop", action="append", choices=LOOPS,
                        help="event loop(s) to run the servers on (default: both)")
    parser.add_argument("--servers", default=",".join(DEFAULT_SERVERS),
                        help="comma-separated servers (default: all but "
                             + ", ".join(LOG_SERVERS) + "): " + ", ".join(SERVERS))
    parser.add_argument("--duration", type=float, help="seconds per wrk run (default 5)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--pipeline", default="1,16", help="pipelining depths (default 1,16)")
    parser.add_argument("--memory-connections", type=int)
    parser.add_argument("--no-memory", action="store_true", help="skip the idle-memory benchmark")
    parser.add_argument("--memory-only", action="store_true")
    parser.add_argument("--no-micro", action="store_true", help="skip the micro targets")
    parser.add_argument("--quick", action="store_true",
                        help="asyncio only, 1 round of 2 s, 1000 idle connections")
    parser.add_argument("--python-load", action="store_true",
                        help="use the Python load generator even if wrk is available")
    parser.add_argument("--output", default=RESULTS, help="results folder")
    args = parser.parse_args(argv)

    if args.serve:
        serve(args.serve, (args.loop or ["asyncio"])[0])
        return 0

    loops = args.loop or (["asyncio"] if args.quick else list(LOOPS))
    # --quick changes the defaults; explicit options still win.
    if args.duration is None:
        args.duration = 2.0 if args.quick else 5.0
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.memory_connections is None:
        args.memory_connections = 1000 if args.quick else 3000
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    for kind in servers:
        if kind not in SERVERS:
            parser.error(f"unknown server {kind!r}")
    depths = [int(d) for d in args.pipeline.split(",")]

    wrk = None if args.python_load else ensure_wrk()
    if wrk is None:
        log("load generator: Python fallback (wrk unavailable)")
    os.makedirs(args.output, exist_ok=True)
    started = time.time()

    rounds: dict = {}
    correctness: dict = {}
    memory: dict = {}
    micro: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        load_script = os.path.join(tmp, "load.lua")
        check_script = os.path.join(tmp, "check.lua")
        with open(load_script, "w") as f:
            f.write(LUA_LOAD)
        with open(check_script, "w") as f:
            f.write(LUA_CHECK)

        def load(port, depth, duration, check=False):
            if wrk is None:
                return python_load(port, args.connections, duration, depth)
            return run_wrk(wrk, check_script if check else load_script, port,
                           args.connections, duration, depth)

        if not args.memory_only:
            total = len(loops) * len(depths) * args.rounds * len(servers)
            step = 0
            for loop_name in loops:
                log(f"starting {len(servers)} servers on {loop_name}")
                running = {kind: Server(kind, loop_name, args.output) for kind in servers}
                try:
                    for depth in depths:
                        for kind, server in running.items():  # warm-up and correctness
                            load(server.port, depth, 1.0)
                            check = load(server.port, depth, 1.0, check=True)
                            correctness[(loop_name, depth, kind)] = check
                            log(f"  check {loop_name:8} pipeline={depth:<2} {kind:16} "
                                f"ok={check['ok']:,} bad={check['bad']:,}")
                        for round_index in range(args.rounds):
                            for kind, server in running.items():
                                step += 1
                                cpu_before = server.cpu_seconds()
                                faults_before = server.page_faults()
                                result = load(server.port, depth, args.duration)
                                # CPU time per request: steadier than req/s on a shared machine,
                                # where a server gets only part of a core.
                                requests = max(1, result["requests"])
                                result["cpu_us"] = ((server.cpu_seconds() - cpu_before)
                                                    / requests * 1e6)
                                result["faults_per_request"] = ((server.page_faults()
                                                                 - faults_before) / requests)
                                rounds.setdefault((loop_name, depth), {}).setdefault(
                                    kind, []).append(result)
                                log(f"[{step:3}/{total}] {loop_name:8} pipeline={depth:<2} "
                                    f"round {round_index + 1} {kind:16} "
                                    f"{result['rps']:10,.0f} req/s  p99 "
                                    f"{result['p99_us'] / 1000:7.2f} ms  server CPU "
                                    f"{result['cpu_us']:6.1f} µs/request")
                finally:
                    for server in running.values():
                        server.stop()
        if not args.no_memory:
            kinds = [k for k in ("floor", "stock-minimal", "fast-c-minimal", "fast-py-minimal")
                     if k in servers or args.memory_only]
            for loop_name in loops:
                memory[loop_name] = measure_idle_memory(loop_name, kinds,
                                                        args.memory_connections, args.output)
    if not args.no_micro and not args.memory_only:
        micro = micro_ratios(0.2 if args.quick else 1.0)

    rows = summarize(rounds, correctness)
    targets = check_targets(rows, memory, micro)
    command = "python bench/load.py " + " ".join(sys.argv[1:] if argv is None else argv)
    info = (f"{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
            f"{args.connections} connections, {args.rounds} × {args.duration:g} s rounds, "
            f"load: {'wrk' if wrk else 'Python'}")
    md = [f"Command: `{command.strip()}` ({info})", ""]
    if rows:
        md += [markdown_table(rows), "",
               "× stock: against stock Kyoukai with the same app (`stock-kyoukai` for the real "
               "Kyoukai app, `stock-minimal` otherwise). correct: a separate 1 s wrk pass that "
               "checks every response's status and body. p99: wrk's latency percentile (none "
               "with pipelining). server CPU µs/req: user+system CPU time of the server process "
               "per request (median of rounds), steadier than req/s on a shared machine where "
               "a server gets only part of a core; CPU ratios compare those costs (higher is "
               "cheaper).", ""]
    if memory:
        md += ["| loop | server | RSS growth per idle keep-alive connection |", "|---|---|---:|"]
        for loop_name, by_kind in memory.items():
            for kind, m in by_kind.items():
                md.append(f"| {loop_name} | {kind} | {m['bytes_per_connection']:,.0f} B "
                          f"({m['connections']:,} connections) |")
        md.append("")
    if micro:
        md += ["| micro (ns per call, best of 5) | compiled | pure-Python | stock |",
               "|---|---:|---:|---:|"]
        for case, by_impl in micro.items():
            md.append(f"| {case} | " + " | ".join(f"{by_impl.get(n, float('nan')):,.0f}"
                                                  for n in ("cython", "python", "stock")) + " |")
        md.append("")
    if targets:
        md += ["| target (asyncio, 64 connections) | measured | met |", "|---|---|---|"]
        md += [f"| {d} | {m} | {'yes' if ok else 'NO'} |" for d, m, ok in targets]
        md.append("")
    limits = ceilings(rows)
    if limits:
        cpu = asyncio_cpu(rows)
        md += [f"Where a request's server CPU goes (asyncio, no pipelining): floor "
               f"{cpu['floor']:.1f} µs; kyoukai_fast's own cost above it "
               f"{cpu['fast-c-prebuilt'] - cpu['floor']:.1f} µs (`fast-c-prebuilt`); the "
               f"minimal app's own work {cpu['fast-c-minimal'] - cpu['fast-c-prebuilt']:.1f} µs"
               + (f", the real Kyoukai app's {cpu['fast-kyoukai'] - cpu['fast-c-prebuilt']:.1f} µs"
                  if "fast-kyoukai" in cpu else "")
               + ". A backend costing nothing beyond the floor would still spend floor + app per "
               "request, which caps every backend's ratios:", "",
               "| server CPU ratio (asyncio) | measured | best any backend could reach | target |",
               "|---|---:|---:|---:|"]
        md += [f"| {d} | {m:.2f}× | {best:.2f}× | {t}× |" for d, m, best, t in limits]
        md.append("")
    text = "\n".join(md)
    print(text)
    with open(os.path.join(args.output, "load.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(args.output, "load.json"), "w") as f:
        json.dump({"command": command.strip(), "info": info, "rows": rows, "memory": memory,
                   "micro_ns": micro,
                   "ceilings": [{"ratio": d, "measured": m, "best": b, "target": t}
                                for d, m, b, t in limits],
                   "targets": [{"target": d, "measured": m, "met": ok} for d, m, ok in targets],
                   "correctness": [{"loop": k[0], "pipeline": k[1], "server": k[2], **v}
                                   for k, v in correctness.items()]}, f, indent=2)
    if rows and write_chart(rows, os.path.join(args.output, "load.png")):
        log(f"chart: {os.path.join(args.output, 'load.png')}")
    log(f"results in {args.output} ({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
