"""
Size limits (URL 414, header fields 431, body 413, decompressed body) and ``Expect:
100-continue``, in-process on both implementations: a refusal comes before the bytes over the
limit are read, a request at the limit is served.
"""
from __future__ import annotations

import asyncio
import json

import pytest

from fakes import (
    SMUGGLED,
    echo,
    open_connection,
    refused,
    run,
    served,
    settle,
    wait_for_responses,
)
from wire import get, parse_responses


@pytest.mark.parametrize("split", [False, True])
def test_long_url_is_414(impl, split, no_errors_logged):
    data = b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: h\r\n\r\n" + SMUGGLED
    reads = [data[i:i + 7] for i in range(0, len(data), 7)] if split else None
    paths, _ = refused(impl, data, 414, reads=reads, max_url_size=100)
    assert paths == []


def test_url_at_the_limit_is_served(impl):
    target = "/" + "a" * 99
    [response], [request] = served(impl, get(target), max_url_size=100)
    assert response.status == 200 and request.path == target


def test_too_many_header_fields_is_431(impl, no_errors_logged):
    fields = [(f"X-{i}", "v") for i in range(5)]  # plus Host: 6 fields
    [ok], _ = served(impl, get("/", fields[:4]), max_header_count=5)
    assert ok.status == 200
    paths, _ = refused(impl, get("/", fields) + SMUGGLED, 431, max_header_count=5)
    assert paths == []


def test_header_field_too_large_is_431(impl, no_errors_logged):
    [ok], _ = served(impl, get("/", [("X-A", "v" * 96)]), max_header_size=99)
    assert ok.status == 200
    paths, _ = refused(impl, get("/", [("X-A", "v" * 97)]) + SMUGGLED, 431, max_header_size=99)
    assert paths == []


def test_head_growing_over_many_reads_is_431(impl, no_errors_logged):
    # One header value that never ends: httptools keeps it whole until it does, so the field
    # limit alone would not stop it.
    reads = [b"GET / HTTP/1.1\r\nHost: h\r\nX-A: "] + [b"v" * 1000] * 40
    paths, _ = refused(impl, b"", 431, reads=reads, max_head_size=16 * 1024,
                       max_header_size=10 ** 9)
    assert paths == []


def test_head_over_several_reads_within_the_limit_is_served(impl):
    async def main():
        protocol, transport, component = await open_connection(impl, echo,
                                                               max_head_size=16 * 1024)
        data = get("/", [(f"X-{i}", "v" * 100) for i in range(60)])  # ~6.5 KiB
        for i in range(0, len(data), 100):
            protocol.data_received(data[i:i + 100])
        [response] = await wait_for_responses(transport, 1)
        assert response.status == 200 and not transport.closed

    run(main())


def test_declared_body_over_limit_is_413_before_any_body_byte(impl, no_errors_logged):
    async def main():
        protocol, transport, component = await open_connection(impl, echo, max_body_size=100)
        protocol.data_received(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 101\r\n"
                               b"Expect: 100-continue\r\n\r\n")  # the head only
        await settle()
        data = transport.take()
        assert b"100 Continue" not in data
        [response] = parse_responses(data)
        assert response.status == 413 and response.header("Connection") == "close"
        assert transport.closed and component.app.requests == []

    run(main())


def test_body_at_the_limit_with_100_continue(impl):
    async def main():
        protocol, transport, component = await open_connection(impl, echo, max_body_size=100)
        protocol.data_received(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n"
                               b"Expect: 100-continue\r\n\r\n")
        assert transport.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
        protocol.data_received(b"x" * 100)
        [response] = await wait_for_responses(transport, 1)
        assert response.status == 200 and json.loads(response.body)["body"] == "x" * 100

    run(main())


def test_no_100_continue_for_http10(impl):
    async def main():
        protocol, transport, _ = await open_connection(impl, echo)
        protocol.data_received(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n"
                               b"Content-Length: 2\r\n\r\n")
        await settle()
        assert transport.take() == b""
        protocol.data_received(b"ok")
        [response] = await wait_for_responses(transport, 1)
        assert response.version == "1.0" and json.loads(response.body)["body"] == "ok"

    run(main())


def test_100_continue_waits_for_the_requests_before_it(impl):
    release = asyncio.Event()

    async def handler(request):
        if request.path == "/slow":
            await release.wait()
        return echo(request)

    async def main():
        protocol, transport, _ = await open_connection(impl, handler)
        protocol.data_received(get("/slow") + b"POST /up HTTP/1.1\r\nHost: h\r\n"
                               b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        await settle()
        assert transport.written == b""  # the body is not asked for while /slow is answered
        release.set()
        slow, interim = await wait_for_responses(transport, 2)
        assert slow.status == 200 and interim.status == 100
        assert transport.take().endswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        protocol.data_received(b"ok")
        [up] = await wait_for_responses(transport, 1)
        assert json.loads(up.body)["body"] == "ok"

    run(main())


def test_decompressed_body_over_limit_is_413_quietly(impl, no_errors_logged):
    import gzip

    paths, _ = refused(impl, get("/", [("Content-Encoding", "gzip")], method="POST",
                                 body=gzip.compress(b"\0" * 100_000)) + SMUGGLED, 413,
                       max_body_size=1000)
    assert paths == []
