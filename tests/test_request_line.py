"""
Request-line methods and chunk-size lines, on both implementations.

A method that is not a token (RFC 9112 3, RFC 9110 9.1) makes a malformed request line: 400.
A well-formed method the server does not implement gets 501. llhttp refuses both alike, so the
protocol tells them apart from the bytes of the refused request, wherever it starts in a read.
"""
from __future__ import annotations

import asyncio

import pytest
from werkzeug.wrappers import Response

from fakes import open_connection, settle
from wire import parse_responses

GOOD = b"GET /ok HTTP/1.1\r\nHost: example.com\r\n\r\n"


def body_of(request):
    return Response("got " + request.get_data().decode("latin-1"))


async def exchange(impl, *reads, handler=body_of):
    protocol, transport, _ = await open_connection(impl, handler)
    for data in reads:
        protocol.data_received(data)
        await settle()
    return parse_responses(transport.take()), transport


@pytest.mark.parametrize("line", [
    b"G@T / HTTP/1.1", b"GET\0 / HTTP/1.1", "GETß / HTTP/1.1".encode(), b"GE(T) / HTTP/1.1",
    b"GET\x7f / HTTP/1.1", b"GET\"X / HTTP/1.1", b"G,T / HTTP/1.1",
])
def test_method_that_is_not_a_token_is_400(impl, line):
    responses, transport = asyncio.run(exchange(impl, line + b"\r\nHost: example.com\r\n\r\n"))
    assert [r.status for r in responses] == [400]
    assert transport.closed


@pytest.mark.parametrize("method", [b"FROBNICATE", b"GETX", b"get", b"M-SEARCH2", b"X_Y.Z~1!"])
def test_well_formed_unknown_method_is_501(impl, method):
    responses, transport = asyncio.run(
        exchange(impl, method + b" / HTTP/1.1\r\nHost: example.com\r\n\r\n"))
    assert [r.status for r in responses] == [501]
    assert transport.closed


@pytest.mark.parametrize("bad, status", [(b"G@T", 400), (b"FROBNICATE", 501)])
def test_refused_method_after_pipelined_requests(impl, bad, status):
    # Requests before it in the same read, one with a body that holds a non-token "method".
    with_body = (b"POST /b HTTP/1.1\r\nHost: example.com\r\nContent-Length: 12\r\n\r\n"
                 b"G@T\r\n\r\nX / 1")
    responses, _ = asyncio.run(exchange(
        impl, GOOD + with_body + GOOD + bad + b" / HTTP/1.1\r\nHost: example.com\r\n\r\n"))
    assert [r.status for r in responses] == [200, 200, 200, status]
    assert responses[1].body == b"got G@T\r\n\r\nX / 1"


@pytest.mark.parametrize("bad, status", [(b"G@T", 400), (b"FROBNICATE", 501)])
def test_refused_method_in_a_read_that_ends_a_body(impl, bad, status):
    head = b"POST /b HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nab"
    responses, _ = asyncio.run(exchange(
        impl, head, b"cde" + bad + b" / HTTP/1.1\r\nHost: example.com\r\n\r\n"))
    assert [r.status for r in responses] == [200, status]
    assert responses[0].body == b"got abcde"


def chunked(size_line: bytes) -> bytes:
    return (b"POST /c HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
            + size_line + b"\r\nhello\r\n0\r\n\r\n")


@pytest.mark.parametrize("size_line", [
    b"5;name=value", b"5 ;name=value", b"5\t;name=value", b"5  ;name", b'5 ;n="q v"',
])
def test_whitespace_before_a_chunk_extension_is_accepted(impl, size_line):
    # RFC 9112 7.1.1: BWS before ";"; the connection goes on with the next request.
    responses, transport = asyncio.run(exchange(impl, chunked(size_line) + GOOD))
    assert [(r.status, r.body) for r in responses] == [(200, b"got hello"), (200, b"got ")]
    assert not transport.closed


@pytest.mark.parametrize("size_line", [b"5; name=value", b"5 ; name=value", b"5;name = value"])
def test_whitespace_after_a_chunk_extension_semicolon_is_refused(impl, size_line):
    # llhttp has no leniency for BWS after ";" or around "=" (README, conformance notes).
    responses, transport = asyncio.run(exchange(impl, chunked(size_line)))
    assert [r.status for r in responses] == [400]
    assert transport.closed
