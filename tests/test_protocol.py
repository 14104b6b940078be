"""
In-process behaviour of the HTTP/1.x protocol, on both implementations (the ``impl`` fixture).

Each test drives one protocol object through a :class:`FakeTransport` inside ``asyncio.run`` and
checks the exact bytes it writes (split strictly by :func:`parse_responses`).
"""
from __future__ import annotations

import asyncio
import contextvars
import gc
import gzip
import json
import logging
import zlib

import httptools
import pytest
from werkzeug.wrappers import Request, Response

from fakes import (
    FakeApp,
    FakeComponent,
    FakeSSLObject,
    FakeTransport,
    echo,
    open_connection,
    run,
    settle,
    wait_for_responses,
)
from wire import get, parse_responses

# --- pipelining -------------------------------------------------------------------------------

def test_pipelined_requests_do_not_share_state(impl):
    async def main():
        protocol, transport, component = await open_connection(impl, echo)
        data = (get("/one?a=1&a=2", [("X-First", "yes"), ("Content-Type", "text/plain")],
                    method="POST", body=b"first body")
                + get("/two?b=3")
                + get("/three", [("X-Third", "3")], method="PUT", body=b"third"))
        protocol.data_received(data)
        responses = await wait_for_responses(transport, 3)
        seen = [json.loads(r.body) for r in responses]
        assert [s["path"] for s in seen] == ["/one", "/two", "/three"]
        assert [s["method"] for s in seen] == ["POST", "GET", "PUT"]
        assert seen[0]["args"] == {"a": ["1", "2"]}
        assert seen[0]["body"] == "first body"
        assert seen[0]["headers"]["X-First"] == "yes"
        assert seen[1] == {"method": "GET", "path": "/two", "args": {"b": ["3"]},
                           "headers": {"Host": "example.com"}, "body": ""}
        assert "X-First" not in seen[2]["headers"] and seen[2]["args"] == {}
        assert seen[2]["body"] == "third" and seen[2]["headers"]["X-Third"] == "3"
        environs = [r.environ for r in component.app.requests]
        assert len({id(e) for e in environs}) == 3
        assert not transport.closed

    run(main())


def test_sixteen_deep_pipeline_in_one_read(impl):
    async def main():
        protocol, transport, component = await open_connection(impl, echo)
        protocol.data_received(b"".join(get(f"/r{i}?i={i}", [(f"X-H{i}", str(i))])
                                        for i in range(16)))
        responses = await wait_for_responses(transport, 16)
        assert len(responses) == 16
        for i, response in enumerate(responses):
            seen = json.loads(response.body)
            assert response.status == 200
            assert seen["path"] == f"/r{i}" and seen["args"] == {"i": [str(i)]}
            assert [k for k in seen["headers"] if k.startswith("X-H")] == [f"X-H{i}"]
        # 16 parsed requests fill the queue: reading paused, then resumed once it drained
        assert transport.pause_calls >= 1 and transport.pause_calls == transport.resume_calls
        assert not transport.reading_paused
        assert not transport.closed

    run(main())


def test_request_split_byte_by_byte(impl):
    async def main():
        protocol, transport, _ = await open_connection(impl, echo)
        data = (get("/a?x=%20y", [("X-A", "1")], method="POST", body=b"hello")
                + b"POST /chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
                + get("/c"))
        for i in range(len(data)):
            protocol.data_received(data[i:i + 1])
        responses = await wait_for_responses(transport, 3)
        seen = [json.loads(r.body) for r in responses]
        assert seen[0]["path"] == "/a" and seen[0]["args"] == {"x": [" y"]}
        assert seen[0]["body"] == "hello" and seen[0]["headers"]["X-A"] == "1"
        assert seen[1]["path"] == "/chunked" and seen[1]["body"] == "abcde"
        assert seen[2]["path"] == "/c" and seen[2]["body"] == ""

    run(main())


