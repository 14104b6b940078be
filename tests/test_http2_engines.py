"""
The two HTTP/2 engines against each other, through the interface ``HTTP2Protocol`` uses
(``_http2_events``): the same client bytes, cut anywhere, give the same requests, bodies,
trailers, ends and resets on libnghttp2's engine as on h2's (the reference the protocol was
first built on), and the same answers reach the client. In process, no sockets.
"""
from __future__ import annotations

import importlib
import string

import h2.config
import h2.connection
import h2.events
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakes import EXPECT_COMPILED
from kyoukai_fast._http2_events import (
    CLOSED,
    CONTROL,
    DATA,
    EMPTY_DATA,
    ENDED,
    REQUEST,
    RESET,
    TRAILERS,
)
from kyoukai_fast._http2_h2 import H2Engine


def nghttp2_engine():
    try:
        return importlib.import_module("kyoukai_fast._http2_nghttp2").Nghttp2Engine
    except ImportError as exc:
        if EXPECT_COMPILED:
            pytest.fail(f"the nghttp2 HTTP/2 engine was expected but did not load: {exc}")
        pytest.skip("the nghttp2 HTTP/2 engine is not built")


TOKEN = string.ascii_letters + string.digits + "-._~"

# Field values that are well-formed (RFC 9113 8.2.1: no whitespace at either end).
VALUES = st.builds(lambda first, middle, last: first + middle + last,
                   st.text(TOKEN, min_size=1, max_size=8), st.text(TOKEN + " ;=,", max_size=30),
                   st.text(TOKEN, min_size=1, max_size=8))

requests = st.lists(st.fixed_dictionaries({
    "method": st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    "path": st.text(TOKEN + "/?=&%", max_size=30).map(lambda p: "/" + p),
    "headers": st.lists(st.tuples(st.sampled_from(["x-a", "x-b", "cookie", "content-type",
                                                   "accept"]),
                                  VALUES), max_size=5),
    # bodies within the client's 65,535-byte view of the connection window, all together
    "body": st.binary(max_size=9000),
    "trailers": st.booleans(),
    "reset": st.booleans(),
}), min_size=1, max_size=6)


def client_bytes(conversation):
    """The client connection and the bytes it sends for ``conversation``."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                  header_encoding=None))
    client.initiate_connection()
    for request in conversation:
        stream = client.get_next_available_stream_id()
        body, trailers = request["body"], request["trailers"]
        fields = [(":method", request["method"]), (":path", request["path"]),
                  (":scheme", "https"), (":authority", "127.0.0.1"), *request["headers"]]
        client.send_headers(stream, fields, end_stream=not body and not trailers)
        if body:
            for start in range(0, len(body), 16384):
                piece = body[start:start + 16384]
                last = start + 16384 >= len(body) and not trailers
                client.send_data(stream, piece, end_stream=last)
        if trailers:
            client.send_headers(stream, [("x-trailer", "t")], end_stream=True)
        if request["reset"]:
            client.reset_stream(stream, 8)
        client.ping(b"12345678")
    return client, client.data_to_send()


def served(engine_class, data: bytes, cuts) -> list:
    """The events of ``data`` fed in pieces; DATA of one stream merged, CLOSED dropped (h2
    does not tell it), credit returned as it comes."""
    engine = engine_class(100, 256 * 1024, 1024 * 1024, 64 * 1024)
    engine.start()
    engine.data_to_send()
    events = []
    start = 0
    for cut in sorted(set(cuts)) + [len(data)]:
        for event in engine.receive(data[start:cut]):
            if event[0] == DATA:
                engine.acknowledge(event[1], event[3])
                if events and events[-1][0] == DATA and events[-1][1] == event[1]:
                    last = events.pop()
                    event = (DATA, event[1], last[2] + event[2], last[3] + event[3])
            if event[0] != CLOSED:
                events.append(event)
        start = cut
    return events


def answers(engine_class, conversation, events) -> dict:
    """What a client reads when the engine answers every request still open."""
    engine = engine_class(100, 256 * 1024, 1024 * 1024, 64 * 1024)
    engine.start()
    client, data = client_bytes(conversation)
    engine.receive(data)
    reset = {e[1] for e in events if e[0] == RESET}
    for event in events:
        if event[0] == ENDED and event[1] not in reset:
            stream = event[1]
            body = b"answer %d " % stream * 50
            assert engine.send_headers(stream, [(b":status", b"200"),
                                                (b"x-stream", b"%d" % stream)], False)
            for begin in range(0, len(body), engine.max_frame_size):
                piece = body[begin:begin + engine.max_frame_size]
                assert len(piece) <= engine.window(stream)
                engine.send_data(stream, piece, begin + len(piece) >= len(body))
    seen = {}
    for event in client.receive_data(engine.data_to_send()):
        if isinstance(event, h2.events.ResponseReceived):
            seen[event.stream_id] = [event.headers, b""]
        elif isinstance(event, h2.events.DataReceived):
            seen[event.stream_id][1] += event.data
    return seen


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversation=requests, cuts=st.lists(st.integers(0, 70000), max_size=6))
def test_nghttp2_engine_sees_what_h2_sees(conversation, cuts):
    nghttp2 = nghttp2_engine()
    _, data = client_bytes(conversation)
    cuts = [cut for cut in cuts if cut < len(data)]
    expected = served(H2Engine, data, cuts)
    got = served(nghttp2, data, cuts)
    # h2 reports the client's SETTINGS and every PING as control frames, as nghttp2 does
    assert got == expected
    assert [e[0] for e in expected].count(REQUEST) == len(conversation)
    assert not [e for e in expected if e[0] == EMPTY_DATA]
    assert [e[0] for e in expected].count(CONTROL) == 1 + len(conversation)
    assert answers(nghttp2, conversation, got) == answers(H2Engine, conversation, expected)


@pytest.mark.parametrize("engine_name", ["nghttp2", "h2"])
def test_trailers_and_resets_are_reported(engine_name):
    engine_class = nghttp2_engine() if engine_name == "nghttp2" else H2Engine
    _, data = client_bytes([
        {"method": "POST", "path": "/a", "headers": [], "body": b"x" * 20000, "trailers": True,
         "reset": False},
        {"method": "GET", "path": "/b", "headers": [], "body": b"", "trailers": False,
         "reset": True}])
    events = served(engine_class, data, [])
    kinds = [(e[0], e[1]) for e in events if e[0] != CONTROL]
    assert kinds == [(REQUEST, 1), (DATA, 1), (TRAILERS, 1), (ENDED, 1), (REQUEST, 3),
                     (ENDED, 3), (RESET, 3)]
    assert events[[e[:2] for e in events].index((DATA, 1))][2:] == (b"x" * 20000, 20000)
    assert (TRAILERS, 1, [(b"x-trailer", b"t")]) in events
    assert (RESET, 3, 8) in events
