#!/usr/bin/env python
"""
The servers the load benchmark compares, each run as its own process on 127.0.0.1:

    python bench/servers.py KIND [--loop asyncio|uvloop]  # prints "PORT <n>"; until SIGTERM

* ``floor``: httptools parses, one constant response is written (the ceiling of any Python
  backend);
* ``stock-minimal`` / ``fast-c-minimal`` / ``fast-py-minimal``: stock
  ``kyoukai.backends.httptools_``, kyoukai_fast compiled, kyoukai_fast pure-Python, each with the
  minimal app (``process_request`` returns ``Response("Hello, world!")``);
* ``fast-c-prebuilt``: kyoukai_fast compiled with an app that returns one prebuilt Response: the
  backend's own cost with the app's work taken out, so a request's server CPU can be split into
  floor, backend and app;
* ``stock-kyoukai`` / ``fast-kyoukai``: a real Kyoukai hello-world app through
  ``KyoukaiComponent(..., backend=...)``;
* ``fast-py-kyoukai``: the same app on kyoukai_fast's pure-Python twin;
* ``fast-kyoukai-stock-pipeline``: the same app on kyoukai_fast compiled, with the app's own
  ``process_request`` (``KYOUKAI_FAST_NO_PIPELINE=1``) instead of the fast request pipeline;
* ``stock-kyoukai-realistic`` / ``fast-kyoukai-realistic`` / ``fast-py-kyoukai-realistic``: a
  realistic Kyoukai app (``_support.kyoukai_realistic_app``: a blueprint with a prefix, a
  before-request hook, ``/api/user/<int:uid>``, an error handler) on stock Kyoukai, kyoukai_fast
  compiled and pure-Python; the load cycles through ``_support.REALISTIC_ANSWERS`` (a 404 among
  them) and checks each answer;
* ``uvicorn``: uvicorn (httptools) with a minimal ASGI app;
* ``starlette``: what a user would pick instead of Kyoukai: Starlette on uvicorn (httptools),
  one hello-world route;
* ``fast-kyoukai-access-log`` / ``fast-kyoukai-route-log`` (not run by default; ``--servers``
  names them): ``fast-kyoukai`` with the access log on (written by its thread to the server's
  log file), or instead with Kyoukai's own ``log_route`` line through ``logging`` (what the
  CLI's default ``--log-level info`` used to write): the cost of a line per request;
* ``fast-c-minimal-access-log`` (not run by default): ``fast-c-minimal`` with the access log on,
  written to a file (``access_log_file``): the access log's cost beside a server whose own is
  smallest, so that a few µs are not lost in the Kyoukai app's noise.

HTTP/2, over TLS (``KYOUKAI_FAST_BENCH_CERT`` / ``KYOUKAI_FAST_BENCH_KEY`` name the certificate),
for ``bench/http2_load.py``:

* ``fast-c-tls`` / ``fast-py-tls``: kyoukai_fast compiled / pure-Python with the minimal app,
  ALPN ``h2`` and ``http/1.1`` (one server answers both protocols);
* ``hypercorn``: hypercorn with the same minimal ASGI app as uvicorn's, ALPN ``h2``.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import socket
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

#: The realistic Kyoukai app's servers: their load is the mixed requests of
#: ``_support.REALISTIC_ANSWERS``.
REALISTIC_SERVERS = ("stock-kyoukai-realistic", "fast-kyoukai-realistic",
                     "fast-py-kyoukai-realistic")
DEFAULT_SERVERS = ("floor", "stock-minimal", "fast-c-minimal", "fast-c-prebuilt",
                   "fast-py-minimal", "stock-kyoukai", "fast-kyoukai", "fast-py-kyoukai",
                   "fast-kyoukai-stock-pipeline") + REALISTIC_SERVERS + ("uvicorn", "starlette")
LOG_SERVERS = ("fast-kyoukai-access-log", "fast-kyoukai-route-log", "fast-c-minimal-access-log")
SERVERS = DEFAULT_SERVERS + LOG_SERVERS
#: The real Kyoukai app's servers.
KYOUKAI_SERVERS = ("stock-kyoukai", "fast-kyoukai", "fast-py-kyoukai",
                   "fast-kyoukai-stock-pipeline", "fast-kyoukai-access-log",
                   "fast-kyoukai-route-log") + REALISTIC_SERVERS
LOOPS = ("asyncio", "uvloop")
#: Servers whose process must run the pure-Python implementation.
#: The HTTP/2 servers (TLS) of ``bench/http2_load.py``.
HTTP2_SERVERS = ("fast-c-tls", "fast-py-tls", "hypercorn")
PURE_PYTHON = ("fast-py-minimal", "fast-py-kyoukai", "fast-py-tls", "fast-py-kyoukai-realistic")
#: Servers whose process must run with the fast request pipeline off.
STOCK_PIPELINE = ("fast-kyoukai-stock-pipeline",)
BODY = b"Hello, world!"
FLOOR_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
                  b"Content-Length: 13\r\n\r\n" + BODY)
#: Keep idle connections open through the memory measurement.
IDLE_TIMEOUT = 600.0

_MINIMAL = {"stock-minimal": "stock", "fast-c-minimal": "cython", "fast-c-prebuilt": "cython",
            "fast-py-minimal": "python", "fast-c-minimal-access-log": "cython"}


def raise_nofile(want: int = 20000) -> None:
    """Raise this process's open-file limit (thousands of idle connections)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else want
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


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


