"""
Hardening over real loopback sockets, on both implementations: timeouts, flow control both ways,
limits refused before the body is sent, ``Expect: 100-continue``, streamed responses, and
graceful shutdown of a real Kyoukai server.

Every socket has a timeout, every loop is bounded, timeouts configured here are short.
"""
from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import time

import pytest
from kyoukai import Kyoukai
from werkzeug.wrappers import Response

import kyoukai_fast
from loopback import (
    TIMEOUT,
    closed_by_server,
    connect,
    echo_path,
    in_thread,
    kyoukai_serving,
    read_until_closed,
    recv_responses,
    request,
    serving,
)
from wire import parse_responses

pytestmark = pytest.mark.filterwarnings(
    "ignore:Explicitly passing the parent context:DeprecationWarning")


def the_protocol(component):
    [event] = component.connection_made.events
    return event["protocol"]


# --- timeouts ---------------------------------------------------------------------------------

def busy_client(port, count=15, pause=0.05):
    """Requests spaced by ``pause`` (under every timeout here): all must be answered."""
    with connect(port) as sock:
        for i in range(count):
            sock.sendall(request(f"/busy{i}"))
            [response] = recv_responses(sock, 1)
            assert response.status == 200 and response.body == f"/busy{i}?".encode()
            time.sleep(pause)
        assert response.header("Connection") is None  # still kept alive
    return True


def test_idle_keep_alive_connection_is_closed(impl):
    def idle_client(port):
        with connect(port) as sock:
            sock.sendall(request("/idle"))
            [response] = recv_responses(sock, 1)
            assert response.status == 200
            start = time.monotonic()
            assert closed_by_server(sock)
            return time.monotonic() - start

    async def main():
        async with serving(impl, echo_path, keepalive_timeout=0.3) as (port, component):
            idle, busy = await asyncio.gather(in_thread(idle_client, port),
                                              in_thread(busy_client, port))
            assert busy
            assert 0.25 <= idle < 3.0, idle

    asyncio.run(main())


def test_slowloris_is_closed_after_the_header_timeout(impl):
    def slow_client(port):
        with connect(port) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            start = time.monotonic()
            for i in range(100):  # one header field every 50 ms, for up to 5 s
                readable, _, _ = select.select([sock], [], [], 0.05)
                if readable:
                    break  # the server answered
                sock.sendall(b"X-%d: v\r\n" % i)
            data = read_until_closed(sock)
            return time.monotonic() - start, data

    async def main():
        async with serving(impl, echo_path, header_timeout=0.5) as (port, component):
            (elapsed, data), busy = await asyncio.gather(in_thread(slow_client, port),
                                                         in_thread(busy_client, port))
            assert busy
            [response] = parse_responses(data)
            assert response.status == 408 and response.header("Connection") == "close"
            assert 0.45 <= elapsed < 3.0, elapsed
            assert component.app.requests and all(r.path.startswith("/busy")
                                                  for r in component.app.requests)

    asyncio.run(main())


def test_slow_body_is_closed_after_the_header_timeout(impl):
    def slow_client(port):
        with connect(port) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\nab")
            start = time.monotonic()
            return read_until_closed(sock), time.monotonic() - start

    async def main():
        async with serving(impl, echo_path, header_timeout=0.4) as (port, component):
            (data, elapsed), busy = await asyncio.gather(in_thread(slow_client, port),
                                                         in_thread(busy_client, port))
            assert busy
            [response] = parse_responses(data)
            assert response.status == 408
            assert 0.35 <= elapsed < 3.0, elapsed

    asyncio.run(main())


# --- flow control -----------------------------------------------------------------------------

def test_reading_pauses_at_the_pipeline_bound_and_resumes(impl):
    gate = asyncio.Event()

    async def handler(request):
        await gate.wait()
        return Response(request.path)

    def client(port, sent):
        with connect(port) as sock:
            for batch in range(10):  # separate sends, so that they arrive as separate reads
                sock.sendall(b"".join(request(f"/r{batch * 4 + i}") for i in range(4)))
                time.sleep(0.02)
            sent.set()
            return [r.body for r in recv_responses(sock, 40)]

    async def main():
        async with serving(impl, handler, max_pipelined_requests=4) as (port, component):
            import threading

            sent = threading.Event()
            task = asyncio.ensure_future(in_thread(client, port, sent))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + TIMEOUT
            while not sent.is_set() and loop.time() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            protocol = the_protocol(component)
            assert not protocol.transport.is_reading()  # paused: the backlog is full
            assert len(component.app.requests) == 1     # one handler at a time
            gate.set()
            bodies = await task
            assert bodies == [f"/r{i}".encode() for i in range(40)]
            assert protocol.transport.is_reading() or protocol.transport.is_closing()

    asyncio.run(main())


