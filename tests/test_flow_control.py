"""
Flow control, the one piece every protocol uses (``_flow_control.FlowControl``): on its own, in
both HTTP/1.1 twins (made on a connection's first pause, in its cold state) and in HTTP/2 (handed
over from both twins): pause and resume, drain, failing writers on ``connection_lost`` and on
close while paused, reading paused while the pipeline is full.
"""
from __future__ import annotations

import asyncio
import logging

import h2.events
import pytest
from werkzeug.wrappers import Response

from fakes import BufferingTransport, FakeTransport, open_connection, run, settle
from h2_upgrade import collect_stream, fake_reader, h2_client, split_101, upgrade_request
from kyoukai_fast import StreamingBody
from kyoukai_fast._connection import ColdState
from kyoukai_fast._flow_control import FlowControl
from kyoukai_fast._http2 import HTTP2Protocol
from wire import get, parse_responses

PIECE = b"x" * 1024


class Pieces:
    """``count`` pieces of 1 KiB; records how many were produced and whether it was closed."""

    def __init__(self, count):
        self.count = count
        self.produced = 0
        self.closed = False

    def __iter__(self):
        try:
            for _ in range(self.count):
                self.produced += 1
                yield PIECE
        finally:
            self.closed = True


# --- FlowControl on its own ---------------------------------------------------------------------

def test_drain_returns_at_once_unless_writing_is_paused():
    async def main():
        flow = FlowControl(FakeTransport())
        await asyncio.wait_for(flow.drain(), 1)
        flow.pause_writing()
        waiter = asyncio.ensure_future(flow.drain())
        await settle()
        assert flow.writing_paused and not waiter.done()
        flow.resume_writing()
        await asyncio.wait_for(waiter, 1)
        assert not flow.writing_paused

    run(main())


def test_resume_wakes_every_waiting_writer_even_past_a_cancelled_one():
    async def main():
        flow = FlowControl(FakeTransport())
        flow.pause_writing()
        writers = [asyncio.ensure_future(flow.drain()) for _ in range(3)]
        await settle()
        writers[0].cancel()
        await settle()
        flow.resume_writing()
        await asyncio.wait_for(asyncio.gather(*writers[1:]), 1)
        assert writers[0].cancelled()

    run(main())


@pytest.mark.parametrize("end", ["connection_lost", "close"])
def test_lost_or_closed_connection_fails_waiting_and_later_writers(end):
    async def main():
        loop = asyncio.get_running_loop()
        loop_errors = []
        loop.set_exception_handler(lambda loop, context: loop_errors.append(context))
        flow = FlowControl(FakeTransport())
        flow.pause_writing()
        waiting = asyncio.ensure_future(flow.drain())
        await settle()
        getattr(flow, end)()
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(waiting, 1)
        assert not flow.writing_paused
        with pytest.raises(ConnectionResetError):
            await flow.drain()  # never waits for a client that is gone
        flow.resume_writing()  # a late callback from the transport changes nothing
        with pytest.raises(ConnectionResetError):
            await flow.drain()
        assert loop_errors == []

    run(main())


def test_reading_is_paused_and_resumed_once_each_way_and_left_alone_once_lost():
    transport = FakeTransport()
    flow = FlowControl(transport)
    flow.pause_reading()
    flow.pause_reading()
    assert flow.reading_paused and (transport.pause_calls, transport.resume_calls) == (1, 0)
    flow.resume_reading()
    flow.resume_reading()
    assert not flow.reading_paused and (transport.pause_calls, transport.resume_calls) == (1, 1)
    flow.connection_lost()
    flow.pause_reading()
    flow.resume_reading()
    assert (transport.pause_calls, transport.resume_calls) == (1, 1)


# --- HTTP/1.1, both twins -----------------------------------------------------------------------

def test_an_unpaused_connection_has_no_flow_control(impl):
    # An idle keep-alive connection does not pay for flow control (bench/idle_memory.py).
    async def main():
        protocol, transport, _ = await open_connection(impl, lambda request: Response("ok"))
        protocol.data_received(get("/") + get("/again"))
        await settle()
        assert [r.body for r in parse_responses(transport.take())] == [b"ok", b"ok"]
        assert protocol._cold is None

    run(main())


def test_the_first_pause_makes_the_flow_control_in_the_cold_state(impl):
    async def main():
        protocol, transport, _ = await open_connection(impl, lambda request: Response("ok"))
        protocol.resume_writing()  # a resume without a pause makes nothing
        assert protocol._cold is None
        protocol.pause_writing()
        cold = protocol._cold
        assert type(cold) is ColdState and type(cold.flow) is FlowControl
        assert cold.writing_paused and cold.flow._transport is transport
        protocol.data_received(get("/"))
        await settle()
        assert transport.written == b""  # paused: the request waits
        protocol.resume_writing()
        await settle()
        assert not cold.writing_paused and protocol._cold.flow is cold.flow
        assert [r.body for r in parse_responses(transport.take())] == [b"ok"]

    run(main())


