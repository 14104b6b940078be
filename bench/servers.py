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
* ``uvicorn``: uvicorn (httptools) with a minimal ASGI app.
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

SERVERS = ("floor", "stock-minimal", "fast-c-minimal", "fast-c-prebuilt", "fast-py-minimal",
           "stock-kyoukai", "fast-kyoukai", "uvicorn")
LOOPS = ("asyncio", "uvloop")
#: Servers whose process must run the pure-Python implementation.
PURE_PYTHON = ("fast-py-minimal",)
BODY = b"Hello, world!"
FLOOR_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
                  b"Content-Length: 13\r\n\r\n" + BODY)
#: Keep idle connections open through the memory measurement.
IDLE_TIMEOUT = 600.0

_MINIMAL = {"stock-minimal": "stock", "fast-c-minimal": "cython", "fast-c-prebuilt": "cython",
            "fast-py-minimal": "python"}


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
        component = _support.bench_component(app_class(loop), keepalive_timeout=IDLE_TIMEOUT)
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
    async with Context() as ctx:
        for attempt in range(10):
            port = _free_port()
            component = KyoukaiComponent(app, "127.0.0.1", port, backend=backend,
                                         keepalive_timeout=IDLE_TIMEOUT)
            try:
                await component.start(ctx)
                break
            except OSError:
                if attempt == 9:
                    raise
        _announce(port)
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
    elif kind in ("stock-kyoukai", "fast-kyoukai"):
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("kind", choices=SERVERS)
    parser.add_argument("--loop", choices=LOOPS, default="asyncio")
    args = parser.parse_args()
    serve(args.kind, args.loop)
