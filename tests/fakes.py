"""
In-process test doubles: everything needed to drive a protocol object without a socket.

The one family of fakes the tests, the fuzz harness (``tests/fuzzing.py``) and the benchmarks
(``bench/_support.py``) share:

* :data:`IMPLEMENTATIONS`: the compiled and pure-Python twins, each as an :class:`Implementation`.
* :class:`FakeTransport` (and :class:`ClosingTransport`, :class:`BufferingTransport`,
  :class:`HalfClosingTransport`),
  :class:`FakeSSLObject`: what a protocol sees of its transport.
* :class:`FakeApp`, :class:`HelloApp`, :class:`PrebuiltHelloApp`, :class:`FakeComponent`: what a
  protocol uses of a Kyoukai app and of ``kyoukai.asphalt.KyoukaiComponent``.
* :class:`Clock`: time for the protocol's timeout check, moved forward by the test instead of
  slept through.
* :func:`open_connection`, :func:`settle`, :func:`wait_for_responses`, :func:`run`, :func:`echo`:
  one connection, driven inside ``asyncio.run``.
"""
from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json
import os
import time
from typing import Any

from werkzeug.wrappers import Request, Response

from wire import parse_responses

__all__ = ("Implementation", "IMPLEMENTATIONS", "EXPECT_COMPILED", "FakeTransport",
           "ClosingTransport", "BufferingTransport", "HalfClosingTransport", "FakeSSLObject",
           "Signal", "FakeApp", "HelloApp", "PrebuiltHelloApp", "FakeComponent", "Clock",
           "open_connection", "settle", "wait_for_responses", "run", "echo", "SMUGGLED", "refused",
           "served")


# --- the two implementations ------------------------------------------------------------------

@dataclasses.dataclass
class Implementation:
    name: str
    protocol_module: Any
    wsgi_module: Any
    error: str = ""
    http2_engine: str = ""  # set by the http2_impl fixture

    @property
    def available(self) -> bool:
        return self.protocol_module is not None and self.wsgi_module is not None

    @property
    def protocol_class(self):
        return self.protocol_module.KyoukaiProtocol

    @property
    def to_wsgi_environment(self):
        return self.wsgi_module.to_wsgi_environment

    @property
    def get_formatted_response(self):
        return self.wsgi_module.get_formatted_response

    @property
    def access_line_class(self):
        """The twin's ``AccessLine``: the access log's default line, made per request."""
        suffix = "c" if self.name == "cython" else "py"
        return importlib.import_module(f"kyoukai_fast._access_line_{suffix}").AccessLine


def _implementation(name: str, suffix: str) -> Implementation:
    try:
        protocol = importlib.import_module(f"kyoukai_fast._protocol_{suffix}")
        wsgi = importlib.import_module(f"kyoukai_fast._wsgi_{suffix}")
        return Implementation(name, protocol, wsgi)
    except ImportError as exc:
        return Implementation(name, None, None, error=str(exc))


IMPLEMENTATIONS = [_implementation("cython", "c"), _implementation("python", "py")]

#: Set by ``make test``: a compiled twin that did not load fails its tests instead of skipping.
EXPECT_COMPILED = bool(os.environ.get("KYOUKAI_FAST_EXPECT_COMPILED"))


# --- transports -------------------------------------------------------------------------------

class FakeTransport(asyncio.Transport):
    """An in-memory transport recording what the protocol does to it."""

    def __init__(self, peer=("127.0.0.1", 54321), ssl_object=None):
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.reading_paused = False
        self.pause_calls = 0
        self.resume_calls = 0
        self.protocol = None
        self.high_water = None
        self._extra = {"peername": peer, "sockname": ("127.0.0.1", 8080),
                       "ssl_object": ssl_object}

    def get_extra_info(self, name, default=None):
        return self._extra.get(name, default)

    def write(self, data):
        if self.closed:
            raise AssertionError("write after close")
        self.written += data

    def is_closing(self):
        return self.closed

    def get_write_buffer_size(self):
        return 0  # every write is taken at once

    def close(self):
        self.closed = True

    def pause_reading(self):
        self.reading_paused = True
        self.pause_calls += 1

    def resume_reading(self):
        self.reading_paused = False
        self.resume_calls += 1

    def set_write_buffer_limits(self, high=None, low=None):
        self.high_water = high

    def set_protocol(self, protocol):
        self.protocol = protocol

    def get_protocol(self):
        return self.protocol

    def take(self) -> bytes:
        data = bytes(self.written)
        self.written.clear()
        return data


