"""
What an HTTP/2 engine and ``HTTP2Protocol`` say to each other; neither engine owns it.

An engine is the HTTP/2 state machine of one server connection (frames, HPACK, stream states,
flow-control windows, SETTINGS): ``_http2_h2.H2Engine`` on the pure-Python ``h2`` package,
``_http2_nghttp2.Nghttp2Engine`` on libnghttp2. The protocol above it does everything else
(requests, limits, timeouts, shutdown, attack budgets) once, for both. Its methods::

    start()                              the server's connection preface (SETTINGS, window)
    upgrade(settings: bytes) -> None     the same, for an ``Upgrade: h2c`` request's settings
                                         (base64url); raises ValueError when they are invalid
    receive(data) -> list                the events of ``data`` (tuples, below); raises
                                         EngineError on a connection error
    data_to_send() -> bytes              the frames to write
    send_headers(stream_id, headers, end_stream) -> bool   headers: (name, value) bytes
                                         pairs; False when the stream is closed
    send_data(stream_id, data, end_stream)         within window(stream_id)
    window(stream_id) -> int             bytes stream_id may send now (stream and connection)
    max_frame_size -> int                the largest DATA payload to hand to send_data
    acknowledge(stream_id, size)         credit for ``size`` bytes of body back to the client
    reset(stream_id, code)               RST_STREAM (nothing when the stream is closed)
    goaway(last_stream_id)               a graceful GOAWAY NO_ERROR: no streams after it
    close(code)                          the final GOAWAY: nothing is read after it
    last_stream_id -> int                the highest stream id the client opened

Events are tuples, their kind first::

    (REQUEST, stream_id, headers, ended)  a request's header block (pseudo-headers first)
    (DATA, stream_id, data, size)         body bytes; ``size`` is their flow-controlled length
    (EMPTY_DATA, stream_id)               a DATA frame with nothing in it and no END_STREAM
    (ENDED, stream_id)                    the client ended its side of the stream
    (TRAILERS, stream_id, headers)        a trailer block (ENDED follows)
    (RESET, stream_id, code)              the client reset the stream (RST_STREAM)
    (CLOSED, stream_id, code)             the engine closed the stream on its own (an invalid
                                          stream, say): its handler is not wanted any more
    (CONTROL,)                            a PING, SETTINGS or PRIORITY frame
    (GONE, code)                          the client sent GOAWAY
"""

__all__ = ("REQUEST", "DATA", "EMPTY_DATA", "ENDED", "TRAILERS", "RESET", "CLOSED", "CONTROL",
           "GONE", "NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "REFUSED_STREAM", "CANCEL",
           "ENHANCE_YOUR_CALM", "EngineError")

REQUEST = 1
DATA = 2
EMPTY_DATA = 3
ENDED = 4
TRAILERS = 5
RESET = 6
CLOSED = 7
CONTROL = 8
GONE = 9

# Error codes (RFC 9113 7).
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
REFUSED_STREAM = 0x7
CANCEL = 0x8
ENHANCE_YOUR_CALM = 0xB


class EngineError(Exception):
    """A connection error: the connection ends with GOAWAY ``code``."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
