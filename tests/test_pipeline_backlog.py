"""
The read backlog: a huge read of pipelined requests is parsed only up to the pipeline bound, the
rest is parsed as the queue drains; an upgrade or a body found in a later slice of one read.
"""
from __future__ import annotations

import asyncio
import json

from werkzeug.wrappers import Response

from fakes import (
    echo,
    open_connection,
    run,
    settle,
    wait_for_responses,
)
from wire import get


def _live_request_states(impl):
    import gc

    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is impl.protocol_module.RequestState)


def test_one_huge_read_of_tiny_requests_is_parsed_only_up_to_the_bound(impl):
    from kyoukai_fast._connection import FEED_SLICE

    gate = asyncio.Event()

    async def handler(request):
        await gate.wait()
        return Response(request.path)

    async def main():
        protocol, transport, component = await open_connection(
            impl, handler, max_pipelined_requests=4)
        requests = [get(f"/r{i}") for i in range(2000)]
        data = b"".join(requests)
        assert len(data) > 8 * FEED_SLICE
        before = _live_request_states(impl)
        protocol.data_received(data)
        await settle()
        assert transport.reading_paused
        parsed = _live_request_states(impl) - before
        # not 2000: parsing stopped within a slice of reaching the bound
        assert parsed <= 4 + FEED_SLICE // len(requests[0]) + 2, parsed
        gate.set()
        responses = await wait_for_responses(transport, 2000, timeout=20)
        assert [r.body for r in responses] == [f"/r{i}".encode() for i in range(2000)]
        await settle()
        assert not transport.reading_paused and not transport.closed

    run(main())


def test_h2c_upgrade_found_in_a_later_slice_of_a_read(impl):
    from h2_upgrade import collect_stream, fake_reader, h2_client, split_101, upgrade_request
    from kyoukai_fast._connection import FEED_SLICE

    async def main():
        protocol, transport, component = await open_connection(impl, echo)
        client = h2_client()
        settings = client.initiate_upgrade_connection()
        pad = b"X-Pad-1: " + b"p" * 5000 + b"\r\nX-Pad-2: " + b"q" * 5000 + b"\r\n"
        data = upgrade_request(settings, path="/big-up", extra=pad) + client.data_to_send()
        assert len(data) > FEED_SLICE
        protocol.data_received(data)
        head, rest = split_101(transport.take())
        assert head.startswith(b"HTTP/1.1 101 ")
        headers, body, _ = await collect_stream(client, fake_reader(transport, rest))
        assert headers[":status"] == "200" and json.loads(body)["path"] == "/big-up"

    run(main())

def test_large_reads_mixing_bodies_and_pipelined_requests(impl):
    big = bytes(range(256)) * 400  # 100 KiB, with CRLFs inside
    chunked = b"".join(b"3e8\r\n" + b"c" * 1000 + b"\r\n" for _ in range(20)) + b"0\r\n\r\n"
    data = (get("/a") + get("/up", method="POST", body=big) + get("/b")
            + b"POST /chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunked + get("/c"))

    async def main():
        protocol, transport, component = await open_connection(
            impl, echo, max_pipelined_requests=2)
        for start in range(0, len(data), 70_000):  # three large reads
            protocol.data_received(data[start:start + 70_000])
        responses = await wait_for_responses(transport, 5)
        seen = [json.loads(r.body) for r in responses]
        assert [s["path"] for s in seen] == ["/a", "/up", "/b", "/chunked", "/c"]
        assert seen[1]["body"].encode("latin-1") == big
        assert seen[3]["body"] == "c" * 20000
        assert not transport.closed

    run(main())
