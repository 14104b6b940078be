"""
Hostile and broken clients, in-process on both implementations (the ``impl`` fixture): the server
MUSTs of RFC 9110/9112, limits, request smuggling, response framing, ``Expect: 100-continue``.

Every refusal is checked the same way: one error response with ``Connection: close``, the
connection closed, nothing logged at ERROR (no traceback), and any request pipelined after the
refused one never reaches the app.
"""
from __future__ import annotations

import asyncio
import email.utils
import json
import logging

import pytest
from werkzeug.wrappers import Response

from helpers import FakeApp, FakeComponent, FakeTransport, parse_responses
from test_protocol import echo, get, open_connection, run, settle, wait_for_responses

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"


@pytest.fixture
def no_errors_logged(caplog):
    """Fails the test if anything was logged at ERROR or above (a refusal is not an error)."""
    caplog.set_level(logging.INFO)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


def refused(impl, data, status, reads=None, **cfg):
    """Feed ``data`` (in ``reads`` pieces if given); assert one ``status`` answer and a close.

    :return: the paths the app saw and the response.
    """
    async def main():
        protocol, transport, component = await open_connection(impl, echo, **cfg)
        for piece in reads or [data]:
            protocol.data_received(piece)
            await settle(5)
        await settle()
        responses = parse_responses(transport.take())
        assert [r.status for r in responses][-1:] == [status], responses
        assert responses[-1].header("Connection") == "close"
        assert transport.closed
        protocol.data_received(SMUGGLED)  # nothing more is read
        assert transport.written == b""
        return [r.path for r in component.app.requests], responses

    return run(main())


def served(impl, data, count=1, **cfg):
    """Feed ``data``; return the responses and the requests the app saw."""
    async def main():
        protocol, transport, component = await open_connection(impl, echo, **cfg)
        protocol.data_received(data)
        responses = await wait_for_responses(transport, count)
        return responses, component.app.requests

    return run(main())


# --- RFC 9112 3.2: Host -----------------------------------------------------------------------

@pytest.mark.parametrize("head", [
    b"GET / HTTP/1.1\r\n",                                   # no Host in HTTP/1.1
    b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n",  # two Host fields
    b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n",  # two, even if equal
    b"GET / HTTP/1.1\r\nHost: a b\r\n",
    b"GET / HTTP/1.1\r\nHost: a/b\r\n",
    b"GET / HTTP/1.1\r\nHost: user@a.example\r\n",
    b"GET / HTTP/1.1\r\nHost: a.example:80x\r\n",
    b"GET / HTTP/1.1\r\nHost: [::1\r\n",
    b"GET / HTTP/1.1\r\nHost: a%zz\r\n",
    b"GET / HTTP/1.0\r\nHost: a b\r\n",                       # invalid in HTTP/1.0 too
    b"GET http://a.example/ HTTP/1.1\r\n",                    # absolute-form still needs Host
    b"GET http://user@a.example/ HTTP/1.1\r\nHost: a.example\r\n",
    b"GET * HTTP/1.1\r\nHost: a.example\r\n",                 # asterisk-form is for OPTIONS
], ids=lambda head: head.decode().split("\r\n", 1)[1].replace("\r\n", "|") or "no-host")
def test_bad_host_or_target_is_400(impl, head, no_errors_logged):
    paths, [response] = refused(impl, head + b"\r\n" + SMUGGLED, 400)
    assert paths == []


@pytest.mark.parametrize("host", ["example.com", "example.com:8080", "127.0.0.1:1", "[::1]:80",
                                  "[::1]", "xn--caf-dma.example", "a%41b", ""])
