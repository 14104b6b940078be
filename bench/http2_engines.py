#!/usr/bin/env python
"""
HTTP/2 engines compared at the protocol layer, server side: kyoukai_fast's two engines (its
libnghttp2 binding, the compiled twin's, and its h2 engine, the pure-Python twin's) through the
interface HTTP2Protocol uses, bare h2, and, when installed, ngh2 (another libnghttp2 binding).

    python bench/http2_engines.py [--batches 400]
    python bench/http2_engines.py --profile-protocol    # where kyoukai_fast's HTTP/2 time goes

Each batch is 16 GET requests on one connection (HEADERS with END_STREAM, as h2load sends
them); the server engine takes the bytes, answers each stream with a 3-field header block and a
13-byte body, and produces its output. Only the server engine's work is timed (time.process_time
around receive + answers + data_to_send); the client bytes are made beforehand by an h2 client,
which also reads every answer so that HPACK state stays coherent. Best of 5 runs, µs/request.
"""
from __future__ import annotations

import argparse
import time

import h2.config
import h2.connection
import h2.events

HEADERS = [(":method", "GET"), (":path", "/"), (":scheme", "https"), (":authority", "127.0.0.1"),
           ("user-agent", "h2load nghttp2/1.52.0")]
RESPONSE = [(b":status", b"200"), (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"13")]
BODY = b"Hello, world!"


def client():
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    return conn


def h2_server():
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                header_encoding=None))
    conn.initiate_connection()

    def serve(data):
        for event in conn.receive_data(data):
            if type(event) is h2.events.RequestReceived:
                conn.send_headers(event.stream_id, RESPONSE)
                conn.send_data(event.stream_id, BODY, end_stream=True)
        return conn.data_to_send()
    return conn.data_to_send(), serve


def ngh2_server():
    import ngh2

    conn = ngh2.Connection(ngh2.Role.SERVER)
    conn.initiate_connection()
    received = ngh2.RequestReceived

    def serve(data):
        conn.receive_data(data)
        for event in conn.events():
            if type(event) is received:
                conn.send_response(event.stream_id, RESPONSE)
                conn.send_data(event.stream_id, BODY, end_stream=True)
        return conn.data_to_send()
    return conn.data_to_send(), serve


def engine_server(engine_class):
    """kyoukai_fast's engine interface (``_http2_events``), with HTTP2Protocol's settings."""
    from kyoukai_fast._http2_events import REQUEST

    engine = engine_class(100, 256 * 1024, 1024 * 1024, 64 * 1024)
    engine.start()

    def serve(data):
        for event in engine.receive(data):
            if event[0] == REQUEST:
                engine.send_headers(event[1], RESPONSE, False)
                engine.send_data(event[1], BODY, True)
        return engine.data_to_send()
    return engine.data_to_send(), serve


def measure(make_server, batches: int) -> float:
    best = float("inf")
    for _ in range(5):
        peer = client()
        first, serve = make_server()
        peer.receive_data(first)
        serve(peer.data_to_send())
        peer.receive_data(b"")
        spent = 0.0
        for _ in range(batches):
            for _ in range(16):
                peer.send_headers(peer.get_next_available_stream_id(), HEADERS, end_stream=True)
            data = peer.data_to_send()
            started = time.process_time()
            out = serve(data)
            spent += time.process_time() - started
            for event in peer.receive_data(out):
                if isinstance(event, h2.events.DataReceived):
                    peer.acknowledge_received_data(event.flow_controlled_length,
                                                   event.stream_id)
            # the client's WINDOW_UPDATEs go with the next batch (not timed alone)
            pending = peer.data_to_send()
            if pending:
                serve(pending)
        best = min(best, spent / (batches * 16) * 1e6)
    return best