def floor_protocol():
    """The floor's protocol class (imports httptools only when asked for)."""
    import httptools

    class FloorProtocol(asyncio.Protocol):
        """Parse with httptools, answer every request with one constant response.

        A plain ``Protocol``: the least a Python-level HTTP/1.1 server can do per request.
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


def _access_log_file() -> str:
    """A file for this server's access lines, removed when it exits."""
    import atexit
    import tempfile

    descriptor, path = tempfile.mkstemp(prefix="kyoukai-fast-bench-", suffix=".log")
    os.close(descriptor)
    atexit.register(os.unlink, path)
    return path


async def _serve_minimal(kind: str) -> None:
    sys.path.insert(0, HERE)
    import _support

    loop = asyncio.get_running_loop()
    sock = _listening_socket()
    if kind == "floor":
        factory = floor_protocol()
    else:
        protocol_class = _support.IMPLEMENTATIONS[_MINIMAL[kind]][0].KyoukaiProtocol
        app_class = _support.PrebuiltHelloApp if kind == "fast-c-prebuilt" else _support.HelloApp
        settings = {}
        if kind == "fast-c-minimal-access-log":
            settings = {"access_log": True, "access_log_file": _access_log_file()}
        component = _support.bench_component(app_class(loop), keepalive_timeout=IDLE_TIMEOUT,
                                             **settings)
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
    if kind in REALISTIC_SERVERS:
        sys.path.insert(0, HERE)
        import _support

        app = _support.kyoukai_realistic_app(loop)
    else:
        app = Kyoukai("hello", loop=loop)

        @app.route("/")
        async def index(ctx):
            return "Hello, world!"

    backend = ("kyoukai.backends.httptools_" if kind.startswith("stock-kyoukai")
               else "kyoukai_fast")
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


def _starlette_hello():
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def index(request):
        return PlainTextResponse("Hello, world!")

    return Starlette(routes=[Route("/", index)])


async def _serve_uvicorn(loop_name: str, app=None) -> None:
    import uvicorn

    sock = _listening_socket()
    config = uvicorn.Config(app or _asgi_hello, http="httptools", loop=loop_name, lifespan="off",
                            log_level="warning", access_log=False, backlog=4096)
    server = uvicorn.Server(config)
    # serve() announces nothing: announce once the socket is being served.
    asyncio.get_running_loop().call_later(0.2, _announce, sock.getsockname()[1])
    await server.serve(sockets=[sock])


def _bench_tls_context():
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(os.environ["KYOUKAI_FAST_BENCH_CERT"],
                            os.environ["KYOUKAI_FAST_BENCH_KEY"])
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


async def _serve_tls(kind: str) -> None:
    sys.path.insert(0, HERE)
    import _support

    loop = asyncio.get_running_loop()
    sock = _listening_socket()
    module = "cython" if kind == "fast-c-tls" else "python"
    protocol_class = _support.IMPLEMENTATIONS[module][0].KyoukaiProtocol
    component = _support.bench_component(_support.HelloApp(loop), keepalive_timeout=IDLE_TIMEOUT)
    port = sock.getsockname()[1]
    server = await loop.create_server(lambda: protocol_class(component, None, "127.0.0.1", port),
                                      sock=sock, backlog=4096, ssl=_bench_tls_context())
    _announce(port)
    await server.serve_forever()


async def _serve_hypercorn() -> None:
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    port = _free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.certfile = os.environ["KYOUKAI_FAST_BENCH_CERT"]
    config.keyfile = os.environ["KYOUKAI_FAST_BENCH_KEY"]
    config.alpn_protocols = ["h2", "http/1.1"]
    config.accesslog = None
    config.errorlog = None
    config.keep_alive_timeout = IDLE_TIMEOUT
    config.h2_max_concurrent_streams = 100
    # hypercorn closes a connection after 1,000 requests by default; h2load counts the streams
    # in flight then as errors, and kyoukai_fast has no such cap: lift it for a like-for-like run.
    config.keep_alive_max_requests = 10**9
    asyncio.get_running_loop().call_later(0.5, _announce, port)
    await hypercorn_serve(_asgi_hello, config)


def serve(kind: str, loop_name: str) -> None:
    """Serve ``kind`` on ``loop_name`` until SIGTERM; announces ``PORT <n>`` on stdout."""
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.basicConfig(level=logging.WARNING)
    raise_nofile()
    if loop_name == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    if kind == "floor" or kind in _MINIMAL:
        main = _serve_minimal(kind)
    elif kind in KYOUKAI_SERVERS:
        main = _serve_kyoukai(kind)
    elif kind == "uvicorn":
        main = _serve_uvicorn(loop_name)
    elif kind == "starlette":
        main = _serve_uvicorn(loop_name, _starlette_hello())
    elif kind in ("fast-c-tls", "fast-py-tls"):
        main = _serve_tls(kind)
    elif kind == "hypercorn":
        main = _serve_hypercorn()
    else:
        raise SystemExit(f"unknown server {kind}")
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    try:
        loop.run_until_complete(main)
    except RuntimeError:  # stopped by SIGTERM
        pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("kind", choices=SERVERS + HTTP2_SERVERS)
    parser.add_argument("--loop", choices=LOOPS, default="asyncio")
    args = parser.parse_args()
    serve(args.kind, args.loop)
