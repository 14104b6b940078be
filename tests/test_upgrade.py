"""
HTTP/2 handover to kyoukai_fast's ``HTTP2Protocol``: cleartext ``Upgrade: h2c`` and TLS ALPN ``h2``.

The client side is the h2 library itself, so the server's bytes are checked by a real HTTP/2
state machine: the upgrading request must come back as the response on stream 1.
"""
from __future__ import annotations

import asyncio
import json
import socket

import h2.config
import h2.connection
import h2.events
import pytest
from werkzeug.wrappers import Response

from helpers import FakeApp, FakeComponent, FakeTransport, parse_responses

from kyoukai_fast._http2 import HTTP2Protocol


class FakeSSLObject:
    def __init__(self, alpn):
        self.alpn = alpn

    def selected_alpn_protocol(self):
        return self.alpn

    def selected_npn_protocol(self):
        return None


async def echo(request):
    body = request.get_data()
    return Response(json.dumps({
        "method": request.method,
        "path": request.path,
        "args": request.args.to_dict(flat=False),
        "body": body.decode("latin-1"),
        "x_test": request.headers.get("X-Test"),
    }), mimetype="application/json")


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


async def open_connection(impl, handler=echo, transport=None):
    app = FakeApp(handler, loop=asyncio.get_running_loop())
    component = FakeComponent(app)
    protocol = impl.protocol_class(component, None, "127.0.0.1", 8080)
    transport = transport or FakeTransport()
    protocol.connection_made(transport)
    return protocol, transport, component


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


@pytest.mark.parametrize("together", [False, True], ids=["preface-later", "preface-pipelined"])
def test_h2c_upgrade_answers_stream_one(impl, together):
    async def main():
        protocol, transport, component = await open_connection(impl)
        client = h2_client()
        settings = client.initiate_upgrade_connection()
        request = upgrade_request(settings.rstrip(b"="))  # padding is optional (token68)
        if together:
            protocol.data_received(request + client.data_to_send())
        else:
            protocol.data_received(request)
        head, rest = split_101(transport.take())
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert b"\r\nUpgrade: h2c\r\n" in head
        assert isinstance(transport.protocol, HTTP2Protocol)
        if not together:
            transport.protocol.data_received(client.data_to_send())
        headers, body, events = await collect_stream(client, fake_reader(transport, rest))
        assert headers[":status"] == "200"
        seen = json.loads(body)
        assert seen == {"method": "GET", "path": "/up", "args": {"x": ["1"]}, "body": "",
                        "x_test": "carried"}
        assert [r.path for r in component.app.requests] == ["/up"]
        # the HTTP/1.1 object let go of the connection
        protocol.data_received(b"GET / HTTP/1.1\r\n\r\n")
        assert transport.take() == b""
        # and HTTP/2 goes on: a second request on stream 3
        client.send_headers(3, [(":method", "GET"), (":path", "/second"), (":scheme", "http"),
                                (":authority", "example.com")], end_stream=True)
        transport.protocol.data_received(client.data_to_send())
        headers, body, _ = await collect_stream(client, fake_reader(transport), stream_id=3)
        assert headers[":status"] == "200" and json.loads(body)["path"] == "/second"

    asyncio.run(main())


@pytest.mark.parametrize("split", [None, 3, -1], ids=["one-read", "body-later", "preface-later"])
def test_h2c_upgrade_with_body(impl, split):
    async def main():
        protocol, transport, component = await open_connection(impl)
        client = h2_client()
        settings = client.initiate_upgrade_connection()
        request = upgrade_request(settings, path="/post", method="POST", body=b"upgrade body")
        preface = client.data_to_send()
        if split is None:
            protocol.data_received(request + preface)
        elif split > 0:  # the head and a bit of the body, then the rest of it with the preface
            cut = request.index(b"\r\n\r\n") + 4 + split
            protocol.data_received(request[:cut])
            assert transport.written == b"" and transport.protocol is None
            protocol.data_received(request[cut:] + preface)
        else:
            protocol.data_received(request)
        head, rest = split_101(transport.take())
        assert b" 101 " in head
        if split == -1:
            transport.protocol.data_received(preface)
        headers, body, _ = await collect_stream(client, fake_reader(transport, rest))
        seen = json.loads(body)
        assert headers[":status"] == "200"
        assert seen["method"] == "POST" and seen["body"] == "upgrade body"

    asyncio.run(main())


