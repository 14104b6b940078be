"""
Closing after a refusal: the server half-closes, discards what the client still sends and closes
when the client is done or after ``linger_timeout``; app errors close at once.
"""
from __future__ import annotations

from fakes import (
    SMUGGLED,
    HalfClosingTransport,
    echo,
    open_connection,
    run,
    settle,
)
from wire import get, parse_responses


def test_refusal_half_closes_and_discards_what_follows(impl, clock, no_errors_logged):
    async def main():
        transport = HalfClosingTransport()
        protocol, _, component = await open_connection(
            impl, echo, transport=transport, max_body_size=10, linger_timeout=10)
        protocol.data_received(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n")
        await settle()
        [response] = parse_responses(transport.take())
        assert response.status == 413 and response.header("Connection") == "close"
        assert transport.eof_written and not transport.closed  # still reading
        protocol.data_received(b"x" * 1000 + SMUGGLED)  # the rest of the body, and more
        await settle()
        assert transport.written == b"" and component.app.requests == []
        assert protocol.eof_received() is None  # the client is done: asyncio closes
        # a client that never stops is cut off after linger_timeout
        clock.expire(protocol, 9.9)
        assert not transport.closed
        clock.expire(protocol, 0.1)
        assert transport.closed

    run(main())


def test_app_errors_and_timeouts_close_at_once(impl, caplog):
    def explode(request):
        raise RuntimeError("boom")

    async def main():
        transport = HalfClosingTransport()
        protocol, _, _ = await open_connection(impl, explode, transport=transport)
        protocol.data_received(get("/"))
        await settle()
        [response] = parse_responses(transport.take())
        assert response.status == 500 and transport.closed and not transport.eof_written

    run(main())


def test_linger_timeout_zero_closes_at_once(impl):
    async def main():
        transport = HalfClosingTransport()
        protocol, _, _ = await open_connection(impl, transport=transport, linger_timeout=0)
        protocol.data_received(b"GET / HTTP/1.1\r\n\r\n")
        await settle()
        [response] = parse_responses(transport.take())
        assert response.status == 400 and transport.closed and not transport.eof_written

    run(main())
