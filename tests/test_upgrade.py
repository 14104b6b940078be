"""
HTTP/2 handover to kyoukai_fast's ``HTTP2Protocol``: cleartext ``Upgrade: h2c`` and TLS ALPN ``h2``.

The client side is the h2 library itself, so the server's bytes are checked by a real HTTP/2
state machine: the upgrading request must come back as the response on stream 1. Each test runs
on both HTTP/2 engines (``http2_impl``: cython-nghttp2, python-h2).
"""
from __future__ import annotations

import asyncio
import json
import socket

import h2.events
import pytest
from werkzeug.wrappers import Response

from fakes import FakeApp, FakeComponent, FakeSSLObject, FakeTransport, open_connection
from h2_upgrade import collect_stream, fake_reader, h2_client, split_101, upgrade_request
from kyoukai_fast._http2 import HTTP2Protocol
from wire import parse_responses


@pytest.fixture
def impl(http2_impl):
    return http2_impl


async def echo(request):
    body = request.get_data()
    return Response(json.dumps({
        "method": request.method,
        "path": request.path,
        "args": request.args.to_dict(flat=False),
        "body": body.decode("latin-1"),
        "x_test": request.headers.get("X-Test"),
    }), mimetype="application/json")


@pytest.mark.parametrize("together", [False, True], ids=["preface-later", "preface-pipelined"])
def test_h2c_upgrade_answers_stream_one(impl, together):
    async def main():
        protocol, transport, component = await open_connection(impl, echo)
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
        protocol, transport, component = await open_connection(impl, echo)
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
        protocol, transport, component = await open_connection(impl, echo)
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
        protocol, transport, component = await open_connection(impl, echo)
        protocol.data_received(upgrade_request(settings))
        await asyncio.sleep(0)
        [response] = parse_responses(transport.take())
        assert response.status == 400
        assert transport.closed and transport.protocol is None
        assert component.app.requests == []

    asyncio.run(main())


def test_h2c_after_pipelined_request_is_refused(impl):
    async def main():
        protocol, transport, component = await open_connection(impl, echo)
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
        protocol, transport, component = await open_connection(impl, echo, transport=transport)
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
        protocol, transport, component = await open_connection(impl, echo, transport=transport)
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


@pytest.mark.parametrize("split", [None, 5, 16], ids=["one-read", "split-5", "split-16"])
def test_only_the_http2_preface_itself_is_handed_over(impl, split):
    """llhttp pauses on any PRI request line; only ``PRI * HTTP/2.0`` (the HTTP/2 connection
    preface) goes to HTTP/2, in one read or split. ``PRI * HTTP/1.0`` is a bad HTTP/1.1
    request: 400, never an HTTP/2 connection."""
    async def main(data, expect_http2):
        protocol, transport, component = await open_connection(impl, echo)
        pieces = [data] if split is None else [data[:split], data[split:]]
        for piece in pieces:
            protocol.data_received(piece)
        await asyncio.sleep(0)
        written = transport.take()
        if expect_http2:
            assert isinstance(transport.protocol, HTTP2Protocol)
            assert not written.startswith(b"HTTP/1.")
        else:
            assert not isinstance(transport.protocol, HTTP2Protocol)
            assert written.startswith(b"HTTP/1.1 400 ")
        assert component.app.requests == []

    asyncio.run(main(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", True))
    asyncio.run(main(b"PRI * HTTP/1.0\r\n\r\nSM\r\n\r\n", False))
