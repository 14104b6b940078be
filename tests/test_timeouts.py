"""
Keep-alive and request-head timeouts, in-process on both implementations, driven by the
``clock`` fixture: the test moves the protocol's time forward and runs its timeout check instead
of sleeping through the timeout (``test_hardening_loopback.py`` checks, over real sockets, that
the server's own timer runs that check).
"""
from __future__ import annotations

import asyncio

from werkzeug.wrappers import Response

from fakes import echo, open_connection, run, settle, wait_for_responses
from wire import get, parse_responses


def test_keep_alive_idleness_starts_after_a_slow_response(impl, clock):
    gate = asyncio.Event()

    async def handler(request):
        await gate.wait()
        return Response(request.path)

    async def main():
        protocol, transport, _ = await open_connection(impl, handler, keepalive_timeout=10)
        protocol.data_received(get("/slow"))
        await settle()
        clock.expire(protocol, 30)  # the app takes longer than the keep-alive timeout
        assert not transport.closed
        gate.set()
        [first] = await wait_for_responses(transport, 1)
        clock.expire(protocol, 9)  # idle for less than the timeout since the response
        assert not transport.closed
        protocol.data_received(get("/again"))
        first, second = await wait_for_responses(transport, 2)
        assert second.body == b"/again"
        clock.expire(protocol, 9.9)
        assert not transport.closed
        clock.expire(protocol, 0.1)  # now idle for the whole timeout
        assert transport.closed

    run(main())


def test_empty_lines_do_not_keep_an_idle_connection_open(impl, clock):
    async def main():
        protocol, transport, _ = await open_connection(impl, echo, keepalive_timeout=10)
        protocol.data_received(get("/"))
        await wait_for_responses(transport, 1)
        seconds = 0
        while not transport.closed and seconds < 30:  # an empty line every second
            protocol.data_received(b"\r\n")
            await settle(2)
            clock.expire(protocol, 1)
            seconds += 1
        assert transport.closed and seconds == 10

    run(main())


def test_connection_that_never_sends_a_byte_is_closed(impl, clock):
    # The cheapest way to hold a connection: open it and say nothing. It is idle from the start.
    async def main():
        protocol, transport, component = await open_connection(impl, echo, keepalive_timeout=10,
                                                               header_timeout=60)
        await settle()
        clock.expire(protocol, 9.9)
        assert not transport.closed
        clock.expire(protocol, 0.1)
        assert transport.closed
        assert transport.written == b"" and component.app.requests == []

    run(main())


def test_request_line_trickling_in_gets_408(impl, clock):
    # Slowloris before the first header field: the head timeout runs from the first byte, however
    # steadily the request line keeps arriving (the keep-alive timeout alone would never fire).
    async def main():
        protocol, transport, component = await open_connection(impl, echo, keepalive_timeout=60,
                                                               header_timeout=10)
        line = b"GET /" + b"a" * 200 + b" HTTP/1.1\r\n"
        sent = 0
        while not transport.closed and sent < len(line):  # a byte every half second
            protocol.data_received(line[sent:sent + 1])
            sent += 1
            clock.expire(protocol, 0.5)
        assert sent == 20  # 10 s after the first byte
        [response] = parse_responses(transport.take())
        assert response.status == 408 and response.header("Connection") == "close"
        assert component.app.requests == []

    run(main())


def test_slow_upload_keeps_its_connection_after_the_response(impl, clock):
    async def main():
        protocol, transport, _ = await open_connection(impl, echo, keepalive_timeout=10,
                                                       header_timeout=60)
        data = get("/up", method="POST", body=b"x" * 40)
        for i in range(0, len(data), 10):  # the upload takes longer than the keep-alive timeout
            if i:
                clock.expire(protocol, 5)
            protocol.data_received(data[i:i + 10])
            await settle(2)
        assert not transport.closed
        [response] = await wait_for_responses(transport, 1)
        clock.expire(protocol, 9)
        assert not transport.closed  # idle only since the response
        protocol.data_received(get("/next"))
        await wait_for_responses(transport, 2)

    run(main())


def test_head_timeout_is_not_reset_by_each_byte_of_the_head(impl, clock):
    # The same with header fields: a head that keeps growing is cut at header_timeout.
    async def main():
        protocol, transport, _ = await open_connection(impl, echo, keepalive_timeout=60,
                                                       header_timeout=10)
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: h\r\n")
        for i in range(9):
            clock.expire(protocol, 1)
            protocol.data_received(b"X-%d: v\r\n" % i)
        assert not transport.closed
        clock.expire(protocol, 1)
        [response] = parse_responses(transport.take())
        assert response.status == 408 and transport.closed

    run(main())