class ClosingTransport(FakeTransport):
    """A FakeTransport that, like asyncio's, calls ``connection_lost`` soon after ``close``.

    ``owner`` is the protocol told; ``handed_over`` is set once another protocol took the
    connection (h2c / ALPN), after which nothing is reported to the first one.
    """

    def __init__(self, loop, peer=("10.0.0.1", 40000)):
        super().__init__(peer=peer)
        self.loop = loop
        self.owner = None
        self.lost = False
        self.handed_over = False

    def close(self):
        if self.closed:
            return
        self.closed = True
        self.loop.call_soon(self.lose, None)

    def abort(self):
        self.close()

    def lose(self, exc):
        if self.lost or self.handed_over:
            return
        self.lost = True
        self.owner.connection_lost(exc)

    def set_protocol(self, protocol):
        super().set_protocol(protocol)
        self.handed_over = True


class BufferingTransport(FakeTransport):
    """A FakeTransport with a send buffer that the client empties with :meth:`client_reads`.

    Like asyncio's transports, it calls its protocol's ``pause_writing`` once the buffer holds
    more than ``high`` bytes and ``resume_writing`` once the client read it. ``owner`` is the
    protocol told (the one ``set_protocol`` names after a hand-over).
    """

    def __init__(self, high=4096, **kwargs):
        super().__init__(**kwargs)
        self.high = high
        self.buffered = 0
        self.owner = None
        self.writing_paused = False

    def set_protocol(self, protocol):
        super().set_protocol(protocol)
        self.owner = protocol

    def write(self, data):
        super().write(data)
        self.buffered += len(data)
        if self.buffered > self.high and not self.writing_paused:
            self.writing_paused = True
            self.owner.pause_writing()

    def get_write_buffer_size(self):
        return self.buffered

    def client_reads(self) -> bytes:
        """The client reads everything sent so far; writing resumes if it was paused."""
        data = self.take()
        self.buffered = 0
        if self.writing_paused:
            self.writing_paused = False
            self.owner.resume_writing()
        return data


class HalfClosingTransport(FakeTransport):
    """A transport that can half-close, like a TCP socket transport."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.eof_written = False

    def can_write_eof(self):
        return True

    def write_eof(self):
        self.eof_written = True

    def write(self, data):
        assert not self.eof_written, "write after write_eof"
        super().write(data)


class FakeSSLObject:
    """What a protocol asks of ``transport.get_extra_info("ssl_object")``."""

    def __init__(self, alpn=None):
        self.alpn = alpn

    def selected_alpn_protocol(self):
        return self.alpn

    def selected_npn_protocol(self):
        return None


# --- apps and components ----------------------------------------------------------------------

class Signal:
    """One of the component's signals: ``dispatch(protocol=...)``; ``events`` when recording."""

    def __init__(self, record=True):
        self.events = [] if record else None

    def dispatch(self, **kwargs):
        if self.events is not None:
            self.events.append(kwargs)


class FakeApp:
    """A minimal stand-in for a Kyoukai app: ``handler(request)`` may be sync or async.

    Every request it was handed is kept in ``requests``.
    """

    request_class = Request

    def __init__(self, handler=None, loop=None):
        self.handler = handler or (lambda request: Response("Hello, world!"))
        self.loop = loop
        self.requests = []
        self.server_name = None

    async def process_request(self, request, parent_context):
        self.requests.append(request)
        result = self.handler(request)
        if asyncio.iscoroutine(result):
            result = await result
        return result


class HelloApp:
    """The smallest app: ``process_request`` returns ``Response("Hello, world!")``, keeps
    nothing (what the benchmarks serve: its cost per request is the app's own minimum)."""

    request_class = Request

    def __init__(self, loop=None):
        self.loop = loop
        self.server_name = None

    async def process_request(self, request, parent_context):
        return Response("Hello, world!")


class PrebuiltHelloApp(HelloApp):
    """:class:`HelloApp` with its own work taken out: one Response, built once, every time."""

    def __init__(self, loop=None):
        super().__init__(loop)
        self._response = Response("Hello, world!")

    async def process_request(self, request, parent_context):
        return self._response


