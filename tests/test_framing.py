"""
Response framing (RFC 9112 6.3) for every shape of body an app can give, on both
implementations: a known length goes out with ``Content-Length``, anything else chunked on
HTTP/1.1 and close-delimited on HTTP/1.0; ``HEAD``, 204 and 304 have no body. Every response is
read by a strict HTTP/1.1 client (h11), and the next request on the connection gets its own
response.

An app's ``Content-Length`` that disagrees with its body: a buffered body is answered with 500
(the server knows before sending anything); a streamed one is cut at the declared length, and
one that ends short closes the connection (the client sees a truncated response, never the next
response read as body).
"""
from __future__ import annotations

import asyncio

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.wrappers import Response
from werkzeug.wsgi import ClosingIterator

from fakes import open_connection
from kyoukai_fast import StreamingBody

NEXT = b"GET /next HTTP/1.1\r\nHost: example.com\r\n\r\n"


class LazyChunks(list):
    """A list whose items are produced while it is iterated, as a streamed WSGI body can be."""

    def __init__(self, chunks):
        super().__init__()
        self.chunks = chunks

    def __iter__(self):
        yield from self.chunks


def middleware(inner):
    """A generator wrapping another, as WSGI middleware does."""
    yield from inner


BODIES = {
    "bytes": lambda chunks: encoded(chunks),
    "list": list,
    "tuple": tuple,
    "lazy list": LazyChunks,
    "generator": lambda chunks: (c for c in chunks),
    "iterator": iter,
    "middleware": lambda chunks: middleware(c for c in chunks),
    "closing iterator": lambda chunks: ClosingIterator(c for c in chunks),
    "streaming": StreamingBody,
}


def build(shape):
    body = BODIES[shape["body"]](list(shape["chunks"]))
    if shape["replaced"]:
        response = Response(b"initial")  # sets Content-Length: 7
        response.response = body if not isinstance(body, bytes) else [body]
    else:
        response = Response(body, status=shape["status"])
    response.status_code = shape["status"]
    response.automatically_set_content_length = shape["auto_length"]
    response.direct_passthrough = shape["passthrough"]
    if shape["app_length"] is not None:
        response.headers["Content-Length"] = str(shape["app_length"])
    return response


chunk = st.binary(max_size=40) | st.text(alphabet="abcé€", max_size=10)
shapes = st.fixed_dictionaries({
    "body": st.sampled_from(sorted(BODIES)),
    "chunks": st.lists(chunk, max_size=4),
    "status": st.sampled_from([200, 201, 204, 304, 404, 500]),
    "auto_length": st.booleans(),
    "passthrough": st.booleans(),
    "replaced": st.booleans(),
    "length_delta": st.sampled_from([None, 0, 0, -1, 1, 5]),
    "method": st.sampled_from(["GET", "GET", "HEAD", "POST"]),
    "version": st.sampled_from(["1.1", "1.1", "1.0"]),
})


def encoded(chunks) -> bytes:
    return b"".join(c.encode() if isinstance(c, str) else c for c in chunks)


def exchange(impl, shape):
    """Serve the shape's response, then ``GET /next``, on one connection: the raw bytes."""
    async def main():
        protocol, transport, _ = await open_connection(
            impl, lambda request: Response(b"next") if request.path == "/next" else build(shape))
        head = (f"{shape['method']} /shape HTTP/{shape['version']}\r\nHost: example.com\r\n"
                + ("Content-Length: 0\r\n" if shape["method"] == "POST" else "") + "\r\n")
        protocol.data_received(head.encode() + NEXT)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while not transport.closed and b"\r\n\r\nnext" not in transport.written:
            assert loop.time() < deadline, bytes(transport.written)
            await asyncio.sleep(0.001 if transport.written else 0)
        for _ in range(3):  # anything written after (there must be nothing)
            await asyncio.sleep(0)
        return bytes(transport.written), transport.closed

    return asyncio.run(main())