def test_suspending_handler_keeps_order(impl):
    events = []

    async def handler(request):
        events.append(("start", request.path))
        if request.path.startswith("/slow"):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0)
        events.append(("end", request.path))
        return Response(request.path)

    async def main():
        protocol, transport, _ = await open_connection(impl, handler)
        paths = ["/slow1", "/fast1", "/slow2", "/fast2"]
        protocol.data_received(b"".join(get(p) for p in paths))
        assert transport.written == b""  # the first handler is suspended
        responses = await wait_for_responses(transport, 4)
        assert [r.body.decode() for r in responses] == paths
        # one handler at a time: each ends before the next starts
        assert events == [(kind, p) for p in paths for kind in ("start", "end")]

    run(main())


def test_suspending_handler_keeps_its_context_variables(impl):
    # A handler that suspends is continued in a task; it must still run in the context it
    # started in, so a token it set before suspending can be reset after (Asphalt's Context
    # does this for every request). Python 3.10 needs _tasks' own context handling for it.
    request_id = contextvars.ContextVar("request_id")

    async def handler(request):
        token = request_id.set(request.path)
        await asyncio.sleep(0.01)
        seen = request_id.get()
        request_id.reset(token)
        return Response(seen)

    async def main():
        protocol, transport, _ = await open_connection(impl, handler)
        protocol.data_received(get("/one") + get("/two"))
        responses = await wait_for_responses(transport, 2)
        assert [(r.status, r.body) for r in responses] == [(200, b"/one"), (200, b"/two")]
        assert request_id.get(None) is None

    run(main())


# --- connection management --------------------------------------------------------------------

def test_http10_answers_http10_and_closes(impl):
    async def main():
        protocol, transport, _ = await open_connection(impl)
        protocol.data_received(b"GET / HTTP/1.0\r\n\r\n")
        await settle()
        data = transport.take()
        assert data.startswith(b"HTTP/1.0 200 OK\r\n")
        [response] = parse_responses(data)
        assert response.body == b"Hello, world!"
        assert transport.closed

    run(main())