def test_streamed_body_is_produced_as_the_client_reads(impl):
    async def main():
        pieces = Pieces(64)
        transport = BufferingTransport(high=4096)
        protocol, _, _ = await open_connection(
            impl, lambda request: Response(StreamingBody(pieces)), transport=transport)
        transport.owner = protocol
        protocol.data_received(get("/stream"))
        received = bytearray()
        ahead = []
        for _ in range(200):
            await settle()
            ahead.append(pieces.produced - len(received) // 1024)
            received += transport.client_reads()
            if pieces.closed:
                break
        await settle()
        received += transport.client_reads()
        [response] = parse_responses(bytes(received))
        assert response.body == PIECE * 64 and pieces.closed
        # the server never got more than the high-water mark and a piece ahead of the client
        assert max(ahead) <= 6, ahead
        assert protocol._cold.flow is not None and not protocol._cold.writing_paused

    run(main())


async def _paused_stream(impl, pieces):
    protocol, transport, _ = await open_connection(
        impl, lambda request: Response(StreamingBody(pieces)))
    protocol.data_received(get("/stream"))
    protocol.pause_writing()
    await settle()
    assert 1 <= pieces.produced <= 2 and not pieces.closed  # waiting in drain
    return protocol, transport


def test_connection_lost_while_paused_fails_the_waiting_writer(impl, caplog):
    async def main():
        pieces = Pieces(100)
        protocol, transport = await _paused_stream(impl, pieces)
        flow = protocol._cold.flow
        protocol.connection_lost(ConnectionResetError("peer went away"))
        await settle()
        assert pieces.closed and pieces.produced <= 2
        with pytest.raises(ConnectionResetError):
            await flow.drain()

    with caplog.at_level(logging.DEBUG):
        run(main())
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_close_while_paused_stops_the_waiting_writer_at_once(impl, caplog):
    # Nothing more is written after close(): the stream stops then, not once the client has
    # read what the transport still buffers (or never, if it reads nothing).
    async def main():
        pieces = Pieces(100)
        protocol, transport = await _paused_stream(impl, pieces)
        protocol.close()
        written = len(transport.written)
        await settle()
        assert transport.closed and pieces.closed and pieces.produced <= 2
        assert protocol._handler is None  # the streaming task is done
        assert len(transport.written) == written
        protocol.resume_writing()  # the transport drains later: nothing more is written
        await settle()
        assert len(transport.written) == written

    with caplog.at_level(logging.DEBUG):
        run(main())
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_full_pipeline_pauses_reading_once_through_flow_control(impl):
    async def main():
        release = asyncio.Event()

        async def handler(request):
            await release.wait()
            return Response(request.path)

        protocol, transport, _ = await open_connection(impl, handler)
        protocol.data_received(b"".join(get(f"/{i}") for i in range(20)))
        await settle()
        assert protocol._cold.reading_paused and transport.reading_paused
        protocol.data_received(get("/20"))  # what was in flight still arrives: queued
        assert transport.pause_calls == 1
        release.set()
        for _ in range(100):
            await settle()
            if len(parse_responses(bytes(transport.written))) == 21:
                break
        assert [r.body for r in parse_responses(bytes(transport.written))] == [
            f"/{i}".encode() for i in range(21)]
        assert not transport.reading_paused and transport.resume_calls == 1
        assert not protocol._cold.reading_paused

    run(main())


# --- HTTP/2, handed over from both twins --------------------------------------------------------

async def _h2_stream(impl, pieces):
    """An h2c upgrade whose stream 1 streams ``pieces`` once released, writing paused first."""
    release = asyncio.Event()

    async def handler(request):
        await release.wait()
        return Response(StreamingBody(pieces))

    protocol, transport, _ = await open_connection(impl, handler)
    client = h2_client()
    protocol.data_received(upgrade_request(client.initiate_upgrade_connection()))
    await settle()
    head, rest = split_101(transport.take())
    assert head.startswith(b"HTTP/1.1 101 ")
    http2 = transport.protocol
    assert type(http2) is HTTP2Protocol
    http2.data_received(client.data_to_send())
    http2.pause_writing()
    release.set()
    await settle()
    return http2, transport, client, rest


def test_http2_sends_no_data_while_paused_and_resumes(impl):
    async def main():
        pieces = Pieces(100)
        http2, transport, client, rest = await _h2_stream(impl, pieces)
        events = client.receive_data(rest + transport.take())
        # the response's head goes out (HEADERS are not flow-controlled), no DATA
        [head] = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
        assert dict(head.headers)[":status"] == "200"
        assert not [e for e in events if isinstance(e, h2.events.DataReceived)]
        assert pieces.produced <= 66 and not pieces.closed  # write_high_water (64 KiB) ahead
        http2.resume_writing()
        read = fake_reader(transport)

        async def read_and_return_credit():
            http2.data_received(client.data_to_send())  # WINDOW_UPDATEs of what was read
            return await read()

        _, body, _ = await collect_stream(client, read_and_return_credit)
        assert body == PIECE * 100 and pieces.closed

    run(main())


def test_http2_connection_lost_while_paused_ends_the_stream(impl, caplog):
    async def main():
        pieces = Pieces(100)
        http2, transport, client, rest = await _h2_stream(impl, pieces)
        http2.connection_lost(ConnectionResetError("peer went away"))
        await settle()
        assert pieces.closed and pieces.produced < 100
        with pytest.raises(ConnectionResetError):
            await http2._flow.drain()

    with caplog.at_level(logging.DEBUG):
        run(main())
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
