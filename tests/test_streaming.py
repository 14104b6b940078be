"""
Streaming a response body from a Kyoukai route with :class:`kyoukai_fast.StreamingBody`, on both
implementations: the renderers, the protocol in-process (FakeTransport), and a real Kyoukai
2.2.1.post1 app served over 127.0.0.1 with ``backend=`` each implementation.

Every socket has a timeout; every generator that waits for the client waits with a timeout.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import struct
import threading
import time

import pytest
from kyoukai import Kyoukai
from werkzeug.wrappers import Response

import kyoukai_fast
from fakes import open_connection, run, settle, wait_for_responses
from kyoukai_fast import StreamingBody
from loopback import TIMEOUT, connect, in_thread, kyoukai_serving, read_until
from wire import get, parse_responses

pytestmark = pytest.mark.filterwarnings(
    "ignore:Explicitly passing the parent context:DeprecationWarning")


class Chunks:
    """An iterable of chunks that records how far it was consumed and whether it was closed."""

    def __init__(self, *chunks):
        self.chunks = list(chunks)
        self.produced = 0
        self.closed = 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.produced == len(self.chunks):
            raise StopIteration
        self.produced += 1
        return self.chunks[self.produced - 1]

    def close(self):
        self.closed += 1


def environ_of(impl, method="GET", version="1.1"):
    return impl.to_wsgi_environment([("Host", "h")], method, "/", version)


# --- the marker -------------------------------------------------------------------------------

def test_streaming_body_is_exported_and_a_true_list():
    assert "StreamingBody" in kyoukai_fast.__all__
    chunks = Chunks(b"a", b"b")
    body = StreamingBody(chunks)
    assert isinstance(body, list) and len(body) == 0
    assert body  # Kyoukai answers a false route result with 204
    assert repr(body).startswith("StreamingBody(")
    # iterated by anything but the renderers, it reads the iterable whole once and keeps it
    assert list(body) == [b"a", b"b"] == list(body)
    assert len(body) == 2 and chunks.closed == 1


@pytest.mark.parametrize("bad", [b"bytes", "text", 42])
def test_streaming_body_refuses_what_is_not_an_iterable_of_chunks(bad):
    with pytest.raises(TypeError):
        StreamingBody(bad)


def test_streaming_body_refuses_an_async_iterable():
    async def chunks():
        yield b"a"

    agen = chunks()
    with pytest.raises(TypeError, match="synchronous"):
        StreamingBody(agen)
    run(agen.aclose())


# --- the renderers ----------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_render_streams_without_consuming(impl, version):
    chunks = Chunks(b"ab", "cd")
    response = Response(StreamingBody(chunks), headers={"X-A": "1"})
    data, app_iter, keep_alive, chunked = impl.wsgi_module.render_response(
        response, environ_of(impl, version=version), version, True)
    assert chunks.produced == 0  # no length computed by consuming it
    assert b"Content-Length" not in data and b"X-A: 1\r\n" in data
    assert chunked == (version == "1.1")
    assert (b"Transfer-Encoding: chunked\r\n" in data) == chunked
    assert keep_alive == (version == "1.1")  # HTTP/1.0: the close ends the body
    assert data.startswith(f"HTTP/{version} 200 OK\r\n".encode()) and data.endswith(b"\r\n\r\n")
    assert list(app_iter) == [b"ab", b"cd"]
    app_iter.close()
    assert chunks.closed == 1
    assert isinstance(response.response, StreamingBody)  # the response keeps its body


@pytest.mark.parametrize("method, status", [("HEAD", 200), ("GET", 204), ("GET", 304)])
def test_render_without_body_closes_unconsumed(impl, method, status):
    chunks = Chunks(b"never")
    response = Response(StreamingBody(chunks), status=status)
    data, app_iter, _, chunked = impl.wsgi_module.render_response(
        response, environ_of(impl, method), "1.1", True)
    assert app_iter is None and not chunked
    assert b"never" not in data and b"Transfer-Encoding" not in data
    assert chunks.produced == 0 and chunks.closed == 1


def test_formatted_response_joins_with_length(impl):
    chunks = Chunks(b"ab", "c\u00e9")
    data = impl.get_formatted_response(Response(StreamingBody(chunks)), environ_of(impl))
    [response] = parse_responses(data)
    assert response.body == "abc\u00e9".encode()
    assert response.header("Content-Length") == str(len(response.body))
    assert response.header("Transfer-Encoding") is None
    assert chunks.closed == 1


def test_formatted_response_to_head_has_no_body(impl):
    chunks = Chunks(b"never")
    data = impl.get_formatted_response(Response(StreamingBody(chunks)), environ_of(impl, "HEAD"))
    assert data.endswith(b"\r\n\r\n") and b"never" not in data
    assert chunks.produced == 0 and chunks.closed == 1


def test_a_list_inside_streams_too(impl):
    # werkzeug counts a list body; inside a StreamingBody it streams like a generator's.
    response = Response(StreamingBody([b"a", b"b"]))
    data, app_iter, _, chunked = impl.wsgi_module.render_response(
        response, environ_of(impl), "1.1", True)
    assert chunked and b"Content-Length" not in data
    assert list(app_iter) == [b"a", b"b"]


class HeaderAddingResponse(Response):
    def get_wsgi_headers(self, environ):
        headers = super().get_wsgi_headers(environ)
        headers["X-Subclass"] = "yes"
        return headers


def test_response_subclass_and_direct_passthrough_stream(impl):
    chunks = Chunks(b"x")
    data, app_iter, _, chunked = impl.wsgi_module.render_response(
        HeaderAddingResponse(StreamingBody(chunks)), environ_of(impl), "1.1", True)
    assert b"X-Subclass: yes\r\n" in data and chunked and chunks.produced == 0
    assert list(app_iter) == [b"x"]
    passthrough = Chunks(b"y")
    data, app_iter, _, chunked = impl.wsgi_module.render_response(
        Response(StreamingBody(passthrough), direct_passthrough=True), environ_of(impl), "1.1",
        True)
    assert chunked and b"Content-Length" not in data and passthrough.produced == 0
    assert list(app_iter) == [b"y"]
    app_iter.close()
    assert passthrough.closed == 1


def test_werkzeugs_own_wsgi_call_gets_the_whole_body():
    # What runs under Kyoukai's HTTP/2 protocol or another WSGI server: werkzeug counts a list
    # body by iterating it, then iterates it again to send it.
    chunks = Chunks(b"ab", b"cd")
    response = Response(StreamingBody(chunks))
    started = []
    app_iter = response({"REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1"},
                        lambda status, headers: started.append(dict(headers)))
    assert b"".join(app_iter) == b"abcd"
    app_iter.close()
    assert started[0]["Content-Length"] == "4" and chunks.closed == 1


def test_body_read_before_rendering_still_streams(impl):
    response = Response(StreamingBody(Chunks(b"ab", b"cd")))
    assert response.get_data() == b"abcd"
    data, app_iter, _, chunked = impl.wsgi_module.render_response(
        response, environ_of(impl), "1.1", True)
    assert chunked and list(app_iter) == [b"ab", b"cd"]
    assert impl.get_formatted_response(response, environ_of(impl)).endswith(
        b"Content-Length: 4\r\n\r\nabcd")


def test_h2c_upgrade_gets_the_whole_body(impl):
    from h2_upgrade import collect_stream, fake_reader, h2_client, split_101, upgrade_request

    async def main():
        chunks = Chunks(b"over ", b"h2")
        protocol, transport, _ = await open_connection(
            impl, lambda request: Response(StreamingBody(chunks)))
        client = h2_client()
        protocol.data_received(upgrade_request(client.initiate_upgrade_connection()))
        head, rest = split_101(transport.take())
        assert head.startswith(b"HTTP/1.1 101 ")
        transport.protocol.data_received(client.data_to_send())
        headers, body, _ = await collect_stream(client, fake_reader(transport, rest))
        assert headers[":status"] == "200" and body == b"over h2"
        assert headers["content-length"] == "7" and chunks.closed == 1

    run(main())


def test_bad_header_closes_the_iterable(impl):
    chunks = Chunks(b"never")
    response = Response(StreamingBody(chunks))
    response.headers._list.append(("X-Bad", "a\r\nInjected: 1"))  # past werkzeug's check
    with pytest.raises(ValueError):
        impl.wsgi_module.render_response(response, environ_of(impl), "1.1", True)
    assert chunks.produced == 0 and chunks.closed == 1


# --- the protocol, in-process -----------------------------------------------------------------

def test_stream_under_write_flow_control(impl):
    async def main():
        made = []

        def body():
            for i in range(4):
                made.append(i)
                yield b"chunk%d;" % i

        protocol, transport, _ = await open_connection(
            impl, lambda request: Response(StreamingBody(body())))
        protocol.data_received(get("/stream") + get("/next"))
        protocol.pause_writing()
        await settle()
        assert len(made) <= 1  # waits for the client instead of buffering the whole body
        assert b"chunk1;" not in transport.written
        protocol.resume_writing()
        first, second = await wait_for_responses(transport, 2)
        assert first.header("Transfer-Encoding") == "chunked"
        assert first.header("Content-Length") is None
        assert first.body == b"chunk0;chunk1;chunk2;chunk3;" == second.body
        assert not transport.closed

    run(main())


def test_stream_to_http10_is_delimited_by_close(impl):
    async def main():
        protocol, transport, _ = await open_connection(
            impl, lambda request: Response(StreamingBody(iter([b"a", b"b", b"c"]))))
        protocol.data_received(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        for _ in range(1000):
            if transport.closed:
                break
            await asyncio.sleep(0.001)
        assert transport.closed
        [response] = parse_responses(transport.take(), closed=True)
        assert response.header("Transfer-Encoding") is None
        assert response.header("Content-Length") is None
        assert response.body == b"abc"

    run(main())


def test_head_request_closes_the_iterable_unread(impl):
    async def main():
        made = []
        protocol, transport, _ = await open_connection(
            impl, lambda request: made.append(Chunks(b"abc")) or Response(StreamingBody(made[-1])))
        protocol.data_received(get("/", method="HEAD") + get("/"))
        head, full = await wait_for_responses(transport, 2, head_requests=(0,))
        assert head.status == 200 and head.body == b""
        assert (made[0].produced, made[0].closed == 1) == (0, True)
        assert full.body == b"abc" and made[1].closed == 1

    run(main())


def test_disconnect_mid_stream_closes_the_iterable_quietly(impl, caplog):
    async def main():
        loop = asyncio.get_running_loop()
        loop_errors = []
        loop.set_exception_handler(lambda loop, context: loop_errors.append(context))
        closed = []

        def body():
            try:
                for _ in range(100):
                    yield b"x" * 100
            finally:
                closed.append(True)

        protocol, transport, _ = await open_connection(
            impl, lambda request: Response(StreamingBody(body())))
        protocol.data_received(get("/stream"))
        protocol.pause_writing()
        await settle()
        protocol.connection_lost(ConnectionResetError("peer went away"))
        await settle()
        gc.collect()
        await settle()
        assert closed == [True]
        assert loop_errors == []

    with caplog.at_level(logging.DEBUG):
        run(main())
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_error_mid_stream_closes_the_iterable_and_the_connection(impl, caplog):
    async def main():
        closed = []

        def body():
            try:
                yield b"fine;"
                raise RuntimeError("generator broke")
            finally:
                closed.append(True)

        protocol, transport, _ = await open_connection(
            impl, lambda request: Response(StreamingBody(body())))
        protocol.data_received(get("/stream"))
        for _ in range(1000):
            if transport.closed:
                break
            await asyncio.sleep(0.001)
        assert transport.closed and closed == [True]
        data = transport.take()
        assert b"fine;" in data and not data.endswith(b"0\r\n\r\n")  # cut short, not completed

    with caplog.at_level(logging.ERROR):
        run(main())
    assert "generator broke" in caplog.text


# --- a real Kyoukai app over loopback ---------------------------------------------------------

class Shared:
    """What the routes and the blocking client threads share."""

    def __init__(self):
        self.first_seen = threading.Event()
        self.waited = []
        self.closed = threading.Event()
        self.produced = 0
        self.buffered = []
        self.head_chunks = None


def build_app(loop, shared: Shared) -> Kyoukai:
    app = Kyoukai("streaming", loop=loop)

    @app.route("/handshake")
    async def handshake(ctx):
        def chunks():
            yield b"first;"
            # Blocks the server's loop (a synchronous generator does), never the client thread.
            shared.waited.append(shared.first_seen.wait(TIMEOUT))
            yield b"second;"

        return Response(StreamingBody(chunks()), mimetype="text/plain")

    @app.route("/bare")
    async def bare(ctx):
        return StreamingBody(iter([b"bare ", b"body"]))

    @app.route("/tuple")
    async def as_tuple(ctx):
        return StreamingBody(iter([b"{}"])), 201, {"Content-Type": "application/json"}

    @app.route("/generator")
    async def generator(ctx):
        return Response(c for c in [b"a", b"b"])

    @app.route("/head")
    async def head(ctx):
        shared.head_chunks = Chunks(b"not for HEAD")
        return Response(StreamingBody(shared.head_chunks))

    @app.route("/big")
    async def big(ctx):
        transport = ctx.request.environ["kyoukai.protocol"].transport

        def chunks():
            for _ in range(256):
                shared.produced += 1
                shared.buffered.append(transport.get_write_buffer_size())
                yield b"x" * (64 * 1024)

        return Response(StreamingBody(chunks()), mimetype="application/octet-stream")

    @app.route("/endless")
    async def endless(ctx):
        def chunks():
            try:
                for _ in range(4096):  # bounded: 256 MiB at most
                    yield b"y" * (64 * 1024)
            finally:
                shared.closed.set()

        return Response(StreamingBody(chunks()))

    return app


@contextlib.asynccontextmanager
async def serving(impl, shared, **cfg):
    app = build_app(asyncio.get_running_loop(), shared)
    backend = impl.protocol_module.__name__
    async with kyoukai_serving(app, backend, **{"keepalive_timeout": 30, **cfg}) as (port, _):
        yield port


@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_kyoukai_route_streams_chunk_by_chunk(impl, version):
    shared = Shared()

    def client(port):
        with connect(port) as sock:
            sock.sendall(f"GET /handshake HTTP/{version}\r\nHost: 127.0.0.1\r\n\r\n".encode())
            data = read_until(sock, lambda data: b"first;" in data)
            # the first chunk arrived while the generator still waits for this signal
            shared.first_seen.set()
            if version == "1.1":
                data += read_until(sock, lambda data: data.endswith(b"0\r\n\r\n"))
            else:
                data += read_until(sock, lambda data: False)
            return data

    async def main():
        async with serving(impl, shared) as port:
            data = await in_thread(client, port)
        [response] = parse_responses(data, closed=version == "1.0")
        assert response.status == 200 and response.body == b"first;second;"
        assert response.header("Content-Length") is None
        assert response.header("Server", "").startswith("Kyoukai")  # went through Kyoukai
        if version == "1.1":
            assert response.header("Transfer-Encoding") == "chunked"
        else:
            assert response.version == "1.0" and response.header("Transfer-Encoding") is None
        assert shared.waited == [True]

    asyncio.run(main())


def test_kyoukai_route_results_that_stream(impl):
    shared = Shared()

    def client(port):
        with connect(port) as sock:
            sock.sendall(b"".join(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
                                  for method, path in [("GET", "/bare"), ("GET", "/tuple"),
                                                       ("HEAD", "/head"), ("GET", "/generator")]))
            data = b""
            while True:
                try:
                    responses = parse_responses(data, head_requests=(2,), closed=False)
                except (AssertionError, ValueError):
                    responses = []
                if len(responses) == 4:
                    return responses
                chunk = sock.recv(65536)
                assert chunk, data
                data += chunk

    async def main():
        async with serving(impl, shared) as port:
            bare, as_tuple, head, generator = await in_thread(client, port)
        assert (bare.status, bare.body) == (200, b"bare body")
        assert bare.header("Transfer-Encoding") == "chunked"
        assert (as_tuple.status, as_tuple.body) == (201, b"{}")
        assert as_tuple.header("Content-Type") == "application/json"
        assert as_tuple.header("Transfer-Encoding") == "chunked"
        assert head.status == 200 and head.body == b""
        assert shared.head_chunks.produced == 0 and shared.head_chunks.closed == 1
        # why StreamingBody exists: Kyoukai itself turns a generator body into its str()
        assert generator.body.startswith(b"<generator object")

    asyncio.run(main())


def test_slow_reader_keeps_the_write_buffer_bounded(impl):
    shared = Shared()
    piece = 64 * 1024

    def client(port):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.settimeout(TIMEOUT)
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            time.sleep(0.5)  # not reading
            made_while_not_reading = shared.produced
            return made_while_not_reading, read_until(sock, lambda data: False)

    async def main():
        async with serving(impl, shared, write_high_water=64 * 1024) as port:
            made, data = await in_thread(client, port)
        [response] = parse_responses(data)
        assert response.header("Transfer-Encoding") == "chunked"
        assert len(response.body) == 256 * piece
        assert made * piece < 8 * 1024 * 1024, made  # the generator waited for the client
        assert max(shared.buffered) <= 64 * 1024 + 2 * (piece + 16), max(shared.buffered)

    asyncio.run(main())


def test_client_disconnect_mid_stream_closes_the_iterable_quietly(impl, caplog):
    shared = Shared()

    def client(port):
        with connect(port) as sock:
            sock.sendall(b"GET /endless HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            data = read_until(sock, lambda data: len(data) > 256 * 1024)
            # close with a reset: the server learns at once that nobody is reading
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return data

    async def main():
        loop = asyncio.get_running_loop()
        loop_errors = []
        loop.set_exception_handler(lambda loop, context: loop_errors.append(context))
        async with serving(impl, shared) as port:
            data = await in_thread(client, port)
            assert data.startswith(b"HTTP/1.1 200 OK\r\n")
            assert await in_thread(shared.closed.wait, TIMEOUT)
            await asyncio.sleep(0.05)  # let the connection's callbacks finish
        assert loop_errors == []

    with caplog.at_level(logging.INFO):
        asyncio.run(main())
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
