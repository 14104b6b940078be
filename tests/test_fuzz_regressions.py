"""
Regression tests for bugs the fuzz harness (``tests/test_fuzz.py``) found, on both
implementations. Each names what went wrong.
"""
from __future__ import annotations

import asyncio

import pytest
from werkzeug.wrappers import Response

from fakes import FakeApp, FakeComponent, FakeTransport
from wire import parse_responses


def serve_once(impl, handler, request: bytes) -> FakeTransport:
    async def main():
        loop = asyncio.get_running_loop()
        protocol = impl.protocol_class(FakeComponent(FakeApp(handler, loop=loop)), None,
                                       "127.0.0.1", 8080)
        transport = FakeTransport()
        protocol.connection_made(transport)
        protocol.data_received(request)
        for _ in range(20):
            await asyncio.sleep(0)
        if not transport.closed and not protocol.eof_received():
            transport.close()
        for _ in range(20):
            await asyncio.sleep(0)
        protocol.connection_lost(None)
        return transport

    return asyncio.run(main())


def bytes_like_parts():
    # werkzeug hands bytes-like items of an iterable body to the server unchanged.
    yield b"one,"
    yield bytearray(b"two,")
    yield memoryview(b"three,")
    yield "four"


@pytest.mark.parametrize("request_line, declared_length", [
    (b"GET / HTTP/1.1", True),   # streamed as is, its length declared by the app
    (b"GET / HTTP/1.0", False),  # streamed as is, delimited by the close
    (b"GET / HTTP/1.1", False),  # chunked
])
def test_streamed_bytes_like_items_are_sent(impl, caplog, request_line, declared_length):
    # Found by fuzzing: the compiled protocol only wrote ``bytes`` items of a streamed body
    # that was not chunked; a bytearray or memoryview item cut the response short (TypeError,
    # "Error while streaming") where the pure-Python protocol sent it.
    headers = {"Content-Length": "18"} if declared_length else {}
    transport = serve_once(impl, lambda request: Response(bytes_like_parts(), headers=headers),
                           request_line + b"\r\nHost: x\r\n\r\n")
    [response] = parse_responses(bytes(transport.written))
    assert response.status == 200
    assert response.body == b"one,two,three,four"
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_raw_write_accepts_bytes_like(impl):
    # The public raw_write / _raw_write take what the transport takes, in both implementations.
    def handler(request):
        protocol = request.environ["kyoukai.protocol"]
        protocol.raw_write(bytearray(b"HTTP/1.1 204 No Content\r\n"))
        protocol._raw_write(memoryview(b"X-Raw: 1\r\n\r\n"))
        return Response("after", headers={"Connection": "close"})

    transport = serve_once(impl, handler, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    responses = parse_responses(bytes(transport.written))
    assert [r.status for r in responses] == [204, 200]
    assert responses[0].header("X-Raw") == "1" and responses[1].body == b"after"
