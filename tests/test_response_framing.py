"""
What the server writes, whatever the app returns (RFC 9110 / 9112): a ``Date`` on every
response, no body for 204 / 304 / HEAD, a streamed body held to its ``Content-Length``, header
names that are tokens, and framing and ``Connection`` that are the server's, not the app's.
"""
from __future__ import annotations

import asyncio
import email.utils

import pytest
from werkzeug.wrappers import Response

from fakes import (
    SMUGGLED,
    open_connection,
    refused,
    run,
    served,
    settle,
    wait_for_responses,
)
from wire import get, parse_responses


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