def test_slow_reader_bounds_the_write_buffer_of_a_stream(impl):
    piece = b"x" * (64 * 1024)
    pieces = 256  # 16 MiB in all
    produced = []
    buffered = []

    def handler(request):
        transport = request.environ["kyoukai.protocol"].transport

        def body():
            for i in range(pieces):
                produced.append(i)
                buffered.append(transport.get_write_buffer_size())
                yield piece

        return Response(body(), mimetype="application/octet-stream")

    def client(port):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.settimeout(TIMEOUT)
            sock.connect(("127.0.0.1", port))
            sock.sendall(request("/big", "Connection: close\r\n"))
            time.sleep(0.5)  # not reading
            made_while_not_reading = len(produced)
            data = read_until_closed(sock)
        return made_while_not_reading, data

    async def main():
        async with serving(impl, handler, write_high_water=64 * 1024) as (port, _):
            made, data = await in_thread(client, port)
            [response] = parse_responses(data)
            assert response.header("Transfer-Encoding") == "chunked"
            assert len(response.body) == len(piece) * pieces
            # the generator waited for the client instead of filling memory
            assert made * len(piece) < 8 * 1024 * 1024, made
            assert max(buffered) <= 64 * 1024 + 2 * (len(piece) + 16), max(buffered)

    asyncio.run(main())


def test_slow_reader_of_pipelined_responses_bounds_the_write_buffer(impl):
    body = b"y" * (256 * 1024)
    buffered = []

    def handler(request):
        buffered.append(request.environ["kyoukai.protocol"].transport.get_write_buffer_size())
        return Response(body)

    def client(port):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.settimeout(TIMEOUT)
            sock.connect(("127.0.0.1", port))
            for batch in range(8):
                sock.sendall(b"".join(request(f"/p{batch}-{i}") for i in range(8)))
            time.sleep(0.5)  # not reading
            handled_while_not_reading = len(buffered)
            sock.sendall(request("/last", "Connection: close\r\n"))
            return handled_while_not_reading, parse_responses(read_until_closed(sock))

    async def main():
        async with serving(impl, handler, write_high_water=64 * 1024,
                           max_pipelined_requests=4) as (port, _):
            handled, responses = await in_thread(client, port)
            assert len(responses) == 65 and all(r.body == body for r in responses)
            assert handled < 64  # requests waited while the client did not read
            # at most one read's worth of responses is written before writing pauses
            assert max(buffered) <= 8 * (len(body) + 512) + 64 * 1024, max(buffered)

    asyncio.run(main())


# --- limits before the body, 100-continue, streaming ------------------------------------------

def test_declared_body_over_limit_refused_before_the_body(impl):
    def client(port, expect):
        with connect(port) as sock:
            sock.sendall(b"POST /up HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10000000\r\n"
                         + (b"Expect: 100-continue\r\n" if expect else b"") + b"\r\n")
            return read_until_closed(sock)

    async def main():
        async with serving(impl, echo_path, max_body_size=1024 * 1024) as (port, component):
            for expect in (True, False):
                data = await in_thread(client, port, expect)
                assert b"100 Continue" not in data
                [response] = parse_responses(data)
                assert response.status == 413 and response.header("Connection") == "close"
            assert component.app.requests == []

    asyncio.run(main())


def test_expect_100_continue_over_a_socket(impl):
    def client(port):
        with connect(port) as sock:
            sock.sendall(b"POST /up HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n"
                         b"Expect: 100-continue\r\n\r\n")
            interim = b""
            while not interim.endswith(b"\r\n\r\n"):
                chunk = sock.recv(1024)
                assert chunk, "closed before 100 Continue"
                interim += chunk
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            sock.sendall(b"hello")
            [response] = recv_responses(sock, 1)
            return response

    def handler(request):
        return Response(request.get_data())

    async def main():
        async with serving(impl, handler) as (port, _):
            response = await in_thread(client, port)
            assert response.status == 200 and response.body == b"hello"

    asyncio.run(main())


def test_http10_stream_is_close_delimited_over_a_socket(impl):
    def handler(request):
        return Response(b"part%d;" % i for i in range(50))

    def client(port):
        with connect(port) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return read_until_closed(sock)

    async def main():
        async with serving(impl, handler) as (port, _):
            [response] = parse_responses(await in_thread(client, port), closed=True)
            assert response.version == "1.0"
            assert response.header("Transfer-Encoding") is None
            assert response.header("Content-Length") is None
            assert response.body == b"".join(b"part%d;" % i for i in range(50))

    asyncio.run(main())


# --- a real Kyoukai server: 405/501, graceful shutdown ----------------------------------------

@contextlib.asynccontextmanager
async def kyoukai_server(backend, **cfg):
    loop = asyncio.get_running_loop()
    app = Kyoukai("hardening", loop=loop)
    events = {"slow": asyncio.Event(), "forever": asyncio.Event(), "cancelled": []}

    @app.route("/", methods=["GET"])
    async def index(ctx):
        return "hi"

    @app.route("/slow")
    async def slow(ctx):
        events["slow"].set()
        await asyncio.sleep(0.3)
        return "slow done"

    @app.route("/forever")
    async def forever(ctx):
        events["forever"].set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            events["cancelled"].append(True)
            raise
        return "never"

    async with kyoukai_serving(app, backend, **{"keepalive_timeout": 30, **cfg}) as (port,
                                                                                     component):
        yield port, component, events


