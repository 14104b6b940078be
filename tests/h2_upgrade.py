"""
The HTTP/2 client side of the in-process h2c / ALPN hand-over tests: the h2 library's own state
machine reads what the server wrote, so its bytes are checked by a real HTTP/2 implementation.

* :func:`h2_client`, :func:`upgrade_request`: a client and its ``Upgrade: h2c`` request.
* :func:`split_101`, :func:`fake_reader`, :func:`collect_stream`: the server's answer, read from
  a :class:`fakes.FakeTransport` until a stream ends.
"""
from __future__ import annotations

import asyncio

import h2.config
import h2.connection
import h2.events

__all__ = ("h2_client", "upgrade_request", "collect_stream", "fake_reader", "split_101")


def h2_client():
    return h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                header_encoding="utf-8"))


def upgrade_request(settings: bytes, path="/up?x=1", method="GET", body=b"",
                    extra=b"") -> bytes:
    head = (f"{method} {path} HTTP/1.1\r\nHost: example.com\r\n"
            f"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nX-Test: carried\r\n"
            ).encode() + b"HTTP2-Settings: " + settings + b"\r\n" + extra
    if body:
        head += b"Content-Length: %d\r\n" % len(body)
    return head + b"\r\n" + body


async def collect_stream(client, read, stream_id=1, timeout=5.0):
    """Feed server bytes (``await read()``) into ``client`` until ``stream_id`` ends."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    headers, body, events_seen = None, b"", []
    while True:
        data = await read()
        for event in client.receive_data(data) if data else ():
            events_seen.append(event)
            if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream_id:
                headers = dict(event.headers)
            elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream_id:
                body += event.data
                client.acknowledge_received_data(event.flow_controlled_length, stream_id)
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream_id:
                return headers, body, events_seen
        if loop.time() > deadline:
            raise AssertionError(f"stream {stream_id} did not end: {events_seen}")


def fake_reader(transport, first=b""):
    """What the server wrote, for ``collect_stream``: ``first`` (bytes already taken, e.g. those
    after a 101), then whatever the transport receives."""
    pending = [first] if first else []

    async def read():
        if pending:
            return pending.pop()
        await asyncio.sleep(0.001)
        return transport.take()
    return read


def split_101(data: bytes):
    end = data.index(b"\r\n\r\n") + 4
    return data[:end], data[end:]