def test_valid_hosts_are_served(impl, host):
    [response], [request] = served(impl, f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    assert response.status == 200
    assert request.environ["HTTP_HOST"] == host


def test_http10_needs_no_host(impl):
    [response], [request] = served(impl, b"GET / HTTP/1.0\r\n\r\n")
    assert response.status == 200 and "HTTP_HOST" not in request.environ


def test_absolute_form_target_wins_over_host(impl):
    [response], [request] = served(
        impl, b"GET http://other.example:81/x?y=1 HTTP/1.1\r\nHost: h.example\r\n\r\n")
    assert response.status == 200
    assert request.environ["HTTP_HOST"] == "other.example:81"
    assert (request.path, request.args["y"]) == ("/x", "1")


def test_options_asterisk_reaches_the_app(impl):
    [response], [request] = served(impl, b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
    assert response.status == 200 and request.method == "OPTIONS"


def test_field_values_lose_trailing_whitespace(impl):
    [response], [request] = served(
        impl, b"POST / HTTP/1.1\r\nHost: h.example  \r\nX-A: a b \t\r\nContent-Length: 3 \r\n"
              b"\r\nabc")
    assert response.status == 200
    assert request.environ["HTTP_HOST"] == "h.example"
    assert request.environ["HTTP_X_A"] == "a b"
    assert request.environ["CONTENT_LENGTH"] == "3"
    assert json.loads(response.body)["body"] == "abc"


# --- methods ----------------------------------------------------------------------------------

def test_connect_is_501(impl, no_errors_logged):
    paths, _ = refused(impl, b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n"
                             + SMUGGLED, 501)
    assert paths == []


def test_methods_llhttp_knows_go_to_the_app(impl):
    # the app decides (Kyoukai answers 405 with Allow for a route without that method)
    [response], [request] = served(impl, b"PROPFIND /x HTTP/1.1\r\nHost: h\r\n\r\n")
    assert response.status == 200 and request.method == "PROPFIND"


# --- request smuggling and framing ------------------------------------------------------------

SMUGGLING = {
    "cl-and-te": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "te-and-cl": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Length: 5\r\n\r\n0\r\n\r\n", 400),
    "duplicate-cl-equal": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
                           b"Content-Length: 3\r\n\r\nabc", 400),
    "duplicate-cl-differing": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
                               b"Content-Length: 40\r\n\r\nabc", 400),
    "cl-list": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\nabc", 400),
    "cl-plus": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\nabc", 400),
    "cl-negative": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -3\r\n\r\nabc", 400),
    "cl-hex": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x3\r\n\r\nabc", 400),
    "cl-empty": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: \r\n\r\nabc", 400),
    "cl-overflow": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n"
                    b"\r\nabc", 400),
    "obs-fold-space": (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n", 400),
    "obs-fold-tab": (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n\tb\r\n\r\n", 400),
    "space-before-colon": (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length : 3\r\n\r\nabc", 400),
    "chunk-size-invalid": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"zz\r\n", 400),
    "chunk-size-negative": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"-1\r\nabc\r\n0\r\n\r\n", 400),
    "chunk-size-0x": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"0x3\r\nabc\r\n0\r\n\r\n", 400),
    "chunk-size-overflow": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"fffffffffffffffffff\r\nabc\r\n0\r\n\r\n", 400),
    # Whitespace after the size is BWS (accepted, see test_request_line); within or before the
    # size it is not.
    "chunk-size-whitespace": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"3 3\r\nabc\r\n0\r\n\r\n", 400),
    "chunk-size-leading-whitespace": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: "
                                      b"chunked\r\n\r\n 3\r\nabc\r\n0\r\n\r\n", 400),
    "chunk-data-too-long": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"3\r\nabcd\r\n0\r\n\r\n", 400),
    "chunk-bare-lf": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"3\nabc\n0\n\n", 400),
    "te-chunked-not-last": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n"
                            b"\r\n0\r\n\r\n", 400),
    "te-not-chunked": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\nabc", 400),
    "te-chunked-twice": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "te-unknown": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n"
                   b"3\r\nabc\r\n0\r\n\r\n", 400),
    "te-in-http10": (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\nabc\r\n0\r\n\r\n", 400),
    "te-gzip-then-chunked": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n"
                             b"\r\n3\r\nabc\r\n0\r\n\r\n", 501),
    "te-gzip-then-chunked-fields": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n"
                                    b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                                    501),
    "bare-lf-request-line": (b"GET / HTTP/1.1\nHost: h\n\n", 400),
    "bare-lf-header": (b"GET / HTTP/1.1\r\nHost: h\nX-A: b\r\n\r\n", 400),
    "bare-cr": (b"GET / HTTP/1.1\rHost: h\r\n\r\n", 400),
    "ctl-in-value": (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x01b\r\n\r\n", 400),
    "nul-in-value": (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x00b\r\n\r\n", 400),
    "del-in-value": (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x7fb\r\n\r\n", 400),
    "invalid-name": (b"GET / HTTP/1.1\r\nHost: h\r\nX(A): b\r\n\r\n", 400),
    "space-in-target": (b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "http-0.9": (b"GET / HTTP/0.9\r\n\r\n", 505),
    "http-1.2": (b"GET / HTTP/1.2\r\nHost: h\r\n\r\n", 400),
}


@pytest.mark.parametrize("split", ["one-read", "byte-by-byte"])
@pytest.mark.parametrize("case", list(SMUGGLING))
def test_smuggling_and_bad_framing_refused(impl, case, split, no_errors_logged):
    data, status = SMUGGLING[case]
    data += SMUGGLED
    reads = [data[i:i + 1] for i in range(len(data))] if split == "byte-by-byte" else None
    paths, responses = refused(impl, data, status, reads=reads)
    assert len(responses) == 1
    assert paths == []  # neither the broken request nor the one hidden after it


@pytest.mark.parametrize("case", ["cl-and-te", "duplicate-cl-differing", "obs-fold-space",
                                  "chunk-size-invalid", "te-gzip-then-chunked"])
def test_request_before_the_bad_one_is_answered(impl, case):
    data, status = SMUGGLING[case]
    paths, responses = refused(impl, get("/first") + data + SMUGGLED, status)
    assert [r.status for r in responses] == [200, status]
    assert paths == ["/first"]


def test_trailer_fields_are_not_merged(impl):
    (response, _), (request, _) = served(
        impl, b"POST / HTTP/1.1\r\nHost: h.example\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"3\r\nabc\r\n0\r\nHost: evil.example\r\nX-T: 1\r\n\r\n"
              + get("/next"), count=2)
    assert response.status == 200
    assert request.environ["HTTP_HOST"] == "h.example"
    assert "HTTP_X_T" not in request.environ
    assert json.loads(response.body)["body"] == "abc"


def test_too_many_trailer_fields_is_431(impl, no_errors_logged):
    trailers = b"".join(b"X-T%d: 1\r\n" % i for i in range(6))
    refused(impl, b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"3\r\nabc\r\n0\r\n" + trailers + b"\r\n" + SMUGGLED, 431, max_header_count=5)


# --- limits -----------------------------------------------------------------------------------

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


# --- responses: Date, framing, Connection -----------------------------------------------------

def _assert_date(response):
    date = response.header("Date")
    assert date is not None and date.endswith(" GMT"), response.headers
    assert email.utils.parsedate_to_datetime(date).tzinfo is not None


@pytest.mark.parametrize("data,status,cfg", [
    (get("/"), 200, {}),
    (get("/", method="HEAD"), 200, {}),
    (b"GET / HTTP/1.0\r\n\r\n", 200, {}),
    (b"GET / HTTP/1.1\r\n\r\n", 400, {}),
    (b"FROB / HTTP/1.1\r\nHost: h\r\n\r\n", 501, {}),
    (get("/" + "a" * 50), 414, {"max_url_size": 10}),
    (get("/", method="POST", body=b"x" * 20), 413, {"max_body_size": 10}),
])
def test_every_response_has_a_date(impl, data, status, cfg):
    async def main():
        protocol, transport, _ = await open_connection(impl, **cfg)
        protocol.data_received(data)
        await settle()
        [response] = parse_responses(transport.take(),
                                     head_requests=(0,) if data.startswith(b"HEAD") else ())
        assert response.status == status
        _assert_date(response)

    run(main())


@pytest.mark.parametrize("make", [
    lambda: Response("ignored", status=204),
    lambda: Response("ignored", status=304),
    lambda: Response(iter([b"ignored"]), status=204),
    lambda: Response(iter([b"ignored"]), status=304),
], ids=["204", "304", "204-streamed", "304-streamed"])
def test_no_body_for_204_and_304(impl, make):
    async def main():
        protocol, transport, _ = await open_connection(impl, lambda request: make())
        protocol.data_received(get("/a") + get("/b"))
        first, second = await wait_for_responses(transport, 2)
        for response in (first, second):
            assert response.body == b""
            assert response.header("Transfer-Encoding") is None
            _assert_date(response)
        assert first.status != 204 or first.header("Content-Length") is None
        assert b"ignored" not in transport.written
        assert not transport.closed

    run(main())


def test_app_returning_an_interim_status_gets_500(impl, caplog):
    async def main():
        protocol, transport, component = await open_connection(
            impl, lambda request: Response("", status=101))
        protocol.data_received(get("/") + get("/next"))
        await settle()
        [response] = parse_responses(transport.take())
        assert response.status == 500 and transport.closed
        assert [r.path for r in component.app.requests] == ["/"]

    run(main())
    assert "interim" in caplog.text


@pytest.mark.parametrize("pieces,declared", [([b"ab", b"cdef"], 4), ([b"ab"], 5)],
                         ids=["longer", "shorter"])
def test_streamed_body_held_to_its_content_length(impl, pieces, declared, caplog):
    async def main():
        protocol, transport, component = await open_connection(
            impl, lambda request: Response(iter(pieces),
                                           headers={"Content-Length": str(declared)}))
        protocol.data_received(get("/") + get("/next"))
        for _ in range(200):
            if transport.closed or len(component.app.requests) == 2:
                break
            await asyncio.sleep(0.001)
        await settle()
        data = bytes(transport.written)
        body = b"".join(pieces)
        if len(body) > declared:  # cut to the declared length, the connection stays usable
            first, second = parse_responses(data, closed=False)
            assert first.body == body[:declared] and second.body == body[:declared]
            assert not transport.closed
        else:  # short: the connection is closed so the next response cannot be misread
            assert transport.closed
            assert data.endswith(b"\r\n\r\n" + body)
            assert [r.path for r in component.app.requests] == ["/"]

    run(main())


def test_connection_close_request_ends_the_connection(impl):
    paths, responses = refused(impl, get("/", [("Connection", "close")]) + SMUGGLED, 200)
    assert paths == ["/"] and len(responses) == 1


def test_app_connection_close_ends_the_connection(impl):
    async def main():
        protocol, transport, component = await open_connection(
            impl, lambda request: Response("bye", headers={"Connection": "close"}))
        protocol.data_received(get("/") + SMUGGLED)
        await settle()
        [response] = parse_responses(transport.take())
        assert response.body == b"bye" and transport.closed
        assert [r.path for r in component.app.requests] == ["/"]

    run(main())


@pytest.mark.parametrize("request_data", [
    b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
], ids=["http11-close", "http10"])
@pytest.mark.parametrize("body", [lambda: [b"bye"], lambda: iter([b"b", b"ye"])],
                         ids=["buffered", "streamed"])
@pytest.mark.parametrize("value", ["keep-alive", "Keep-Alive, X-Option"])
def test_app_keep_alive_cannot_contradict_the_servers_close(impl, request_data, body, value):
    # The server closes after this response (the client asked, or HTTP/1.0 without keep-alive);
    # an app's Connection header must not tell the client the connection stays open.
    async def main():
        protocol, transport, component = await open_connection(
            impl, lambda request: Response(body(), headers={"Connection": value}))
        protocol.data_received(request_data + SMUGGLED)
        await settle()
        [response] = parse_responses(transport.take())
        assert response.body == b"bye" and transport.closed
        assert response.header("Connection") == "close"
        assert [r.path for r in component.app.requests] == ["/"]

    run(main())


@pytest.mark.parametrize("name", ["Bad Name", "X:Y", "", "Caf\xe9", "X\tY", "X-Ok ",
                                  "X-A\r\nX-Injected", "X-A\n"])
@pytest.mark.parametrize("body", [lambda: [b"hi"], lambda: iter([b"h", b"i"])],
                         ids=["buffered", "streamed"])
def test_app_header_name_that_is_not_a_token_is_refused(impl, name, body):
    # A field name is a token (RFC 9110 5.1); anything else would not be the header the app
    # meant on the wire (as gunicorn, the server answers 500 instead of writing it).
    async def main():
        protocol, transport, component = await open_connection(
            impl, lambda request: Response(body(), headers=[(name, "v"), ("X-Fine", "1")]))
        protocol.data_received(get("/") + get("/next"))
        await settle()
        data = transport.take()
        [response] = parse_responses(data)
        assert response.status == 500 and transport.closed
        assert b"X-Fine" not in data
        assert [r.path for r in component.app.requests] == ["/"]

    run(main())


@pytest.mark.parametrize("name", ["X-A", "x_b", "!#$%&'*+-.^_`|~09AZaz"])
def test_every_token_is_a_valid_response_header_name(impl, name):
    async def main():
        protocol, transport, _ = await open_connection(
            impl, lambda request: Response("ok", headers=[(name, "v")]))
        protocol.data_received(get("/"))
        await settle()
        [response] = parse_responses(transport.take())
        assert response.status == 200 and response.header(name) == "v"

    run(main())


def test_http10_keep_alive_and_close(impl):
    responses, requests = served(
        impl, b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n", 2)
    assert [r.version for r in responses] == ["1.0", "1.0"]
    assert responses[0].header("Connection") == "keep-alive"
    assert responses[1].header("Connection") in (None, "close")
    assert [r.path for r in requests] == ["/a", "/b"]


@pytest.mark.parametrize("make", [
    lambda: Response([b"ab", b"cd"], headers={"Transfer-Encoding": "chunked"}),
    lambda: Response(iter([b"ab", b"cd"]), headers={"Transfer-Encoding": "chunked"}),
    lambda: Response(iter([b"ab", b"cd"]), headers={"transfer-encoding": "gzip"}),
], ids=["buffered", "streamed", "streamed-other-coding"])
def test_framing_is_the_servers_even_if_the_app_sets_transfer_encoding(impl, make):
    async def main():
        protocol, transport, _ = await open_connection(impl, lambda request: make())
        protocol.data_received(get("/a") + get("/b"))
        first, second = await wait_for_responses(transport, 2)
        for response in (first, second):
            assert response.body == b"abcd"
            codings = [v for k, v in response.headers if k.lower() == "transfer-encoding"]
            lengths = [v for k, v in response.headers if k.lower() == "content-length"]
            # exactly one framing: a Content-Length, or the server's own chunked coding
            assert (codings, lengths) in (([], ["4"]), (["chunked"], []))
        assert not transport.closed

    run(main())


# --- settings ---------------------------------------------------------------------------------

def test_every_setting_is_configurable_and_documented():
    import dataclasses
    import pathlib

    from kyoukai_fast import ProtocolConfig

    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Limits and timeouts", 1)[1]
    for field in dataclasses.fields(ProtocolConfig):
        default = getattr(ProtocolConfig, field.name)
        assert f"| `{field.name}` |" in section, field.name
        changed = ProtocolConfig.from_mapping({field.name: default * 2 + 1})
        assert getattr(changed, field.name) == default * 2 + 1
    with pytest.raises(ValueError):
        ProtocolConfig.from_mapping({"header_timeout": -1})


def test_settings_reach_the_protocol_from_the_component(impl):
    # each limit is set through the component's configuration, as KyoukaiComponent(**cfg) does
    for cfg, data, status in [
        ({"max_url_size": 5}, get("/abcdef"), 414),
        ({"max_header_count": 1}, get("/", [("X-A", "1")]), 431),
        ({"max_header_size": 10}, get("/", [("X-A", "0123456789")]), 431),
        ({"max_body_size": 3}, get("/", method="POST", body=b"abcd"), 413),
    ]:
        refused(impl, data, status, **cfg)


class _SlottedComponent:
    """A component that cannot be weakly referenced (``__slots__`` without ``__weakref__``)."""

    __slots__ = ("app", "cfg", "connection_made", "connection_lost")

    def __init__(self, app, **cfg):
        plain = FakeComponent(app, **cfg)
        self.app, self.cfg = app, cfg
        self.connection_made, self.connection_lost = plain.connection_made, plain.connection_lost

    def get_server_name(self):
        return "testserver"


def test_settings_of_components_without_weak_references_are_their_own(impl):
    # Such components are remembered by identity (see the reused-id test below): each one's
    # settings reach its connections, one after the other, in both implementations.
    async def serve(max_url_size, target):
        app = FakeApp(lambda request: Response("ok"), loop=asyncio.get_running_loop())
        component = _SlottedComponent(app, max_url_size=max_url_size)
        protocol = impl.protocol_class(component, None, "127.0.0.1", 8080)
        transport = FakeTransport()
        protocol.connection_made(transport)
        protocol.data_received(get(target))
        await settle()
        [response] = parse_responses(transport.take())
        protocol.connection_lost(None)
        return response.status

    async def main():
        for _ in range(5):
            assert await serve(5, "/abcdef") == 414
            assert await serve(8190, "/abcdef") == 200

    run(main())


def test_a_reused_id_does_not_inherit_another_components_settings():
    from kyoukai_fast._config import server_state_for

    app = FakeApp(lambda request: Response("ok"))
    first = _SlottedComponent(app, max_url_size=5)
    assert server_state_for(first, 8080).config.max_url_size == 5
    freed_id = id(first)
    del first
    # Objects of one size are usually allocated where the last one was freed: the first new
    # component would take the freed one's id, were it free.
    for _ in range(200):
        other = _SlottedComponent(app, max_url_size=8190)
        assert server_state_for(other, 8080).config.max_url_size == 8190
        if id(other) == freed_id:
            break


def test_a_server_without_connections_lets_go_of_its_loop(impl):
    # Components outlive their event loop in test suites and in apps that restart their server:
    # once the last connection is gone, nothing of the server may keep the loop alive.
    import gc
    import weakref

    from kyoukai_fast._config import existing_server_state

    loop = asyncio.new_event_loop()
    component = FakeComponent(FakeApp(lambda request: Response("ok")))

    async def serve():
        protocols = []
        for _ in range(2):
            protocol = impl.protocol_class(component, None, "127.0.0.1", 8080)
            transport = FakeTransport()
            protocol.connection_made(transport)
            protocol.data_received(get("/"))
            protocols.append((protocol, transport))
        await settle()
        state = existing_server_state(component)
        for protocol, transport in protocols:
            assert parse_responses(transport.take())[0].status == 200
            assert state._reaper is not None  # timeouts are checked while a connection lives
            protocol.connection_lost(None)
        assert state._reaper is None and not state.connections

    loop.run_until_complete(serve())
    loop.close()
    # what the test doubles themselves recorded (requests and signal events name the protocols)
    component.app.requests.clear()
    component.connection_made.events.clear()
    component.connection_lost.events.clear()
    dead_loop = weakref.ref(loop)
    del loop
    gc.collect()
    assert dead_loop() is None
    assert existing_server_state(component) is not None  # the component keeps its settings


# --- the pipeline backlog ---------------------------------------------------------------------

def _live_request_states(impl):
    import gc

    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is impl.protocol_module.RequestState)


def test_one_huge_read_of_tiny_requests_is_parsed_only_up_to_the_bound(impl):
    from kyoukai_fast._config import FEED_SLICE

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
    from kyoukai_fast._config import FEED_SLICE
    from test_upgrade import collect_stream, fake_reader, h2_client, split_101, upgrade_request

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


def test_keep_alive_idleness_starts_after_a_slow_response(impl):
    async def handler(request):
        await asyncio.sleep(0.4)  # longer than the keep-alive timeout
        return Response(request.path)

    async def main():
        protocol, transport, component = await open_connection(
            impl, handler, keepalive_timeout=0.2)
        protocol.data_received(get("/slow"))
        [first] = await wait_for_responses(transport, 1)
        await asyncio.sleep(0.1)  # idle for less than the timeout
        assert not transport.closed
        protocol.data_received(get("/again"))
        first, second = await wait_for_responses(transport, 2)
        assert second.body == b"/again"
        await asyncio.sleep(0.6)  # now idle for longer than it
        assert transport.closed

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


def test_empty_lines_do_not_keep_an_idle_connection_open(impl):
    async def main():
        protocol, transport, component = await open_connection(impl, echo, keepalive_timeout=0.3)
        protocol.data_received(get("/"))
        await wait_for_responses(transport, 1)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for _ in range(30):  # an empty line every 50 ms, for up to 1.5 s
            if transport.closed:
                break
            protocol.data_received(b"\r\n")
            await asyncio.sleep(0.05)
        assert transport.closed
        assert 0.25 <= loop.time() - start < 1.0

    run(main())


async def closed_within(transport, seconds=5.0):
    """Wait (bounded) for the server to close ``transport``; whether it did."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not transport.closed and loop.time() < deadline:
        await asyncio.sleep(0.02)
    return transport.closed


def test_connection_that_never_sends_a_byte_is_closed(impl):
    # The cheapest way to hold a connection: open it and say nothing. It is idle from the start.
    async def main():
        protocol, transport, component = await open_connection(impl, echo, keepalive_timeout=0.2,
                                                               header_timeout=60)
        await settle()
        assert not transport.closed
        assert await closed_within(transport)
        assert transport.written == b"" and component.app.requests == []

    run(main())


def test_request_line_trickling_in_gets_408(impl):
    # Slowloris before the first header field: the head timeout runs from the first byte, however
    # steadily the request line keeps arriving (the keep-alive timeout alone would never fire).
    async def main():
        protocol, transport, component = await open_connection(impl, echo, keepalive_timeout=60,
                                                               header_timeout=0.3)
        line = b"GET /" + b"a" * 200 + b" HTTP/1.1\r\n"
        for i in range(len(line)):
            if transport.closed:
                break
            protocol.data_received(line[i:i + 1])
            await asyncio.sleep(0.02)
        assert await closed_within(transport)
        [response] = parse_responses(transport.take())
        assert response.status == 408 and response.header("Connection") == "close"
        assert component.app.requests == []

    run(main())


def test_slow_upload_keeps_its_connection_after_the_response(impl):
    async def main():
        protocol, transport, component = await open_connection(impl, echo, keepalive_timeout=0.2,
                                                               header_timeout=5)
        data = get("/up", method="POST", body=b"x" * 40)
        for i in range(0, len(data), 10):  # the upload takes longer than the keep-alive timeout
            protocol.data_received(data[i:i + 10])
            await asyncio.sleep(0.05)
        [response] = await wait_for_responses(transport, 1)
        await asyncio.sleep(0.05)
        assert not transport.closed  # idle only since the response
        protocol.data_received(get("/next"))
        await wait_for_responses(transport, 2)

    run(main())


# --- closing after a refusal ------------------------------------------------------------------

class HalfClosingTransport(FakeTransport):
    """A transport that can half-close, like a TCP socket transport."""

    def __init__(self):
        super().__init__()
        self.eof_written = False

    def can_write_eof(self):
        return True

    def write_eof(self):
        self.eof_written = True

    def write(self, data):
        assert not self.eof_written, "write after write_eof"
        super().write(data)


def test_refusal_half_closes_and_discards_what_follows(impl, no_errors_logged):
    async def main():
        transport = HalfClosingTransport()
        protocol, _, component = await open_connection(
            impl, echo, transport=transport, max_body_size=10, linger_timeout=0.3)
        protocol.data_received(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n")
        await settle()
        [response] = parse_responses(transport.take())
        assert response.status == 413 and response.header("Connection") == "close"
        assert transport.eof_written and not transport.closed  # still reading
        protocol.data_received(b"x" * 1000 + SMUGGLED)  # the rest of the body, and more
        await settle()
        assert transport.written == b"" and component.app.requests == []
        assert protocol.eof_received() is None  # the client is done: asyncio closes
        # a client that never stops is cut off after linger_timeout
        for _ in range(150):
            if transport.closed:
                break
            await asyncio.sleep(0.01)
        assert transport.closed

    run(main())


def test_app_errors_and_timeouts_close_at_once(impl, caplog):
    def explode(request):
        raise RuntimeError("boom")

    async def main():
        transport = HalfClosingTransport()
        protocol, _, _ = await open_connection(impl, explode, transport=transport)
        protocol.data_received(get("/"))
        await settle()
        [response] = parse_responses(transport.take())
        assert response.status == 500 and transport.closed and not transport.eof_written

    run(main())


def test_linger_timeout_zero_closes_at_once(impl):
    async def main():
        transport = HalfClosingTransport()
        protocol, _, _ = await open_connection(impl, transport=transport, linger_timeout=0)
        protocol.data_received(b"GET / HTTP/1.1\r\n\r\n")
        await settle()
        [response] = parse_responses(transport.take())
        assert response.status == 400 and transport.closed and not transport.eof_written

    run(main())
