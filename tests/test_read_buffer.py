"""
The protocols' ``BufferedProtocol`` side: transports read into one buffer per thread
(``kyoukai_fast._read_buffer``), and what a read delivered is copied out of it before anything
else runs, so every connection of the thread can share it.
"""
from __future__ import annotations

import asyncio
import re
import threading

import pytest
import uvloop
from werkzeug.wrappers import Response

from fakes import FakeApp, FakeComponent, FakeTransport
from kyoukai_fast._read_buffer import READ_BUFFER_SIZE
from loopback import connect, in_thread, recv_responses, serving, tls_contexts
from wire import parse_responses

TIMEOUT = 5.0

PIPELINE = (b"GET /first?x=1 HTTP/1.1\r\nHost: h\r\nX-Long: " + b"v" * 300 + b"\r\n\r\n"
            b"POST /second HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world"
            b"POST /third HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nchunk\r\n0\r\n\r\n"
            b"GET /last HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")


async def echo(request):
    if request.path == "/second":
        await asyncio.sleep(0)  # a handler that suspends: later requests wait, parsed
    return Response(b"%s %s|%s" % (request.method.encode(), request.full_path.encode(),
                                   request.get_data()))


def through_buffer(protocol, data: bytes) -> None:
    """Deliver ``data`` as a transport does: into ``get_buffer()``, then ``buffer_updated``;
    then overwrite the buffer, as the next read into it does."""
    buffer = protocol.get_buffer(-1)
    buffer[:len(data)] = data
    protocol.buffer_updated(len(data))
    buffer[:len(data)] = b"\xff" * len(data)


def without_dates(data: bytes) -> bytes:
    return re.sub(rb"Date: [^\r]*\r\n", b"", data)


def test_a_buffered_protocol_that_is_still_a_protocol(impl):
    cls = impl.protocol_class
    assert issubclass(cls, asyncio.BufferedProtocol) and issubclass(cls, asyncio.Protocol)
    first = cls(FakeComponent(), None, "127.0.0.1", 8080)
    second = cls(FakeComponent(), None, "127.0.0.1", 8081)
    buffer = first.get_buffer(-1)
    assert len(buffer) == READ_BUFFER_SIZE and not buffer.readonly
    assert second.get_buffer(16) is buffer  # one per thread, whatever the size hint
    other = []
    thread = threading.Thread(
        target=lambda: other.append(cls(FakeComponent(), None, "127.0.0.1", 8080).get_buffer(-1)))
    thread.start()
    thread.join(TIMEOUT)
    assert len(other) == 1 and other[0] is not buffer and len(other[0]) == READ_BUFFER_SIZE


@pytest.mark.parametrize("split", [1, 30, 200, 340, 400, len(PIPELINE) - 1, len(PIPELINE)])
def test_reads_through_the_buffer_answer_as_data_received_does(impl, split):
    async def serve(deliver):
        component = FakeComponent(FakeApp(echo))
        protocol = impl.protocol_class(component, None, "127.0.0.1", 8080)
        transport = FakeTransport()
        protocol.connection_made(transport)
        for piece in (PIPELINE[:split], PIPELINE[split:]):
            if piece:
                deliver(protocol, piece)
        for _ in range(20):
            await asyncio.sleep(0)
        return bytes(transport.written), transport.closed

    buffered, closed = asyncio.run(serve(through_buffer))
    direct, direct_closed = asyncio.run(serve(lambda protocol, data: protocol.data_received(data)))
    assert without_dates(buffered) == without_dates(direct)
    assert closed and direct_closed
    responses = parse_responses(buffered)
    assert [(r.status, r.body) for r in responses] == [
        (200, b"GET /first?x=1|"), (200, b"POST /second?|hello world"),
        (200, b"POST /third?|chunk"), (200, b"GET /last?|")]


@pytest.mark.parametrize("count", [-1, READ_BUFFER_SIZE + 1])
def test_a_read_count_outside_the_buffer_is_refused(impl, count):
    async def main():
        protocol = impl.protocol_class(FakeComponent(), None, "127.0.0.1", 8080)
        transport = FakeTransport()
        protocol.connection_made(transport)
        with pytest.raises(ValueError, match=r"buffer_updated\(%d\)" % count):
            protocol.buffer_updated(count)
        assert transport.written == b"" and not transport.closed

    asyncio.run(main())


def test_a_subclass_data_received_sees_every_read(impl):
    seen = []

    class Recording(impl.protocol_class):
        def data_received(self, data):
            seen.append(data)
            super().data_received(data)

    async def main():
        protocol = Recording(FakeComponent(), None, "127.0.0.1", 8080)
        transport = FakeTransport()
        protocol.connection_made(transport)
        through_buffer(protocol, b"GET /a HTTP/1.1\r\n")
        through_buffer(protocol, b"Host: h\r\n\r\n")
        await asyncio.sleep(0)
        return parse_responses(bytes(transport.written), closed=False)

    [response] = asyncio.run(main())
    assert response.status == 200
    assert seen == [b"GET /a HTTP/1.1\r\n", b"Host: h\r\n\r\n"]
    assert all(type(data) is bytes for data in seen)


def counting_class(impl, counts):
    class Counting(impl.protocol_class):
        def buffer_updated(self, nbytes):
            counts["reads"] += 1
            super().buffer_updated(nbytes)

    return Counting


def interleaved_clients(port, wrap=None):
    """Two connections whose reads interleave: a body split around another whole request."""
    with connect(port, wrap) as first, connect(port, wrap) as second:
        first.sendall(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n01234")
        second.sendall(b"GET /b?q=2 HTTP/1.1\r\nHost: h\r\n\r\n")
        [answer_b] = recv_responses(second, 1)
        first.sendall(b"56789")
        [answer_a] = recv_responses(first, 1)
    return [(answer_a.status, answer_a.body), (answer_b.status, answer_b.body)]


async def serve_and_run(impl, protocol_class, client, ssl_context=None):
    async with serving(impl, echo, protocol_class=protocol_class, ssl=ssl_context) as (port, _):
        return await in_thread(client, port)


EXPECTED = [(200, b"POST /a?|0123456789"), (200, b"GET /b?q=2|")]


def test_sockets_are_read_through_the_buffer(impl):
    counts = {"reads": 0}
    answers = asyncio.run(serve_and_run(impl, counting_class(impl, counts), interleaved_clients))
    assert answers == EXPECTED
    assert counts["reads"] >= 3  # every read went through buffer_updated


def test_uvloop_reads_with_data_received(impl):
    """uvloop reads into a buffer of its own and hands a protocol that is also an
    ``asyncio.Protocol`` the bytes (``data_received``): no per-read allocation to avoid there."""
    counts = {"reads": 0}
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        answers = runner.run(serve_and_run(impl, counting_class(impl, counts), interleaved_clients))
    assert answers == EXPECTED
    assert counts["reads"] == 0


def test_tls_is_read_through_the_buffer(impl, certificate):
    server_context, wrap = tls_contexts(certificate)

    def client(port):
        return interleaved_clients(port, wrap)

    counts = {"reads": 0}
    answers = asyncio.run(serve_and_run(impl, counting_class(impl, counts), client, server_context))
    assert answers == EXPECTED
    assert counts["reads"] >= 3