def test_http10_keep_alive_stays_open(impl):
    async def main():
        protocol, transport, _ = await open_connection(impl)
        protocol.data_received(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        [response] = await wait_for_responses(transport, 1)
        assert response.version == "1.0"
        assert response.header("Connection").lower() == "keep-alive"
        assert not transport.closed
        transport.take()
        protocol.data_received(b"GET /again HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        [response] = await wait_for_responses(transport, 1)
        assert response.status == 200 and not transport.closed

    run(main())


def test_http11_connection_close(impl):
    async def main():
        protocol, transport, component = await open_connection(impl)
        protocol.data_received(get("/", [("Connection", "close")]) + get("/ignored"))
        await settle()
        [response] = parse_responses(transport.take())
        assert response.header("Connection") == "close"
        assert transport.closed
        assert len(component.app.requests) == 1

    run(main())


def test_http11_keep_alive_by_default(impl):
    async def main():
        protocol, transport, _ = await open_connection(impl)
        protocol.data_received(get("/"))
        [response] = await wait_for_responses(transport, 1)
        assert response.header("Connection") is None
        assert not transport.closed

    run(main())


def test_head_has_length_but_no_body(impl):
    async def main():
        protocol, transport, component = await open_connection(
            impl, lambda request: Response("x" * 123))
        protocol.data_received(get("/", method="HEAD") + get("/"))
        head, full = await wait_for_responses(transport, 2, head_requests=(0,))
        assert head.header("Content-Length") == "123" and head.body == b""
        assert full.header("Content-Length") == "123" and full.body == b"x" * 123
        assert component.app.requests[0].method == "HEAD"

    run(main())


# --- the environ ------------------------------------------------------------------------------

def test_repeated_headers_are_joined(impl):
    async def main():
        protocol, transport, component = await open_connection(impl)
        protocol.data_received(get("/", [("X-A", "1"), ("Cookie", "a=1"), ("x-a", "2"),
                                         ("Cookie", "b=2"), ("Accept", "text/html"),
                                         ("ACCEPT", "*/*")]))
        await wait_for_responses(transport, 1)
        environ = component.app.requests[0].environ
        assert environ["HTTP_X_A"] == "1, 2"
        assert environ["HTTP_COOKIE"] == "a=1; b=2"
        assert environ["HTTP_ACCEPT"] == "text/html, */*"
        assert component.app.requests[0].cookies.to_dict() == {"a": "1", "b": "2"}

    run(main())


@pytest.mark.parametrize("name", ["content-type", "CONTENT-TYPE", "Content-Type", "cOnTeNt-TyPe"])
def test_header_names_case_insensitive(impl, name):
    async def main():
        protocol, transport, component = await open_connection(impl)
        protocol.data_received(get("/", [(name, "text/plain"), ("x-custom-NAME", "v")],
                                   method="POST", body=b"abc"))
        await wait_for_responses(transport, 1)
        environ = component.app.requests[0].environ
        assert environ["CONTENT_TYPE"] == "text/plain"
        assert environ["CONTENT_LENGTH"] == "3"
        assert environ["HTTP_X_CUSTOM_NAME"] == "v"
        assert "HTTP_CONTENT_TYPE" not in environ and "HTTP_CONTENT_LENGTH" not in environ

    run(main())


def test_underscore_header_names_dropped(impl):
    # "X_Forwarded_For" and "X-Forwarded-For" map to the same environ key: a client could spoof
    # what a proxy set, or give the app a CONTENT_LENGTH / Transfer-Encoding the parser never
    # framed the body by. Such fields are dropped, as werkzeug's and gunicorn's servers do.
    spoofing = [("X_Forwarded_For", "6.6.6.6"), ("X-Forwarded-For", "10.0.0.1"),
                ("Content_Length", "999"), ("content_type", "evil/x"),
                ("Transfer_Encoding", "chunked"), ("Host_", "other"), ("_", "x")]

    async def main():
        protocol, transport, component = await open_connection(impl)
        # Twice: the second request finds the names in the implementations' name caches.
        for _ in range(2):
            protocol.data_received(get("/", spoofing))
            protocol.data_received(get("/", spoofing, method="POST", body=b"abc"))
        responses = await wait_for_responses(transport, 4)
        assert [r.status for r in responses] == [200] * 4
        assert not transport.closed
        for i, request in enumerate(component.app.requests):
            environ = request.environ
            assert environ["HTTP_X_FORWARDED_FOR"] == "10.0.0.1"
            assert environ["HTTP_HOST"] == "example.com"
            assert "HTTP_TRANSFER_ENCODING" not in environ and "CONTENT_TYPE" not in environ
            assert "HTTP__" not in environ and "HTTP_HOST_" not in environ
            if i % 2:
                assert environ["CONTENT_LENGTH"] == "3" and request.get_data() == b"abc"
            else:
                assert "CONTENT_LENGTH" not in environ and request.get_data() == b""

    run(main())


def test_environ_contents(impl):
    made = []

    class RecordingApp(FakeApp):
        def request_class(self, environ, populate_request=True):
            made.append((environ, populate_request))
            return Request(environ, populate_request)

    async def main():
        app = RecordingApp(loop=asyncio.get_running_loop())
        component = FakeComponent(app)
        protocol = impl.protocol_class(component, None, "127.0.0.1", 8080)
        transport = FakeTransport(peer=("10.1.2.3", 4444))
        protocol.connection_made(transport)
        protocol.data_received(get("/caf%C3%A9%20x/%2F?q=1&r=%C3%A9", [("X-Thing", "t")],
                                   method="POST", body=b"payload"))
        await wait_for_responses(transport, 1)
        [(environ, populate)] = made
        assert populate is False
        assert type(environ) is dict
        assert environ["REQUEST_METHOD"] == "POST"
        assert environ["PATH_INFO"] == "/caf\xc3\xa9 x//"  # PEP 3333: bytes as latin-1
        assert environ["QUERY_STRING"] == "q=1&r=%C3%A9"
        assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
        assert environ["SERVER_NAME"] == component.get_server_name()
        assert environ["SERVER_PORT"] == "8080"
        assert environ["REMOTE_ADDR"] == "10.1.2.3"
        assert environ["REMOTE_PORT"] == "4444"
        assert environ["SCRIPT_NAME"] == ""
        assert environ["CONTENT_LENGTH"] == "7"
        assert environ["HTTP_HOST"] == "example.com"
        assert environ["HTTP_X_THING"] == "t"
        assert environ["wsgi.version"] == (1, 0)
        assert environ["wsgi.url_scheme"] == "http"
        assert environ["wsgi.input"].read() == b"payload"
        assert hasattr(environ["wsgi.errors"], "write")
        for key in ("wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once"):
            assert environ[key] is False
        assert environ["kyoukai.protocol"] is protocol
        request = app.requests[0]
        assert request.path == "/café x//"
        assert request.args["r"] == "é"

    run(main())


@pytest.mark.parametrize("tls", [False, True])
def test_per_request_environ_values_never_leak_between_requests(impl, tls):
    """SERVER_PROTOCOL, wsgi.url_scheme and wsgi.input of each request are its own, on one
    keep-alive connection that alternates HTTP/1.0 and 1.1, bodies and none."""
    async def main():
        transport = FakeTransport(ssl_object=FakeSSLObject(alpn="http/1.1") if tls else None)
        protocol, transport, component = await open_connection(impl, transport=transport)
        keep = [("Connection", "keep-alive")]
        protocol.data_received(get("/a", keep, version="1.0")
                               + get("/b", method="POST", body=b"bee")
                               + get("/c", keep, version="1.0", method="POST", body=b"sea")
                               + get("/d"))
        await wait_for_responses(transport, 4)
        seen = [(r.environ["SERVER_PROTOCOL"], r.environ["wsgi.url_scheme"],
                 r.environ["wsgi.input"].read()) for r in component.app.requests]
        scheme = "https" if tls else "http"
        assert seen == [("HTTP/1.0", scheme, b""), ("HTTP/1.1", scheme, b"bee"),
                        ("HTTP/1.0", scheme, b"sea"), ("HTTP/1.1", scheme, b"")]
        first = component.app.requests[0].environ["wsgi.input"]
        assert first is component.app.requests[3].environ["wsgi.input"]  # the shared empty one

    run(main())


def test_https_url_scheme_with_ssl_object(impl):
    async def main():
        transport = FakeTransport(ssl_object=FakeSSLObject(alpn="http/1.1"))
        protocol, transport, component = await open_connection(impl, transport=transport)
        protocol.data_received(get("/"))
        await wait_for_responses(transport, 1)
        assert component.app.requests[0].environ["wsgi.url_scheme"] == "https"
        assert component.app.requests[0].url == "https://example.com/"

    run(main())


def test_latin1_response_headers(impl):
    async def main():
        def handler(request):
            response = Response("ok")
            response.headers["X-Name"] = "caf\xe9 \xff"
            return response

        protocol, transport, _ = await open_connection(impl, handler)
        protocol.data_received(get("/"))
        await wait_for_responses(transport, 1)
        data = bytes(transport.written)
        assert b"\r\nX-Name: caf\xe9 \xff\r\n" in data
        [response] = parse_responses(data, closed=False)
        assert response.header("X-Name") == "caf\xe9 \xff"

    run(main())


# --- flow control and cancellation ------------------------------------------------------------

def test_pause_writing_stops_starting_queued_requests(impl):
    async def main():
        release = asyncio.Event()

        async def handler(request):
            if request.path == "/first":
                await release.wait()
            return Response(request.path)

        protocol, transport, component = await open_connection(impl, handler)
        protocol.data_received(get("/first") + get("/second") + get("/third"))
        await settle()
        protocol.pause_writing()
        release.set()
        [first] = await wait_for_responses(transport, 1)
        await settle()
        assert first.body == b"/first"
        assert [r.path for r in component.app.requests] == ["/first"]
        protocol.data_received(get("/fourth"))  # arrives while paused: queued, not started
        await settle()
        assert len(component.app.requests) == 1
        protocol.resume_writing()
        responses = await wait_for_responses(transport, 4)
        assert [r.body for r in responses] == [b"/first", b"/second", b"/third", b"/fourth"]

    run(main())


def test_connection_lost_cancels_suspended_handler(impl, caplog):
    async def main():
        loop = asyncio.get_running_loop()
        loop_errors = []
        loop.set_exception_handler(lambda loop, context: loop_errors.append(context))
        states = []

        async def handler(request):
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                states.append("cancelled")
                raise
            states.append("finished")
            return Response("late")

        protocol, transport, component = await open_connection(impl, handler)
        protocol.data_received(get("/slow") + get("/queued"))
        await settle()
        protocol.connection_lost(ConnectionResetError("peer went away"))
        await settle()
        gc.collect()
        await settle()
        assert states == ["cancelled"]
        assert [r.path for r in component.app.requests] == ["/slow"]
        assert transport.written == b""
        assert loop_errors == []
        assert component.connection_lost.events == [{"protocol": protocol}]

    with caplog.at_level(logging.DEBUG):
        run(main())
    assert "never retrieved" not in caplog.text


@pytest.mark.parametrize("suspend", [False, True])
def test_app_exception_gives_500_and_logs(impl, caplog, suspend):
    async def handler(request):
        if request.path == "/boom":
            if suspend:
                await asyncio.sleep(0.001)
            raise RuntimeError("handler exploded")
        return Response("fine")

    async def main():
        protocol, transport, component = await open_connection(impl, handler)
        other = impl.protocol_class(component, None, "127.0.0.1", 8080)
        other_transport = FakeTransport()
        other.connection_made(other_transport)
        protocol.data_received(get("/boom") + get("/after"))
        [response] = await wait_for_responses(transport, 1)
        await settle()
        assert response.status == 500
        assert b"Internal Server Error" in response.body
        assert response.header("Connection") == "close"
        assert transport.closed
        other.data_received(get("/ok"))
        [ok] = await wait_for_responses(other_transport, 1)
        assert ok.status == 200 and ok.body == b"fine"
        assert not other_transport.closed

    with caplog.at_level(logging.ERROR):
        run(main())
    failures = [r for r in caplog.records if r.exc_info and r.levelno >= logging.ERROR]
    assert failures and "handler exploded" in caplog.text
    assert "RuntimeError" in caplog.text and "Traceback" in caplog.text


def test_process_request_returning_none_is_500(impl, caplog):
    async def main():
        protocol, transport, _ = await open_connection(impl, lambda request: None)
        protocol.data_received(get("/"))
        [response] = await wait_for_responses(transport, 1)
        assert response.status == 500

    with caplog.at_level(logging.ERROR):
        run(main())


# --- request bodies and limits ----------------------------------------------------------------

def _raw_deflate(data):
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize("coding, encode", [
    ("gzip", gzip.compress),
    ("x-gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("deflate", _raw_deflate),
])
def test_compressed_request_bodies(impl, coding, encode):
    plain = b"compressed body " * 100

    async def main():
        protocol, transport, component = await open_connection(impl, echo)
        protocol.data_received(get("/", [("Content-Encoding", coding)], method="POST",
                                   body=encode(plain)))
        [response] = await wait_for_responses(transport, 1)
        assert response.status == 200
        assert json.loads(response.body)["body"].encode("latin-1") == plain
        assert component.app.requests[0].environ["CONTENT_LENGTH"] == str(len(plain))

    run(main())


@pytest.mark.parametrize("coding, body, status", [
    ("gzip", b"definitely not gzip", 400),
    ("gzip", gzip.compress(b"abc" * 100, mtime=0)[:-12], 400),  # truncated
    ("deflate", b"\xff\xfe\xfd garbage", 400),
    ("br", b"whatever", 415),
])
def test_bad_compressed_bodies_refused(impl, coding, body, status):
    async def main():
        protocol, transport, component = await open_connection(impl, echo)
        protocol.data_received(get("/", [("Content-Encoding", coding)], method="POST",
                                   body=body) + get("/next"))
        await settle()
        [response] = parse_responses(transport.take())
        assert response.status == status
        assert transport.closed
        assert component.app.requests == []

    run(main())


def test_body_over_limit_is_413(impl):
    async def main():
        protocol, transport, component = await open_connection(impl, echo, max_body_size=10)
        protocol.data_received(get("/", method="POST", body=b"x" * 10))
        [ok] = await wait_for_responses(transport, 1)
        assert ok.status == 200
        transport.take()
        protocol.data_received(get("/", method="POST", body=b"x" * 11))
        await settle()
        [response] = parse_responses(transport.take())
        assert response.status == 413 and transport.closed

    run(main())


def test_chunked_body_over_limit_is_413(impl):
    async def main():
        protocol, transport, component = await open_connection(impl, echo, max_body_size=10)
        protocol.data_received(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n")
        await settle()
        [response] = parse_responses(transport.take())
        assert response.status == 413 and transport.closed
        assert component.app.requests == []

    run(main())


def test_decompressed_body_over_limit_is_413(impl):
    async def main():
        protocol, transport, component = await open_connection(impl, echo, max_body_size=1000)
        bomb = gzip.compress(b"\0" * 100_000)
        assert len(bomb) < 1000
        protocol.data_received(get("/", [("Content-Encoding", "gzip")], method="POST",
                                   body=bomb))
        await settle()
        [response] = parse_responses(transport.take())
        assert response.status == 413 and transport.closed
        assert component.app.requests == []

    run(main())


# --- malformed input --------------------------------------------------------------------------

@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
    b"GET /a\x01b HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\x01b\r\n\r\n",
    b"GET / XTTP/1.1\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
])
def test_parser_errors_are_400_and_close(impl, data):
    async def main():
        protocol, transport, component = await open_connection(impl)
        protocol.data_received(data)
        await settle()
        [response] = parse_responses(transport.take())
        assert response.status == 400
        assert response.header("Connection") == "close"
        assert transport.closed
        assert component.app.requests == []
        protocol.data_received(get("/"))  # nothing more is read
        assert transport.written == b""

    run(main())


def test_requests_before_a_parser_error_are_answered(impl):
    async def main():
        protocol, transport, component = await open_connection(impl)
        protocol.data_received(get("/good") + b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
        await settle()
        good, bad = parse_responses(transport.take())
        assert (good.status, bad.status) == (200, 400)
        assert transport.closed

    run(main())


@pytest.mark.parametrize("data, status", [(b"FROB / HTTP/1.1\r\nHost: h\r\n\r\n", 501),
                                          (b"\x00\x01\x02 nonsense\r\n\r\n", 400)])
def test_unknown_method_is_501_and_close(impl, data, status):
    # RFC 9110 15.6.2: 501 for a method the server does not recognize for any resource (a 405
    # would need an Allow field; that is the app's answer for a method a route does not take).
    # A "method" that is not a token is a malformed request line: 400 (test_request_line).
    async def main():
        protocol, transport, component = await open_connection(impl)
        protocol.data_received(data)
        await settle()
        [response] = parse_responses(transport.take())
        assert response.status == status
        assert response.header("Connection") == "close"
        assert transport.closed and component.app.requests == []

    run(main())


def test_websocket_upgrade_is_refused(impl):
    async def main():
        protocol, transport, component = await open_connection(impl)
        protocol.data_received(get("/ws", [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                           ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                                           ("Sec-WebSocket-Version", "13")]))
        await settle()
        [response] = parse_responses(transport.take())
        assert response.status == 400
        assert transport.closed
        assert component.app.requests == []
        assert transport.protocol is None

    run(main())


# --- signals and public API -------------------------------------------------------------------

def test_connection_signals(impl):
    async def main():
        protocol, transport, component = await open_connection(impl)
        assert component.connection_made.events == [{"protocol": protocol}]
        assert component.connection_lost.events == []
        protocol.connection_lost(None)
        assert component.connection_lost.events == [{"protocol": protocol}]

    run(main())


def test_public_write_methods(impl):
    async def main():
        protocol, transport, _ = await open_connection(impl)
        protocol.write("h\xe9llo ")
        protocol.raw_write(b"raw ")
        protocol._raw_write(b"rawer")
        assert transport.take() == "h\xe9llo ".encode() + b"raw rawer"
        environ = impl.to_wsgi_environment([("Host", "h")], "GET", "/", "1.1")
        protocol.write_response(Response("body", status=201), environ)
        expected = impl.get_formatted_response(Response("body", status=201), environ)
        assert transport.take() == expected
        [response] = parse_responses(expected, closed=False)
        assert response.status == 201 and response.body == b"body"
        protocol.close()
        assert transport.closed

    run(main())


def test_handle_parser_exception(impl):
    async def main():
        protocol, transport, _ = await open_connection(impl)
        protocol.handle_parser_exception(httptools.HttpParserError("broken"))
        [response] = parse_responses(transport.take())
        assert response.status == 400 and transport.closed

    run(main())


# --- streamed responses, half-close, 100-continue ---------------------------------------------

def test_streamed_response_respects_write_flow_control(impl):
    async def main():
        chunks_made = []

        def body():
            for i in range(4):
                chunks_made.append(i)
                yield b"chunk%d;" % i

        protocol, transport, _ = await open_connection(impl, lambda request: Response(body()))
        protocol.data_received(get("/stream") + get("/next"))
        protocol.pause_writing()
        await settle()
        # the head and at most one chunk went out; the generator waits for the client
        assert len(chunks_made) <= 1
        assert b"chunk1;" not in transport.written
        protocol.resume_writing()
        first, second = await wait_for_responses(transport, 2)
        assert first.header("Transfer-Encoding") == "chunked"
        assert first.body == b"chunk0;chunk1;chunk2;chunk3;"
        assert second.body == first.body
        assert not transport.closed

    run(main())


def test_connection_lost_while_streaming_is_quiet(impl, caplog):
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

        protocol, transport, _ = await open_connection(impl, lambda request: Response(body()))
        protocol.data_received(get("/stream"))
        protocol.pause_writing()
        await settle()
        protocol.connection_lost(None)
        await settle()
        gc.collect()
        await settle()
        assert closed == [True]  # the app iterator was closed
        assert loop_errors == []

    with caplog.at_level(logging.DEBUG):
        run(main())
    assert "never retrieved" not in caplog.text


def test_http10_streamed_response_is_delimited_by_close(impl):
    async def main():
        protocol, transport, _ = await open_connection(
            impl, lambda request: Response(iter([b"a", b"b", b"c"])))
        protocol.data_received(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        for _ in range(100):
            if transport.closed:
                break
            await asyncio.sleep(0.001)
        assert transport.closed
        [response] = parse_responses(transport.take(), closed=True)
        assert response.header("Transfer-Encoding") is None
        assert response.body == b"abc"

    run(main())


def test_head_with_streamed_body_sends_no_body(impl):
    async def main():
        protocol, transport, _ = await open_connection(
            impl, lambda request: Response(iter([b"abc", b"def"])))
        protocol.data_received(get("/", method="HEAD") + get("/"))
        head, full = await wait_for_responses(transport, 2, head_requests=(0,))
        assert head.status == 200 and head.body == b""
        assert full.body == b"abcdef"

    run(main())


def test_half_close_answers_pending_requests_then_closes(impl):
    async def handler(request):
        await asyncio.sleep(0.001)
        return Response(request.path)

    async def main():
        protocol, transport, _ = await open_connection(impl, handler)
        protocol.data_received(get("/a") + get("/b"))
        assert protocol.eof_received() is True  # keep the transport open to answer
        responses = await wait_for_responses(transport, 2)
        assert [r.body for r in responses] == [b"/a", b"/b"]
        await settle()
        assert transport.closed

    run(main())


def test_expect_100_continue(impl):
    async def main():
        protocol, transport, _ = await open_connection(impl, echo)
        protocol.data_received(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                               b"Content-Length: 5\r\n\r\n")
        assert transport.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
        protocol.data_received(b"hello")
        [response] = await wait_for_responses(transport, 1)
        assert json.loads(response.body)["body"] == "hello"

    run(main())