@pytest.fixture
def backend(impl):
    return impl.protocol_module.__name__


def test_kyoukai_405_has_allow_and_unknown_method_is_501(backend):
    def client(port):
        with connect(port) as sock:
            sock.sendall(b"DELETE / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            [not_allowed] = recv_responses(sock, 1)
        with connect(port) as sock:
            sock.sendall(b"FROB / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            unknown = parse_responses(read_until_closed(sock))
        return not_allowed, unknown

    async def main():
        async with kyoukai_server(backend) as (port, _, _):
            return await in_thread(client, port)

    not_allowed, [unknown] = asyncio.run(main())
    assert not_allowed.status == 405
    assert "GET" in [m.strip() for m in not_allowed.header("Allow", "").split(",")]
    assert unknown.status == 501 and unknown.header("Connection") == "close"


def test_graceful_shutdown_lets_in_flight_requests_finish(backend):
    def open_idle(port):
        sock = connect(port)
        sock.sendall(request("/"))
        [response] = recv_responses(sock, 1)
        assert response.body == b"hi"
        return sock

    def open_in_flight(port):
        sock = connect(port)
        sock.sendall(request("/slow"))
        return sock

    async def main():
        async with kyoukai_server(backend) as (port, component, events):
            idle = await in_thread(open_idle, port)
            in_flight = await in_thread(open_in_flight, port)
            await asyncio.wait_for(events["slow"].wait(), TIMEOUT)
            shutdown = asyncio.ensure_future(kyoukai_fast.graceful_shutdown(component,
                                                                            timeout=5))
            start = time.monotonic()
            with idle:
                assert await in_thread(closed_by_server, idle)  # idle: closed at once
            assert time.monotonic() - start < 0.25
            with pytest.raises(OSError):  # no longer accepting
                (await in_thread(connect, port)).close()
            with in_flight:
                data = await in_thread(read_until_closed, in_flight)
            [response] = parse_responses(data)
            assert (response.status, response.body) == (200, b"slow done")
            assert response.header("Connection") == "close"
            assert await asyncio.wait_for(shutdown, TIMEOUT) == 0

    asyncio.run(main())


def test_graceful_shutdown_cancels_what_outlives_the_grace(backend):
    async def main():
        async with kyoukai_server(backend) as (port, component, events):
            sock = await in_thread(connect, port)
            sock.sendall(request("/forever"))
            await asyncio.wait_for(events["forever"].wait(), TIMEOUT)
            start = time.monotonic()
            cut = await asyncio.wait_for(
                kyoukai_fast.graceful_shutdown(component, timeout=0.3), TIMEOUT)
            elapsed = time.monotonic() - start
            assert cut == 1
            assert 0.25 <= elapsed < 2.0, elapsed
            for _ in range(100):
                if events["cancelled"]:
                    break
                await asyncio.sleep(0.01)
            assert events["cancelled"] == [True]
            with sock:
                assert await in_thread(read_until_closed, sock) == b""  # no response

    asyncio.run(main())


def test_refused_client_can_finish_sending_and_read_the_refusal(impl):
    def client(port):
        with connect(port) as sock:
            sock.sendall(b"POST /up HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4000000\r\n\r\n")
            for _ in range(64):  # 4 MB of body after the refusal: no reset while sending
                sock.sendall(b"z" * 62500)
            sock.shutdown(socket.SHUT_WR)
            return read_until_closed(sock)

    async def main():
        async with serving(impl, echo_path, max_body_size=1024 * 1024) as (port, component):
            [response] = parse_responses(await in_thread(client, port))
            assert response.status == 413 and response.header("Connection") == "close"
            assert component.app.requests == []

    asyncio.run(main())


def test_kyoukai_component_settings_and_conformance_over_a_socket(backend):
    def client(port):
        answers = []
        for data in (b"GET /" + b"a" * 100 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                     b"GET / HTTP/1.1\r\n\r\n",
                     b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2000\r\n\r\n",
                     b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"):
            with connect(port) as sock:
                sock.sendall(data)
                answers.append(recv_responses(sock, 1)[0])
        return answers

    async def main():
        # settings given to KyoukaiComponent reach the protocol
        async with kyoukai_server(backend, max_url_size=50, max_body_size=1000) as (port, _, _):
            return await in_thread(client, port)

    too_long, no_host, too_large, ok = asyncio.run(main())
    assert too_long.status == 414 and no_host.status == 400 and too_large.status == 413
    assert all(r.header("Connection") == "close" and r.header("Date") for r in
               (too_long, no_host, too_large))
    assert (ok.status, ok.body) == (200, b"hi")
