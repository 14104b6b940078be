#!/usr/bin/env python
"""
HTTP/2 engines compared at the protocol layer, server side: h2 (what kyoukai_fast uses) and,
when installed, ngh2 (libnghttp2).

    python bench/http2_engines.py [--batches 400]

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=400)
    args = parser.parse_args()
    results = {"h2": measure(h2_server, args.batches)}
    try:
        results["ngh2"] = measure(ngh2_server, args.batches)
    except ImportError:
        print("ngh2 not installed: pip install ngh2")
    for name, value in results.items():
        print(f"{name:5} {value:7.2f} µs/request (server engine only)")
    if "ngh2" in results:
        print(f"h2 / ngh2: {results['h2'] / results['ngh2']:.1f}×")


if __name__ == "__main__":
    main()
