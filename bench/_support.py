"""
What the micro benchmarks and the load benchmark share: the three implementations under one name
each, the request every benchmark sends, and the test suite's fakes (``tests/fakes.py``: the
app, component and in-memory transport the tests drive protocols with) set up for measuring.

Importing this module applies :mod:`kyoukai_fast.compat`, so stock Kyoukai imports on modern
Python and werkzeug.
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import sys
import warnings

import kyoukai_fast.compat

kyoukai_fast.compat.apply()

from werkzeug.wrappers import Request  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))

from fakes import (  # noqa: E402
    EXPECT_COMPILED,
    FakeComponent,
    FakeTransport,
    HelloApp,
    PrebuiltHelloApp,
)

__all__ = ("EXPECT_COMPILED", "IMPLEMENTATIONS", "IMPLEMENTATION_NAMES", "HELLO", "REQUEST_TARGET",
           "REQUEST_HEADERS", "REQUEST_BYTES", "FakeTransport", "HelloApp", "PrebuiltHelloApp",
           "bench_component", "memory_transport", "kyoukai_hello_app", "run_to_result",
           "app_own_work", "split_response", "split_responses")

#: ``name -> (protocol module, wsgi module)``; the compiled entry is ``None`` when not built.
IMPLEMENTATIONS: dict = {}


def _load(name, protocol, wsgi):
    try:
        IMPLEMENTATIONS[name] = (importlib.import_module(protocol), importlib.import_module(wsgi))
    except ImportError:
        IMPLEMENTATIONS[name] = None


_load("cython", "kyoukai_fast._protocol_c", "kyoukai_fast._wsgi_c")
_load("python", "kyoukai_fast._protocol_py", "kyoukai_fast._wsgi_py")
_load("stock", "kyoukai.backends.httptools_", "kyoukai.wsgi")

IMPLEMENTATION_NAMES = ("cython", "python", "stock")

HELLO = b"Hello, world!"

#: A typical browser-ish GET: the input every micro benchmark uses.
REQUEST_TARGET = "/hello/world?name=kyoukai&page=2"
REQUEST_HEADERS = [
    ("Host", "127.0.0.1:8080"),
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"),
    ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    ("Accept-Language", "en-US,en;q=0.5"),
    ("Accept-Encoding", "gzip, deflate, br"),
    ("Cookie", "session=abc123; theme=dark"),
    ("Cache-Control", "max-age=0"),
]
REQUEST_BYTES = (
    f"GET {REQUEST_TARGET} HTTP/1.1\r\n"
    + "".join(f"{name}: {value}\r\n" for name, value in REQUEST_HEADERS)
    + "\r\n"
).encode("latin-1")


def bench_component(app, **cfg) -> FakeComponent:
    """The component a benchmark serves ``app`` with: its signals keep nothing (a long run
    would otherwise hold every protocol it made)."""
    return FakeComponent(app, server_name="127.0.0.1", record_signals=False, **cfg)


def memory_transport() -> FakeTransport:
    """An in-memory transport for one benchmarked connection."""
    return FakeTransport(peer=("127.0.0.1", 40000))


def kyoukai_hello_app(loop, path: str = "/hello/world"):
    """A real Kyoukai app with one route answering ``Hello, world!`` (finalized)."""
    from kyoukai import Kyoukai

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        app = Kyoukai("hello", loop=loop)

    @app.route(path)
    async def index(ctx):
        return "Hello, world!"

    app.finalize()
    return app


#: The realistic app's request mix, with the status and body each gets from a client that sends
#: no User-Agent: a dynamic route, a static one in the blueprint, the root's, and a 404 answered
#: by the root's error handler.
REALISTIC_ANSWERS = (
    ("/api/user/42?tab=posts", 200, b'{"id": 42, "name": "user42", "by": "anonymou"}'),
    ("/api/status", 200, b"ok"),
    ("/hello/world", 200, b"Hello, world!"),
    ("/api/missing", 404, b'{"error": "not found"}'),
)
#: ``(target, status)`` of each request of the mix.
REALISTIC_MIX = tuple((target, status) for target, status, _ in REALISTIC_ANSWERS)


def request_bytes(target: str) -> bytes:
    """REQUEST_BYTES with another request target."""
    return REQUEST_BYTES.replace(REQUEST_TARGET.encode(), target.encode(), 1)


def kyoukai_realistic_app(loop):
    """A Kyoukai app as apps are written: a blueprint with a prefix, a dynamic route, a
    before-request hook, an error handler (404s outside any route go to the root's);
    answers :data:`REALISTIC_MIX` (finalized)."""
    from kyoukai import Blueprint, Kyoukai
    from kyoukai.util import as_json

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        app = Kyoukai("realistic", loop=loop)
    api = Blueprint("api", prefix="/api")

    @api.before_request
    async def authenticate(ctx):
        ctx.user = ctx.request.headers.get("User-Agent", "anonymous")[:8]
        return ctx

    @api.route("/user/<int:uid>")
    async def user(ctx, uid):  # (annotations are strings in this module: not checkable)
        return as_json({"id": uid, "name": f"user{uid}", "by": ctx.user})

    @api.route("/status")
    async def status(ctx):
        return "ok"

    @app.errorhandler(404)
    async def not_found(ctx, exc):
        return as_json({"error": "not found"}, code=404)

    @app.route("/hello/world")
    async def index(ctx):
        return "Hello, world!"

    app.register_blueprint(api)
    app.finalize()
    return app


def run_to_result(coro):
    """Run a coroutine that does not suspend to its result, without an event loop turn."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise AssertionError("the app suspended; only handlers that do not are measured this way")


@contextlib.contextmanager
def app_own_work(kind: str):
    """A function doing one request's worth of the app's own work, as a backend runs it.

    ``kind`` ``"minimal"``: ``HelloApp.process_request`` (its coroutine building
    ``Response("Hello, world!")``); ``"kyoukai"``: a real Kyoukai app's ``process_request``
    (routing, Asphalt contexts and signals, the route's signature check, the Response), with the
    werkzeug Request built from a plain dict environ. No backend can take this work away. The
    function returns the app's response.
    """
    environ = IMPLEMENTATIONS["python"][1].to_wsgi_environment(
        REQUEST_HEADERS, "GET", REQUEST_TARGET, "1.1")
    environ.update(SERVER_NAME="127.0.0.1", SERVER_PORT="8080")
    if kind == "minimal":
        app, request = HelloApp(), Request(environ, False)
        yield lambda: run_to_result(app.process_request(request, None))
        return
    from asphalt.core import Context

    loop = asyncio.new_event_loop()
    # Kyoukai's process_request needs a running loop (Asphalt's Context) but does not suspend.
    asyncio._set_running_loop(loop)
    try:
        app, parent = kyoukai_hello_app(loop), Context()
        process_request = app.process_request
        yield lambda: run_to_result(process_request(Request(environ, False), parent))
    finally:
        asyncio._set_running_loop(None)
        loop.close()


def split_response(data: bytes):
    """``(status line, {lower-case header: value}, body)`` of one Content-Length framed response."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, f"no end of head in {data[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers["content-length"])
    assert len(rest) >= length, "body shorter than Content-Length"
    return lines[0], headers, rest[:length], rest[length:]


def split_responses(data: bytes) -> list:
    """Every response in ``data`` (Content-Length framed), as ``split_response`` tuples."""
    out = []
    while data:
        status, headers, body, data = split_response(data)
        out.append((status, headers, body))
    return out