def test_h2c_with_chunked_body_is_refused(impl):
    async def main():
        protocol, transport, component = await open_connection(impl)
        client = h2_client()
        settings = client.initiate_upgrade_connection()
        request = upgrade_request(settings, method="POST",
                                  extra=b"Transfer-Encoding: chunked\r\n")
        request += b"3\r\nabc\r\n0\r\n\r\n"
        protocol.data_received(request)
        await asyncio.sleep(0)
        [response] = parse_responses(transport.take())
        assert response.status == 400 and transport.closed and transport.protocol is None
        assert component.app.requests == []

    asyncio.run(main())


@pytest.mark.parametrize("settings", [b"!!!not base64!!!", b"AAE", b"AAMAAABk, AAMAAABk"])
def test_h2c_with_bad_settings_is_refused(impl, settings):
    async def main():
        protocol, transport, component = await open_connection(impl)
        protocol.data_received(upgrade_request(settings))
        await asyncio.sleep(0)
        [response] = parse_responses(transport.take())
        assert response.status == 400
        assert transport.closed and transport.protocol is None
        assert component.app.requests == []

    asyncio.run(main())


def test_h2c_after_pipelined_request_is_refused(impl):
    async def main():
        protocol, transport, component = await open_connection(impl)
        client = h2_client()
        settings = client.initiate_upgrade_connection()
        protocol.data_received(b"GET /first HTTP/1.1\r\nHost: h\r\n\r\n"
                               + upgrade_request(settings))
        for _ in range(10):
            await asyncio.sleep(0)
        first, refused = parse_responses(transport.take())
        assert first.status == 200 and refused.status == 400
        assert transport.protocol is None and transport.closed
        assert [r.path for r in component.app.requests] == ["/first"]

    asyncio.run(main())


def test_tls_alpn_h2_is_handed_over(impl):
    async def main():
        transport = FakeTransport(ssl_object=FakeSSLObject("h2"))
        protocol, transport, component = await open_connection(impl, transport=transport)
        assert isinstance(transport.protocol, HTTP2Protocol)
        assert transport.protocol.transport is transport
        client = h2_client()
        client.initiate_connection()
        client.send_headers(1, [(":method", "GET"), (":path", "/tls?y=2"), (":scheme", "https"),
                                (":authority", "example.com"), ("x-test", "t")],
                            end_stream=True)
        transport.protocol.data_received(client.data_to_send())
        headers, body, _ = await collect_stream(client, fake_reader(transport))
        assert headers[":status"] == "200"
        seen = json.loads(body)
        assert seen["path"] == "/tls" and seen["args"] == {"y": ["2"]}
        assert seen["x_test"] == "t"
        # announced once, by the HTTP/2 protocol (the HTTP/1.1 object never took it)
        assert component.connection_made.events == [{"protocol": transport.protocol}]

    asyncio.run(main())


def test_tls_alpn_http11_stays_http11(impl):
    async def main():
        transport = FakeTransport(ssl_object=FakeSSLObject("http/1.1"))
        protocol, transport, component = await open_connection(impl, transport=transport)
        assert transport.protocol is None
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        await asyncio.sleep(0)
        [response] = parse_responses(transport.take(), closed=False)
        assert response.status == 200

    asyncio.run(main())


def test_h2c_over_loopback_socket(impl):
    """The same upgrade through a real asyncio server, with the client in a thread."""

    def client_session(port):
        client = h2_client()
        settings = client.initiate_upgrade_connection()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.settimeout(5)
            sock.sendall(upgrade_request(settings))
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = sock.recv(65536)
                assert chunk, "closed before the 101"
                received += chunk
            head, rest = split_101(received)
            assert head.startswith(b"HTTP/1.1 101 ")
            sock.sendall(client.data_to_send())
            body = b""
            headers = None
            data = rest
            while True:
                for event in client.receive_data(data) if data else ():
                    if isinstance(event, h2.events.ResponseReceived):
                        headers = dict(event.headers)
                    elif isinstance(event, h2.events.DataReceived):
                        body += event.data
                    elif isinstance(event, h2.events.StreamEnded) and event.stream_id == 1:
                        return headers, body
                out = client.data_to_send()
                if out:
                    sock.sendall(out)
                data = sock.recv(65536)
                assert data, "closed before stream 1 ended"

    async def main():
        loop = asyncio.get_running_loop()
        component = FakeComponent(FakeApp(echo, loop=loop))
        server = await loop.create_server(
            lambda: impl.protocol_class(component, None, "127.0.0.1", 0), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            headers, body = await asyncio.wait_for(
                asyncio.to_thread(client_session, port), timeout=10)
        finally:
            server.close()
            await server.wait_closed()
        assert headers[":status"] == "200"
        assert json.loads(body)["path"] == "/up"

    asyncio.run(main())