def profile_protocol(batches: int) -> None:
    """cProfile of ``HTTP2Protocol`` itself (in process, a minimal app), self time by package."""
    import asyncio
    import cProfile
    import os
    import pstats
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    sys.path.insert(0, os.path.join(os.path.dirname(here), "src"))
    import _support
    import kyoukai_fast.compat

    kyoukai_fast.compat.apply()
    from kyoukai_fast._http2 import HTTP2Protocol

    class Transport:
        def __init__(self):
            self.out = bytearray()

        def get_extra_info(self, name, default=None):
            return ("127.0.0.1", 5000) if name == "peername" else default

        def set_write_buffer_limits(self, high=None, low=None):
            pass

        def write(self, data):
            self.out += data

        def is_closing(self):
            return False

        def take(self):
            data = bytes(self.out)
            self.out.clear()
            return data

    async def run():
        component = _support.bench_component(_support.HelloApp(asyncio.get_running_loop()))
        transport = Transport()
        protocol = HTTP2Protocol(component, None, 8080, "https")
        protocol.connection_made(transport)
        peer = client()
        protocol.data_received(peer.data_to_send())
        peer.receive_data(transport.take())
        profiler = cProfile.Profile()
        for _ in range(batches):
            for _ in range(16):
                peer.send_headers(peer.get_next_available_stream_id(), HEADERS, end_stream=True)
            data = peer.data_to_send()
            profiler.enable()
            protocol.data_received(data)
            profiler.disable()
            for event in peer.receive_data(transport.take()):
                if isinstance(event, h2.events.DataReceived):
                    peer.acknowledge_received_data(event.flow_controlled_length,
                                                   event.stream_id)
            pending = peer.data_to_send()
            if pending:
                protocol.data_received(pending)
        stats = pstats.Stats(profiler)
        shares: dict = {}
        for (filename, _, function), (_, _, self_time, _, _) in stats.stats.items():
            if "_http2_nghttp2" in function or "_http2_nghttp2" in filename:
                key = "nghttp2 engine (kyoukai_fast's binding and libnghttp2)"
            elif "/h2/" in filename or "hpack" in filename or "hyperframe" in filename:
                key = "h2 engine (h2, hpack, hyperframe)"
            elif "werkzeug" in filename:
                key = "werkzeug (request and response objects)"
            elif "kyoukai_fast" in filename:
                key = "kyoukai_fast (_http2 and the shared request path)"
            elif "_support" in filename:
                key = "the minimal app"
            else:
                key = "other (stdlib, builtins)"
            shares[key] = shares.get(key, 0.0) + self_time
        for key, value in sorted(shares.items(), key=lambda item: -item[1]):
            print(f"{value / stats.total_tt * 100:5.1f}%  {key}")

    asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--profile-protocol", action="store_true")
    args = parser.parse_args()
    if args.profile_protocol:
        profile_protocol(args.batches)
        return
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                    "src"))
    from kyoukai_fast._http2_h2 import H2Engine

    results = {}
    try:
        from kyoukai_fast._http2_nghttp2 import LIBRARY_VERSION, Nghttp2Engine
    except ImportError:
        print("kyoukai_fast's nghttp2 engine is not built (libnghttp2-dev, then make build)")
    else:
        print(f"libnghttp2 {LIBRARY_VERSION}")
        results["kyoukai_fast nghttp2 engine"] = measure(
            lambda: engine_server(Nghttp2Engine), args.batches)
    results["kyoukai_fast h2 engine"] = measure(lambda: engine_server(H2Engine), args.batches)
    results["h2 (bare)"] = measure(h2_server, args.batches)
    try:
        results["ngh2 (bare)"] = measure(ngh2_server, args.batches)
    except ImportError:
        print("ngh2 not installed (pip install ngh2): its row is left out")
    for name, value in results.items():
        print(f"{name:28} {value:7.2f} µs/request (server engine only)")
    ours = results.get("kyoukai_fast nghttp2 engine")
    if ours:
        print(f"kyoukai_fast h2 engine / nghttp2 engine: "
              f"{results['kyoukai_fast h2 engine'] / ours:.1f}×")


if __name__ == "__main__":
    main()