class FakeComponent:
    """Duck-types what the protocol uses of ``kyoukai.asphalt.KyoukaiComponent``.

    ``cfg``: the protocol settings (``ProtocolConfig`` names). ``record_signals=False`` keeps
    the signals from holding every protocol they were dispatched for (long runs, memory counts).
    """

    def __init__(self, app=None, *, server_name="testserver", record_signals=True, **cfg):
        self.app = app or FakeApp()
        self.cfg = cfg
        self.server_name = server_name
        self.connection_made = Signal(record_signals)
        self.connection_lost = Signal(record_signals)

    def get_server_name(self):
        return self.server_name


# --- time -------------------------------------------------------------------------------------

class Clock:
    """The time a protocol reads, moved forward only by the test.

    Installed in place of ``_monotonic`` in the protocol module and in ``_connection`` (the
    ``clock`` fixture), it is what the protocol stamps activity with; :meth:`expire` runs the
    protocol's timeout check (``check_timeouts``, which the server's timer calls) at the clock's
    time. A timeout then
    fires because the test said so much time passed, not because it was slept through. Timeouts
    of seconds keep the server's own timer, which reads the real clock, out of the way.
    """

    def __init__(self):
        self.time = time.monotonic()

    def __call__(self) -> float:
        return self.time

    def advance(self, seconds: float) -> None:
        self.time += seconds

    def expire(self, protocol, seconds: float = 0.0) -> None:
        """Move ``seconds`` forward, then run ``protocol``'s timeout check at that time."""
        self.advance(seconds)
        protocol.check_timeouts(self.time)


# --- one connection, driven in-process --------------------------------------------------------

async def open_connection(impl, handler=None, transport=None, **cfg):
    """A protocol connected to a fake transport, its app answering with ``handler``;
    ``(protocol, transport, component)``."""
    app = FakeApp(handler, loop=asyncio.get_running_loop())
    component = FakeComponent(app, **cfg)
    protocol = impl.protocol_class(component, None, "127.0.0.1", 8080)
    transport = transport or FakeTransport(peer=("10.1.2.3", 4444))
    protocol.connection_made(transport)
    return protocol, transport, component


async def settle(rounds=20):
    """Let callbacks and tasks that are ready run."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def wait_for_responses(transport, count, head_requests=(), timeout=5.0):
    """Wait (bounded) until ``count`` complete responses were written; return them."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            responses = parse_responses(bytes(transport.written), head_requests, closed=False)
        except (AssertionError, ValueError):
            responses = []  # a response is still being written
        if len(responses) >= count:
            return responses
        if loop.time() > deadline:
            raise AssertionError(f"only {len(responses)} of {count} responses: "
                                 f"{bytes(transport.written)[:300]!r}")
        await asyncio.sleep(0.001)


def run(coro):
    return asyncio.run(coro)


def echo(request):
    """Answer with what the app saw of the request, as JSON."""
    return Response(json.dumps({
        "method": request.method,
        "path": request.path,
        "args": request.args.to_dict(flat=False),
        "headers": dict(request.headers.items()),
        "body": request.get_data().decode("latin-1"),
    }), mimetype="application/json")


#: A request pipelined after a refused one: it must never reach the app.
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"


def refused(impl, data, status, reads=None, **cfg):
    """Feed ``data`` (in ``reads`` pieces if given); assert one ``status`` answer and a close.

    :return: the paths the app saw and the response.
    """
    async def main():
        protocol, transport, component = await open_connection(impl, echo, **cfg)
        for piece in reads or [data]:
            protocol.data_received(piece)
            await settle(5)
        await settle()
        responses = parse_responses(transport.take())
        assert [r.status for r in responses][-1:] == [status], responses
        assert responses[-1].header("Connection") == "close"
        assert transport.closed
        protocol.data_received(SMUGGLED)  # nothing more is read
        assert transport.written == b""
        return [r.path for r in component.app.requests], responses

    return run(main())


def served(impl, data, count=1, **cfg):
    """Feed ``data``; return the responses and the requests the app saw."""
    async def main():
        protocol, transport, component = await open_connection(impl, echo, **cfg)
        protocol.data_received(data)
        responses = await wait_for_responses(transport, count)
        return responses, component.app.requests

    return run(main())
