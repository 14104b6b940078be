"""
kyoukai_fast's HTTP/2 protocol behind a real asyncio server on 127.0.0.1, on both HTTP/1.1
implementations (which hand the connection over: preface, h2c, ALPN).

Real clients (curl, h2load from nghttp2-client, httpx) and a raw h2 client (``h2client``) for
flow control, resets, GOAWAY, SETTINGS and the known attacks. Each test runs on both HTTP/2
engines: the compiled twin with libnghttp2's, the pure-Python one with h2's (``http2_impl``).
"""
from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess

import h2.errors
import h2.events
import h2.settings
import pytest
from hyperframe.frame import ContinuationFrame, DataFrame, HeadersFrame, PingFrame, SettingsFrame
from werkzeug.wrappers import Response

from h2client import H2Client
from kyoukai_fast import StreamingBody, graceful_shutdown
from kyoukai_fast._http2 import HTTP2Protocol
from loopback import connect, in_thread, recv_responses, serving
from wire import parse_responses

PIECE = bytes(range(256)) * 256  # 64 KiB
MiB = 1024 * 1024


@pytest.fixture
def impl(http2_impl):
    return http2_impl


def tool(name):
    """A client the project's setup installs (scripts/install-clients.sh): missing is a failure."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run scripts/install-clients.sh")
    return path


async def app(request):
    environ = request.environ
    path = request.path
    if path == "/echo":
        body = request.get_data()
        return Response(body, content_type=request.content_type or "application/octet-stream",
                        headers={"X-Content-Length": str(environ.get("CONTENT_LENGTH"))})
    if path == "/environ":
        return Response(json.dumps({
            "CONTENT_LENGTH": environ.get("CONTENT_LENGTH"),
            "CONTENT_TYPE": environ.get("CONTENT_TYPE"),
            "HTTP_CONTENT_LENGTH": environ.get("HTTP_CONTENT_LENGTH"),
            "HTTP_CONTENT_TYPE": environ.get("HTTP_CONTENT_TYPE"),
            "SERVER_PROTOCOL": environ.get("SERVER_PROTOCOL"),
            "url_scheme": environ.get("wsgi.url_scheme"),
            "protocol": type(environ.get("kyoukai.protocol")).__name__,
            "host": environ.get("HTTP_HOST"),
            "path": request.path, "args": request.args.to_dict(),
            "cookie": environ.get("HTTP_COOKIE"),
            "body": request.get_data().decode("latin-1"),
        }), mimetype="application/json")
    if path == "/big":
        return Response(PIECE * int(request.args.get("n", "16")),
                        mimetype="application/octet-stream")
    if path == "/stream":
        count = int(request.args.get("n", "4"))
        return Response(StreamingBody(PIECE for _ in range(count)),
                        mimetype="application/octet-stream")
    if path == "/sleep":
        await asyncio.sleep(float(request.args.get("s", "0.2")))
        return Response("slept")
    return Response("hello " + environ["SERVER_PROTOCOL"])


async def run(command, timeout=60):
    proc = await asyncio.create_subprocess_exec(*command, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{command[0]} did not finish in {timeout} s") from None
    return proc.returncode, out, err


def tls_context(certificate, alpn=("h2", "http/1.1")):
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    context.set_alpn_protocols(list(alpn))
    return context


# --- real clients ------------------------------------------------------------------------------

def test_curl_prior_knowledge_and_h2c_ten_of_ten(impl):
    curl = tool("curl")

    async def main():
        async with serving(impl, app) as (port, component):
            code, out, err = await run([curl, "-sS", "--http2-prior-knowledge",
                                        "-w", " %{http_version}", f"http://127.0.0.1:{port}/"])
            assert (code, out) == (0, b"hello HTTP/2 2"), err
            for i in range(10):
                code, out, err = await run([curl, "-sS", "--http2", "-w", " %{http_version}",
                                            "--data-binary", f"body {i}", "-H",
                                            "Content-Type: text/x-test",
                                            f"http://127.0.0.1:{port}/echo"])
                assert (code, out) == (0, f"body {i} 2".encode()), err

    asyncio.run(main())


def test_curl_over_tls_negotiates_h2(impl, certificate):
    curl = tool("curl")

    async def main():
        async with serving(impl, app, ssl=tls_context(certificate)) as (port, _):
            code, out, err = await run([curl, "-sS", "--http2", "--cacert", str(certificate[0]),
                                        "-w", " %{http_version}",
                                        f"https://127.0.0.1:{port}/environ?a=1"])
            assert code == 0, err
            body, version = out.rsplit(b" ", 1)
            assert version == b"2"
            seen = json.loads(body)
            assert seen["url_scheme"] == "https" and seen["SERVER_PROTOCOL"] == "HTTP/2"
            assert seen["protocol"] == "HTTP2Protocol" and seen["args"] == {"a": "1"}

    asyncio.run(main())


def test_httpx_bodies_echoed_exactly_and_twenty_concurrent_streams(impl):
    import httpx
    bodies = [b"hello", os.urandom(70_000), os.urandom(5 * MiB)]

    async def main():
        async with serving(impl, app) as (port, _):
            async with httpx.AsyncClient(http1=False, http2=True, timeout=30) as client:
                for body in bodies:
                    response = await client.post(f"http://127.0.0.1:{port}/echo", content=body,
                                                 headers={"Content-Type": "application/x-k"})
                    assert response.http_version == "HTTP/2"
                    assert response.status_code == 200
                    assert response.headers["content-type"] == "application/x-k"
                    assert response.headers["x-content-length"] == str(len(body))
                    assert hashlib.sha256(response.content).digest() == \
                        hashlib.sha256(body).digest()
                responses = await asyncio.gather(*(
                    client.get(f"http://127.0.0.1:{port}/environ?i={i}") for i in range(20)))
                assert [r.json()["args"] for r in responses] == [{"i": str(i)} for i in range(20)]

    asyncio.run(main())


def h2load_succeeded(out: bytes) -> tuple:
    match = re.search(rb"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded", out)
    assert match, out
    return tuple(int(g) for g in match.groups())


def test_h2load_many_streams_and_rfc_default_windows(impl):
    h2load = tool("h2load")

    async def main():
        async with serving(impl, app) as (port, _):
            code, out, err = await run([h2load, "-n", "2000", "-c", "10", "-m", "10",
                                        f"http://127.0.0.1:{port}/"], timeout=120)
            assert code == 0, err
            assert h2load_succeeded(out) == (2000, 2000, 2000)
            # 64 KiB windows (2**16 - 1) both ways, 1 MiB responses
            code, out, err = await run([h2load, "-n", "24", "-c", "2", "-m", "4", "-w", "16",
                                        "-W", "16", f"http://127.0.0.1:{port}/big?n=16"],
                                       timeout=120)
            assert code == 0, err
            assert h2load_succeeded(out) == (24, 24, 24)
            match = re.search(rb"traffic: .*\((\d+)\) data", out)
            assert match and int(match.group(1)) == 24 * 16 * len(PIECE), out

    asyncio.run(main())


# --- the request path ------------------------------------------------------------------------

def test_environ_matches_http11(impl):
    def client(port):
        with H2Client(port) as h2c:
            status, headers, body = h2c.get(
                "/environ?x=1", method="POST", body=b"a=b",
                headers=[("content-type", "application/x-www-form-urlencoded"),
                         ("cookie", "a=1"), ("cookie", "b=2")])
            assert status == 200 and "date" in headers
            return json.loads(body)

    async def main():
        async with serving(impl, app) as (port, _):
            seen = await in_thread(client, port)
        assert seen["CONTENT_LENGTH"] == "3" and seen["body"] == "a=b"
        assert seen["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
        assert seen["HTTP_CONTENT_LENGTH"] is None and seen["HTTP_CONTENT_TYPE"] is None
        assert seen["SERVER_PROTOCOL"] == "HTTP/2" and seen["url_scheme"] == "http"
        assert seen["protocol"] == "HTTP2Protocol" and seen["host"] == "127.0.0.1"
        assert seen["cookie"] == "a=1; b=2" and seen["args"] == {"x": "1"}

    asyncio.run(main())


def test_gzip_body_trailers_100_continue_and_head(impl):
    def client(port):
        with H2Client(port) as h2c:
            packed = gzip.compress(b"z" * 10_000)
            status, headers, body = h2c.get("/echo", method="POST", body=packed,
                                            headers=[("content-encoding", "gzip")])
            assert (status, body, headers["x-content-length"]) == (200, b"z" * 10_000, "10000")
            # trailers: accepted, never merged into the headers
            stream = h2c.request("/environ", method="POST", end=False)
            h2c.conn.send_data(stream, b"data")
            h2c.conn.send_headers(stream, [("x-trailer", "t")], end_stream=True)
            h2c.flush()
            status, _, body = h2c.response(stream)
            assert status == 200 and json.loads(body)["body"] == "data"
            # 100-continue: the interim answer comes before the body is sent
            stream = h2c.request("/echo", method="POST", end=False,
                                 headers=[("expect", "100-continue")])
            h2c.until(lambda: h2c.responses[stream]["informational"])
            assert dict(h2c.responses[stream]["informational"][0])[":status"] == "100"
            h2c.send_body(stream, b"after continue")
            assert h2c.response(stream)[2] == b"after continue"
            status, headers, body = h2c.get("/big?n=2", method="HEAD")
            assert (status, body, headers["content-length"]) == (200, b"", str(2 * len(PIECE)))

    async def main():
        async with serving(impl, app) as (port, _):
            await in_thread(client, port)

    asyncio.run(main())


def test_streaming_body_and_errors(impl):
    def fails(request):
        raise RuntimeError("boom")

    def client(port):
        with H2Client(port) as h2c:
            status, _, body = h2c.get("/stream?n=20")
            assert (status, body) == (200, PIECE * 20)
            status, headers, body = h2c.get("/")
            return status, body

    async def main():
        async with serving(impl, app) as (port, _):
            assert await in_thread(client, port) == (200, b"hello HTTP/2")
        async with serving(impl, fails) as (port, _):
            with H2Client(port) as h2c:
                status, headers, body = await in_thread(h2c.get, "/")
            assert status == 500 and b"Internal Server Error" in body
            assert headers["content-type"].startswith("text/html")

    asyncio.run(main())


def test_limits_answer_413_431_414(impl):
    def client(port):
        with H2Client(port) as h2c:
            status, _, _ = h2c.get("/echo", method="POST", body=b"x" * 2000)
            assert status == 413  # the body grew past max_body_size
            stream = h2c.request("/echo", method="POST", end=False,
                                 headers=[("content-length", "5000")])
            assert h2c.response(stream)[0] == 413  # announced: refused before reading on
            many = [(f"x-h{i}", "v") for i in range(30)]
            assert h2c.get("/", headers=many)[0] == 431
            assert h2c.get("/", headers=[("x-big", "v" * 600)])[0] == 431
            assert h2c.get("/" + "u" * 700)[0] == 414
            assert h2c.get("/echo", method="POST", body=b"ok")[2] == b"ok"  # still serving

    async def main():
        async with serving(impl, app, max_body_size=1000, max_header_count=20,
                           max_header_size=512, max_url_size=600) as (port, _):
            await in_thread(client, port)

    asyncio.run(main())


# --- flow control --------------------------------------------------------------------------

def test_upload_beyond_default_windows_and_credit_returned(impl):
    body = os.urandom(3 * MiB)

    def client(port):
        with H2Client(port) as h2c:
            for _ in range(2):  # the connection window is handed back, not used up
                status, _, echoed = h2c.get("/echo", method="POST", body=body)
                assert status == 200 and echoed == body
            return True

    async def main():
        async with serving(impl, app, http2_stream_window=65535,
                           http2_connection_window=65535) as (port, _):
            assert await in_thread(client, port)

    asyncio.run(main())


def test_sending_respects_client_windows_and_interleaves(impl):
    def client(port):
        settings = {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000}
        with H2Client(port, settings=settings) as h2c:
            h2c.auto_ack = False
            first = h2c.request("/big?n=4")
            second = h2c.request("/big?n=4")
            h2c.until(lambda: sum(len(h2c.responses[s]["body"]) for s in (first, second))
                      >= 2000)
            # only as much as the stream windows allow
            assert [len(h2c.responses[s]["body"]) for s in (first, second)] == [1000, 1000]
            h2c.auto_ack = True
            for stream in (first, second):
                h2c.conn.increment_flow_control_window(4 * len(PIECE), stream)
            h2c.flush()
            # data of both streams arrives interleaved, not one whole response after the other
            h2c.until(lambda: all(h2c.responses[s]["ended"] for s in (first, second)), 20)
            order = [e.stream_id for e in h2c.events if isinstance(e, h2.events.DataReceived)]
            switches = sum(1 for a, b in zip(order, order[1:]) if a != b)
            assert switches >= 4, order
            return [h2c.responses[s]["body"] for s in (first, second)]

    async def main():
        async with serving(impl, app) as (port, _):
            bodies = await in_thread(client, port)
            assert bodies == [PIECE * 4, PIECE * 4]

    asyncio.run(main())


def test_slow_reader_does_not_make_the_server_read_a_stream_whole(impl):
    produced = []

    def chunks():
        for i in range(200):  # 12.5 MiB if it were read whole
            produced.append(i)
            yield PIECE

    def handler(request):
        return Response(StreamingBody(chunks()))

    def client(port):
        with H2Client(port) as h2c:
            h2c.auto_ack = False  # windows never reopened: the client reads nothing more
            h2c.request("/")
            h2c.until(lambda: any(isinstance(e, h2.events.DataReceived) for e in h2c.events))
            import time
            time.sleep(0.3)
            return len(produced)

    async def main():
        async with serving(impl, handler) as (port, _):
            count = await in_thread(client, port)
            assert count < 8, count  # a few pieces ahead of the 64 KiB window, not 200

    asyncio.run(main())


# --- streams ---------------------------------------------------------------------------------

def test_rst_stream_cancels_the_handler_and_frees_the_stream(impl):
    started, cancelled = [], []

    async def handler(request):
        started.append(request.path)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(request.path)
            raise
        return Response("never")

    async def main():
        async with serving(impl, handler) as (port, component):
            h2c = await in_thread(H2Client, port)
            stream = h2c.request("/hang")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while not started and loop.time() < deadline:
                await asyncio.sleep(0.01)
            h2c.conn.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
            h2c.flush()
            while not cancelled and loop.time() < deadline:
                await asyncio.sleep(0.01)
            assert cancelled == ["/hang"]
            [protocol] = [p for p in component_connections(component)]
            assert protocol._streams == {} and protocol._held == 0
            h2c.close()

    asyncio.run(main())


def component_connections(component):
    from kyoukai_fast._config import existing_server_state
    return [c for c in existing_server_state(component).connections
            if isinstance(c, HTTP2Protocol)]


def test_settings_acknowledged_and_ping_answered(impl):
    def client(port):
        with H2Client(port) as h2c:
            h2c.until(lambda: any(isinstance(e, h2.events.SettingsAcknowledged)
                                  for e in h2c.events))
            remote = h2c.conn.remote_settings
            assert remote.max_concurrent_streams == 7
            assert remote.initial_window_size == 256 * 1024
            h2c.conn.ping(b"12345678")
            h2c.flush()
            h2c.until(lambda: any(isinstance(e, h2.events.PingAckReceived)
                                  and e.ping_data == b"12345678" for e in h2c.events))
            return True

    async def main():
        async with serving(impl, app, http2_max_concurrent_streams=7) as (port, _):
            assert await in_thread(client, port)

    asyncio.run(main())


def test_goaway_on_graceful_shutdown_lets_streams_finish(impl):
    async def main():
        async with serving(impl, app) as (port, component):
            h2c = await in_thread(H2Client, port)
            stream = h2c.request("/sleep?s=0.3")
            await asyncio.sleep(0.1)
            component.server = None
            cut = await graceful_shutdown(component, timeout=5)
            assert cut == 0

            def finish():
                h2c.until_closed()
                return h2c
            await in_thread(finish)
            assert h2c.goaway is not None and h2c.goaway.last_stream_id == stream
            assert h2c.goaway.error_code == h2.errors.ErrorCodes.NO_ERROR
            assert h2c.responses[stream]["body"] == b"slept"
            h2c.close()

    asyncio.run(main())


def test_idle_connection_closed_with_goaway(impl):
    def client(port):
        with H2Client(port) as h2c:
            assert h2c.get("/")[0] == 200
            h2c.until_closed(timeout=5)
            return h2c.goaway

    async def main():
        async with serving(impl, app, keepalive_timeout=0.3) as (port, _):
            goaway = await in_thread(client, port)
            assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.NO_ERROR

    asyncio.run(main())


# --- attacks ---------------------------------------------------------------------------------

def assert_calm_goaway(h2c, code=h2.errors.ErrorCodes.ENHANCE_YOUR_CALM):
    h2c.until_closed(timeout=10)
    assert h2c.goaway is not None, h2c.events[-5:]
    assert h2c.goaway.error_code == code


def still_serving(port):
    with H2Client(port) as h2c:
        return h2c.get("/")[0] == 200


def test_rapid_reset_is_stopped(impl):
    def client(port):
        with H2Client(port) as h2c:
            try:
                for _ in range(400):
                    stream = h2c.request("/sleep?s=5")
                    h2c.conn.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
                h2c.flush()
            except OSError:
                pass  # the server stopped it while the client was still sending
            assert_calm_goaway(h2c)
        return still_serving(port)

    async def main():
        async with serving(impl, app) as (port, component):
            assert await in_thread(client, port)

    asyncio.run(main())


def test_continuation_flood_is_stopped(impl):
    def client(port):
        with H2Client(port) as h2c:
            block = h2c.conn.encoder.encode([(":method", "GET"), (":path", "/"),
                                             (":scheme", "http"), (":authority", "x")])
            frame = HeadersFrame(1)
            frame.data = block
            h2c.send_raw(frame.serialize())
            more = ContinuationFrame(1)
            more.data = b"\x40\x01a\x01b" * 100  # never END_HEADERS
            try:
                for _ in range(10_000):
                    h2c.send_raw(more.serialize())
            except OSError:
                return still_serving(port)  # closed by the server while flooding
            h2c.until_closed(timeout=10)
            assert h2c.goaway is not None
            # h2 bounds the header block; nghttp2 the number of CONTINUATION frames
            assert h2c.goaway.error_code == {
                "h2": h2.errors.ErrorCodes.PROTOCOL_ERROR,
                "nghttp2": h2.errors.ErrorCodes.ENHANCE_YOUR_CALM}[impl.http2_engine]
        return still_serving(port)

    async def main():
        async with serving(impl, app) as (port, _):
            assert await in_thread(client, port)

    asyncio.run(main())


def test_hpack_bomb_and_huge_header_lists_are_refused(impl):
    def client(port):
        with H2Client(port) as h2c:
            # one big header indexed once, then referenced thousands of times: a tiny block
            # that decodes to megabytes
            h2c.conn.encoder.header_table_size = 4096
            first = h2c.request("/", headers=[("x-bomb", "b" * 3000)])
            h2c.response(first)
            fields = [(":method", "GET"), (":path", "/"), (":scheme", "http"),
                      (":authority", "x")] + [("x-bomb", "b" * 3000)] * 2000
            block = h2c.conn.encoder.encode(fields)
            assert len(block) < 16384
            frame = HeadersFrame(3)
            frame.data = block
            frame.flags.add("END_HEADERS")
            frame.flags.add("END_STREAM")
            h2c.send_raw(frame.serialize())
            h2c.until_closed(timeout=10)
            assert h2c.goaway is not None
            assert h2c.goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        return still_serving(port)

    async def main():
        async with serving(impl, app, max_header_size=4000) as (port, _):
            assert await in_thread(client, port)

    asyncio.run(main())


@pytest.mark.parametrize("flood", ["settings", "ping", "empty-data"])
def test_frame_floods_are_stopped(impl, flood):
    def client(port):
        with H2Client(port) as h2c:
            stream = h2c.request("/echo", method="POST", end=False)
            if flood == "settings":
                frame = SettingsFrame(0, settings={h2.settings.SettingCodes.MAX_FRAME_SIZE: 16384})
            elif flood == "ping":
                frame = PingFrame(0, opaque_data=b"01234567")
            else:
                frame = DataFrame(stream)
            data = frame.serialize() * 5000
            try:
                h2c.send_raw(data)
            except OSError:
                pass
            assert_calm_goaway(h2c)
        return still_serving(port)

    async def main():
        async with serving(impl, app) as (port, _):
            assert await in_thread(client, port)

    asyncio.run(main())


def test_zero_window_stall_is_closed(impl):
    def client(port):
        settings = {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0}
        with H2Client(port, settings=settings) as h2c:
            h2c.request("/big?n=4")
            assert_calm_goaway(h2c)
            return True

    async def main():
        async with serving(impl, app, http2_send_timeout=0.3) as (port, component):
            assert await in_thread(client, port)
            assert component_connections(component) == []

    asyncio.run(main())


def test_stream_id_exhaustion_and_reuse(impl):
    def client(port):
        with H2Client(port) as h2c:
            h2c.conn.highest_outbound_stream_id = 2 ** 31 - 3
            last = h2c.request("/")
            assert last == 2 ** 31 - 1
            assert h2c.response(last)[0] == 200
            # the client's ids are used up; going back to a lower one is a protocol error
            frame = HeadersFrame(5)
            frame.data = h2c.conn.encoder.encode([(":method", "GET"), (":path", "/"),
                                                  (":scheme", "http"), (":authority", "x")])
            frame.flags.add("END_HEADERS")
            frame.flags.add("END_STREAM")
            h2c.send_raw(frame.serialize())
            if impl.http2_engine == "h2":
                assert_calm_goaway(h2c, h2.errors.ErrorCodes.PROTOCOL_ERROR)
            else:
                # nghttp2 ignores a header block on a stream id below the last one (it cannot
                # tell it from a late frame of a closed stream): nothing answers it, and the
                # connection goes on
                h2c.conn.ping(b"after-it")
                h2c.flush()
                h2c.until(lambda: any(isinstance(e, h2.events.PingAckReceived)
                                      for e in h2c.events))
                assert 5 not in h2c.responses and not h2c.closed
        return still_serving(port)

    async def main():
        async with serving(impl, app) as (port, _):
            assert await in_thread(client, port)

    asyncio.run(main())


def test_too_many_streams_refused(impl):
    def client(port):
        with H2Client(port) as h2c:
            h2c.until(lambda: h2c.conn.remote_settings.max_concurrent_streams == 2)
            h2c.conn.remote_settings = h2.settings.Settings(client=False)  # ignore the limit
            streams = [h2c.request("/sleep?s=0.2") for _ in range(3)]
            h2c.until(lambda: h2c.closed or h2c.responses[streams[2]]["reset"] is not None)
            # beyond a limit the client acknowledged: a connection error on both engines
            assert h2c.closed and h2c.goaway is not None
            assert h2c.goaway.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
            return True

    async def main():
        async with serving(impl, app, http2_max_concurrent_streams=2) as (port, _):
            assert await in_thread(client, port)
            assert await in_thread(still_serving, port)

    asyncio.run(main())


# --- turning HTTP/2 off ----------------------------------------------------------------------

def test_http2_off(impl):
    def client(port):
        with connect(port) as sock:
            sock.sendall(b"GET /environ HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings"
                         b"\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
            [response] = recv_responses(sock, 1)
            assert response.status == 200 and response.version == "1.1"
            assert json.loads(response.body)["SERVER_PROTOCOL"] == "HTTP/1.1"
        with connect(port) as sock:
            sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            [response] = parse_responses(data)
            assert response.status in (400, 505)
        return True

    async def main():
        async with serving(impl, app, http2=False) as (port, _):
            assert await in_thread(client, port)

    asyncio.run(main())


# --- same app, same bytes ------------------------------------------------------------------

DIFFERENTIAL_PATHS = ["/", "/environ?q=1", "/big?n=3", "/stream?n=3", "/missing", "/redirect",
                      "/cookies", "/empty", "/unicode"]


async def differential_app(request):
    if request.path == "/":
        return Response("hello")
    if request.path == "/missing":
        return Response("not here", status=404)
    if request.path == "/redirect":
        return Response("", status=302, headers={"Location": "/elsewhere?x=1"})
    if request.path == "/cookies":
        response = Response("c")
        response.set_cookie("a", "1")
        response.set_cookie("b", "2")
        return response
    if request.path == "/empty":
        return Response(status=204)
    if request.path == "/unicode":
        return Response("h\u00e9llo \u4e16\u754c", headers={"X-Custom": "yes"})
    response = await app(request)
    if request.path == "/environ":
        seen = json.loads(response.get_data())
        for key in ("SERVER_PROTOCOL", "protocol"):
            seen.pop(key)
        response = Response(json.dumps(seen), mimetype="application/json")
    return response


def test_differential_http11_and_http2(impl):
    comparable = {"date", "transfer-encoding", "connection"}

    def client(port):
        out = []
        with connect(port) as sock, H2Client(port) as h2c:
            for path in DIFFERENTIAL_PATHS:
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                [one] = recv_responses(sock, 1)
                status, headers, body = h2c.get(path)
                h1_headers = sorted((k.lower(), v) for k, v in one.headers
                                    if k.lower() not in comparable)
                h2_headers = sorted((k, v) for k, v in h2c.responses[max(h2c.responses)]
                                    ["headers"] if not k.startswith(":") and k not in comparable)
                if one.header("Transfer-Encoding"):  # chunked in HTTP/1.1: no length in either
                    assert "content-length" not in headers
                out.append((path, (one.status, h1_headers, one.body), (status, h2_headers, body)))
                assert "date" in headers
        return out

    async def main():
        async with serving(impl, differential_app) as (port, _):
            for path, h1, h2_ in await in_thread(client, port):
                assert h1 == h2_, path

    asyncio.run(main())


def test_http2_settings_are_validated():
    from kyoukai_fast import ProtocolConfig

    assert ProtocolConfig.from_mapping({"http2": "off"}).http2 is False
    assert ProtocolConfig.from_mapping({"http2": "yes", "http2_max_concurrent_streams": "7"}) \
        == ProtocolConfig(http2_max_concurrent_streams=7)
    for bad in ({"http2": "maybe"}, {"http2": 2}, {"http2_stream_window": 0},
                {"http2_max_concurrent_streams": 2 ** 31}, {"http2_connection_window": 1000},
                {"http2_send_timeout": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ProtocolConfig.from_mapping(bad)


def test_request_that_makes_no_progress_gets_408(impl):
    def client(port):
        import time

        with H2Client(port) as h2c:
            stalled = h2c.request("/echo", method="POST", end=False)
            h2c.conn.send_data(stalled, b"partial")
            h2c.flush()
            for _ in range(100):  # 5 s at most, 20 PINGs a second (far below the flood budget)
                if h2c.responses[stalled]["headers"] is not None or h2c.goaway is not None:
                    break
                h2c.conn.ping(b"keepbusy")  # other frames do not keep the request alive
                h2c.flush()
                time.sleep(0.05)
                h2c.sock.settimeout(0.01)
                try:
                    h2c.receive()
                except OSError:
                    pass
            h2c.sock.settimeout(5)
            assert h2c.goaway is None, (h2c.goaway, h2c.events[-8:])
            status = dict(h2c.responses[stalled]["headers"] or ())[":status"]
            return status, h2c.get("/")[0]

    async def main():
        async with serving(impl, app, header_timeout=0.3) as (port, _):
            assert await in_thread(client, port) == ("408", 200)

    asyncio.run(main())


def test_streamed_body_held_to_its_declared_length(impl):
    def handler(request):
        produced = int(request.args["n"])
        return Response(StreamingBody(iter([b"x" * produced])), headers={"Content-Length": "10"})

    def client(port):
        with H2Client(port) as h2c:
            longer = h2c.get("/?n=20")
            shorter_id = h2c.request("/?n=5")
            h2c.response(shorter_id)
            return longer, h2c.responses[shorter_id]["reset"], h2c.get("/?n=10")

    async def main():
        async with serving(impl, handler) as (port, _):
            longer, reset, exact = await in_thread(client, port)
        assert longer[0] == 200 and longer[2] == b"x" * 10  # cut at the declared length
        assert reset == h2.errors.ErrorCodes.INTERNAL_ERROR  # ended short: reset, not ended
        assert exact[2] == b"x" * 10

    asyncio.run(main())