def strict_read(data: bytes, closed: bool, method: str, version: str):  # noqa: C901
    """The responses h11 reads from ``data``: [(status, headers, body)], and the error if the
    data ended inside a response (only at the end: never a malformed byte)."""
    client = h11.Connection(h11.CLIENT)
    # h11 sends only HTTP/1.1; for the HTTP/1.0 request it is told the connection closes after.
    client.send(h11.Request(method=method, target="/shape",
                            headers=[("Host", "example.com")]
                            + ([("Content-Length", "0")] if method == "POST" else [])
                            + ([("Connection", "close")] if version == "1.0" else [])))
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    if closed:
        client.receive_data(b"")
    responses, current = [], None
    while True:
        try:
            event = client.next_event()
        except h11.RemoteProtocolError as exc:
            return responses, current, exc
        if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
            return responses, current, None
        if event is h11.PAUSED:
            if client.our_state is h11.DONE and client.their_state is h11.DONE:
                client.start_next_cycle()
                client.send(h11.Request(method="GET", target="/next",
                                        headers=[("Host", "example.com")]))
                client.send(h11.EndOfMessage())
                continue
            return responses, current, None
        if isinstance(event, h11.Response):
            current = [event.status_code, dict(event.headers), b""]
        elif isinstance(event, h11.Data):
            current[2] += event.data
        elif isinstance(event, h11.EndOfMessage):
            responses.append(tuple(current))
            current = None


def check(impl, shape):
    data, closed = exchange(impl, shape)
    responses, partial, error = strict_read(data, closed, shape["method"], shape["version"])
    body = encoded(shape["chunks"])
    declared = shape["app_length"]
    if declared is None and shape["replaced"]:
        declared = len(b"initial")
    wrong = declared is not None and declared != len(body)
    no_body = shape["method"] == "HEAD" or shape["status"] in (204, 304)
    if error is not None:
        # Only a streamed body shorter than its declared length may end the data early.
        assert wrong and closed and not responses and partial is not None, (error, data)
        assert body.startswith(partial[2])
        return
    assert responses, data
    status, headers, got = responses[0]
    if status == 500 and (b"<title>500 Internal Server Error</title>" in got
                          or wrong and shape["status"] != 500):
        assert wrong, data  # a buffered body that disagrees with its Content-Length
        assert closed and len(responses) == 1
        return
    assert status == shape["status"]
    if no_body:
        assert got == b""
    elif wrong:
        assert body.startswith(got) and len(got) == declared
    else:
        assert got == body
    framing = headers.get(b"transfer-encoding"), headers.get(b"content-length")
    if not no_body and framing == (None, None):
        assert shape["version"] == "1.0" and closed  # close-delimited
    if len(responses) > 1:
        assert responses[1][0] == 200 and responses[1][2] == b"next"
        assert len(responses) == 2
    elif not closed:
        raise AssertionError(f"the next request got no response: {data!r}")
    if shape["version"] == "1.1" and not wrong:
        assert len(responses) == 2, data  # kept alive, and the next request was answered


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                             HealthCheck.function_scoped_fixture])
@given(shape=shapes)
def test_every_response_shape_is_framed_for_a_strict_client(impl, shape):
    delta = shape.pop("length_delta")
    length = len(encoded(shape["chunks"]))
    shape["app_length"] = None if delta is None else max(0, length + delta)
    check(impl, shape)


@pytest.mark.parametrize("version", ["1.1", "1.0"])
@pytest.mark.parametrize("body", ["lazy list", "list", "tuple", "generator"])
def test_a_body_without_a_length_is_streamed(impl, version, body):
    # The case: a list subclass yielding its chunks lazily, automatically_set_content_
    # length off (a WSGI-style streamed body as it reaches the backend through Kyoukai).
    shape = dict(body=body, chunks=[b"abc", b"", b"defg"], status=200, auto_length=False,
                 passthrough=False, replaced=False, app_length=None, method="GET",
                 version=version)
    data, closed = exchange(impl, shape)
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    assert b"content-length" not in head
    if version == "1.1":
        assert b"transfer-encoding: chunked" in head and not closed
    else:
        assert b"transfer-encoding" not in head and closed
    check(impl, shape)


@pytest.mark.parametrize("declared", [3, 100])
def test_a_buffered_body_disagreeing_with_its_content_length_is_500(impl, declared, caplog):
    shape = dict(body="list", chunks=[b"0123456789"], status=200, auto_length=True,
                 passthrough=False, replaced=False, app_length=declared, method="GET",
                 version="1.1")
    data, closed = exchange(impl, shape)
    assert data.startswith(b"HTTP/1.1 500 ") and closed
    assert f"Content-Length {declared} does not match its body of 10 bytes" in caplog.text
